"""A watchdog process that cleans up after a sweeper that was killed (``kill -9``, OOM).

The sweeper tells it, line by line over a pipe, what it started (server process groups,
containers, the python backend's shared-memory prefixes and folders, the sweeper's own temporary
folders) and what it has cleaned up already. When the pipe closes, the sweeper is gone; whatever
is still registered is killed or removed, and the watchdog exits. A normal exit leaves nothing
registered. The watchdog runs in a session of its own, so the Ctrl-C that interrupts the sweeper
does not reach it.

    python -m sweeper.launchers._watchdog     (started by ``watchdog()``; reads stdin)
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

SHM_DIR = Path("/dev/shm")


class Watchdog:
    """The parent's side: register and release what must not outlive this process."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "sweeper.launchers._watchdog"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
        self._lock = threading.Lock()

    def _send(self, line: str) -> None:
        with self._lock:
            try:
                self._process.stdin.write(line + "\n")
                self._process.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # the watchdog is gone (killed by hand): cleanup is then the sweeper's alone

    def add(self, kind: str, value: str) -> None:
        """Register a ``group`` (pid), ``shm`` (file prefix), ``dir`` (a folder, removed if empty),
        ``tree`` (a folder, removed with its contents) or ``container`` (id and engine URL)."""
        self._send(f"+ {kind} {value}")

    def remove(self, kind: str, value: str) -> None:
        """Release something that was cleaned up normally."""
        self._send(f"- {kind} {value}")

    @property
    def pid(self) -> int:
        return self._process.pid


_instance: Watchdog | None = None
_instance_lock = threading.Lock()


def watchdog() -> Watchdog:
    """This process's watchdog, started on first use."""
    global _instance
    with _instance_lock:
        if _instance is None or _instance._process.poll() is not None:
            _instance = Watchdog()
        return _instance


def remove_shm(prefix: str) -> int:
    """Remove the shared-memory files whose names start with ``prefix``; how many."""
    removed = 0
    for path in glob.glob(str(SHM_DIR / glob.escape(prefix)) + "*"):
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def remove_empty_dir(path: str) -> None:
    """Remove a folder if it is empty: one with something in it may be in use by another server
    (the python backend extracts execution environments into its folder)."""
    try:
        os.rmdir(path)
    except OSError:
        pass


def _clean(kind: str, value: str) -> None:
    if kind == "group":
        try:
            os.killpg(int(value), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError):
            pass
    elif kind == "shm":
        remove_shm(value)
    elif kind == "dir":
        remove_empty_dir(value)
    elif kind == "tree":
        shutil.rmtree(value, ignore_errors=True)
    elif kind == "container":
        container_id, _, base_url = value.partition(" ")
        try:
            import docker

            client = docker.DockerClient(base_url=base_url) if base_url != "-" else docker.from_env()
            client.containers.get(container_id).remove(force=True)
        except Exception:  # gone already, or no engine: nothing more can be done here
            pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    registered: dict[tuple[str, str], None] = {}
    for line in sys.stdin:
        sign, _, rest = line.rstrip("\n").partition(" ")
        kind, _, value = rest.partition(" ")
        if sign == "+":
            registered[(kind, value)] = None
        elif sign == "-":
            registered.pop((kind, value), None)
    # Processes first (they hold the shared memory), then files, then containers.
    order = {"group": 0, "shm": 1, "dir": 1, "tree": 1, "container": 2}
    for kind, value in sorted(registered, key=lambda item: order.get(item[0], 3)):
        _clean(kind, value)


if __name__ == "__main__":
    main()
