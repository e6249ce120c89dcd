"""The machine a trial ran on: its fingerprint (CPU model and count, GPUs and driver, OS), and
whether two fingerprints make figures comparable. A leaf: every stage that records or checks a
machine reads it from here.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from typing import Any

FINGERPRINT_ENV = "SWEEPER_FINGERPRINT"
"""A JSON object whose keys replace this machine's fingerprint (tests fake another machine)."""

COMPARED = ("cpu", "cpus", "machine", "gpus")
"""The fingerprint's keys that make figures comparable: a worker that differs in one does not
join a study unless told it may (the OS and Python versions are recorded, not compared)."""


def machine_fingerprint() -> dict[str, Any]:
    """The hardware and system a trial ran on (CPU model and count, GPUs and driver, OS)."""
    found = {**_hardware()}
    fake = os.environ.get(FINGERPRINT_ENV)
    if fake:
        found.update(json.loads(fake))
    return found


@functools.cache
def _hardware() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "gpus": _gpus(),
    }


def fingerprint_difference(stored: dict[str, Any], here: dict[str, Any]) -> str | None:
    """How two fingerprints differ where it matters (``COMPARED``, and the server and load
    generator), or None."""
    keys = [*COMPARED, "server", "generator"]
    different = [k for k in keys if k in stored and k in here and stored[k] != here[k]]
    if not different:
        return None
    return "; ".join(f"{k}: {stored[k]} (the study) vs {here[k]} (here)" for k in different)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpus() -> list[str]:
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()] if listed.returncode == 0 else []


def available_memory_mb() -> float | None:
    """The memory the kernel says can be had without swapping (MemAvailable), in MiB; None
    where /proc/meminfo cannot be read."""
    return _proc_mib("/proc/meminfo", "MemAvailable:")


def resident_mb(pid: int) -> float | None:
    """A process's resident memory (VmRSS) in MiB; None once it has ended."""
    return _proc_mib(f"/proc/{pid}/status", "VmRSS:")


def _proc_mib(path: str, key: str) -> float | None:
    """The ``key: N kB`` line of a /proc file, in MiB; None where the file or the line is missing."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
