"""The launcher interface: start one Triton server for one trial, stop it without leftovers."""

from __future__ import annotations

import abc
import dataclasses
import json
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from sweeper.errors import TrialError

_POLL_S = 0.1


@dataclasses.dataclass(frozen=True)
class Endpoints:
    """host:port of the three Triton services."""

    http: str
    grpc: str
    metrics: str


class Server(abc.ABC):
    """A running, ready Triton server. ``stop`` is idempotent; leaving the ``with`` calls it."""

    endpoints: Endpoints

    @abc.abstractmethod
    def alive(self) -> bool: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Launcher(abc.ABC):
    """How a trial gets its Triton: a local process (``local``) or a container (``docker``)."""

    @abc.abstractmethod
    def preflight(self) -> None:
        """Raise ``SweeperError`` with the fix when no server can be started at all."""

    @property
    @abc.abstractmethod
    def has_gpu(self) -> bool: ...

    @property
    @abc.abstractmethod
    def has_onnxruntime_backend(self) -> bool: ...

    @abc.abstractmethod
    def start(self, repository: Path, model_name: str, log_path: Path, labels: dict[str, str]) -> Server:
        """Start a server on ``repository`` and return it once ``model_name`` is ready.

        Raises ``TrialError`` with the server log's relevant lines when the server dies or is not
        ready in time; nothing is left running in that case.
        """

    def remove_leftovers(self, labels: dict[str, str]) -> int:
        """Remove servers that a crashed earlier run with these labels left; returns how many."""
        return 0


def free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def connect_address(address: str) -> str:
    """Where a client connects to a server bound to ``address`` (0.0.0.0 means any)."""
    return "127.0.0.1" if address in ("0.0.0.0", "") else address


def wait_until_ready(
    endpoints: Endpoints,
    model_name: str,
    *,
    alive: Callable[[], bool],
    read_log: Callable[[], str],
    timeout_s: float,
) -> None:
    """Poll readiness; connection errors mean "not yet", a dead server means "never"."""
    deadline = time.monotonic() + timeout_s
    url = f"http://{endpoints.http}/v2/models/{model_name}/ready"
    while True:
        if not alive():
            raise TrialError(f"the server exited before it was ready: {failure_reason(read_log())}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TrialError(f"the server was not ready after {timeout_s:g} s: {failure_reason(read_log())}")
        time.sleep(_POLL_S)


# Triton's glog lines: E = error, W = warning; "E1127 16:05:01.123 ...] message".
_ERROR_LINE = re.compile(r"^E\d{4} [\d:.]+\s+\d+\s+\S+\]\s*(.*)$")


def failure_reason(log: str, limit: int = 5) -> str:
    """The server's error lines (or the log's tail when it has none), on one line."""
    lines = log.splitlines()
    errors = [m.group(1) for m in map(_ERROR_LINE.match, lines) if m]
    picked = errors[-limit:] if errors else [line for line in lines if line.strip()][-limit:]
    return " | ".join(line.strip() for line in picked) or "(the server log is empty)"


def server_metadata(endpoints: Endpoints) -> dict:
    """Triton's name, version and extensions (GET /v2)."""
    with urllib.request.urlopen(f"http://{endpoints.http}/v2", timeout=10) as response:
        return json.load(response)


def server_statistics(endpoints: Endpoints, model_name: str) -> dict:
    """The model's cumulative statistics from Triton's HTTP statistics extension."""
    url = f"http://{endpoints.http}/v2/models/{model_name}/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["model_stats"][0]
