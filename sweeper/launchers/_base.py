"""The launcher interface: start a Triton server, load models into it, stop it without leftovers."""

from __future__ import annotations

import abc
import dataclasses
import json
import random
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sweeper.errors import TrialError

if TYPE_CHECKING:
    from sweeper.spec import ServerSpec

_POLL_S = 0.05
_LOG_LINES = 5
# Labels of what a study starts (containers carry them; a reload server's trial is "reload").
LABEL_STUDY = "triton-sweeper.study"
LABEL_TRIAL = "triton-sweeper.trial"


@dataclasses.dataclass(frozen=True)
class Endpoints:
    """host:port of the three Triton services."""

    http: str
    grpc: str
    metrics: str


class Server(abc.ABC):
    """A running, ready Triton server. ``stop`` is idempotent; leaving the ``with`` calls it.

    A server started for a model (``Launcher.start(..., model_name=M)``) serves it as loaded;
    one started without a model (explicit model control) gets models through ``load``."""

    endpoints: Endpoints

    @abc.abstractmethod
    def alive(self) -> bool:
        """Whether the server process (or container) still runs."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the server and everything it started; nothing is left behind."""

    @abc.abstractmethod
    def exit_reason(self) -> str | None:
        """How the server ended (``exited with status 1``, ``killed by signal 9 (SIGKILL)``), or
        None while it runs."""

    @abc.abstractmethod
    def log_text(self) -> str:
        """The server's log so far."""

    @abc.abstractmethod
    def memory_mb(self) -> float | None:
        """Resident memory of the server and everything it started (python-backend stubs), in
        MiB, now; None when it cannot be read."""

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def failure(self, what: str, log_from: int = 0) -> TrialError:
        """A TrialError for ``what`` went wrong, with how the server ended (if it did) and the
        error lines its log has after offset ``log_from``."""
        parts = [what]
        reason = self.exit_reason()
        if reason is not None:
            parts.append(f"the server {reason}")
        log = self.log_text()[log_from:]
        # A server that ended without an error line: its last words are the best reason there is.
        errors = error_lines(log) or (last_line(log) if reason is not None else "")
        if errors:
            parts.append(errors)
        return TrialError("; ".join(parts))

    def load(self, model_name: str, timeout_s: float) -> None:
        """Load (or reload, with its new config and files) a model: Triton's repository API."""
        url = f"http://{self.endpoints.http}/v2/repository/models/{model_name}/load"
        log_from = len(self.log_text())
        try:
            _post(url, timeout_s)
        except urllib.error.HTTPError as exc:
            message = _error_message(exc)
            raise self.failure(f"loading the model failed: {message}", log_from) from None
        except (urllib.error.URLError, OSError) as exc:
            raise self.failure(f"loading the model failed: {exc}", log_from) from None

    def unload(self, model_name: str, timeout_s: float) -> None:
        """Unload a model and wait until Triton no longer lists it as ready."""
        _post(f"http://{self.endpoints.http}/v2/repository/models/{model_name}/unload", timeout_s)


def _post(url: str, timeout_s: float) -> None:
    request = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s):
        pass


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read()).get("error", str(exc))
    except (ValueError, OSError):
        return str(exc)


class Launcher(abc.ABC):
    """How a sweep gets its Triton: a local process (``local``) or a container (``docker``)."""

    name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_spec(cls, server: ServerSpec) -> Launcher:
        """The launcher a spec's ``server:`` block describes."""

    @abc.abstractmethod
    def preflight(self) -> None:
        """Raise ``SweeperError`` with the fix when no server can be started at all."""

    @property
    @abc.abstractmethod
    def has_gpu(self) -> bool:
        """Whether servers get a GPU (instances KIND_GPU, INT8 calibrated for it)."""

    @property
    @abc.abstractmethod
    def backends(self) -> frozenset[str]:
        """The Triton backends the server has (``python``, ``onnxruntime``, ...)."""

    @abc.abstractmethod
    def start(
        self,
        repository: Path,
        log_path: Path,
        labels: dict[str, str],
        *,
        model_name: str | None,
        complete_config: bool = False,
        options: Sequence[str] = (),
    ) -> Server:
        """Start a server on ``repository`` and return it once ready.

        With ``model_name`` the repository's models load at start and the server is ready when
        that model is; with None the server starts empty (explicit model control) for ``load``.
        ``complete_config``: the configs declare everything, Triton need not auto-complete them.
        ``options``: tritonserver arguments of the trial (``--buffer-manager-thread-count=4``).
        Raises ``TrialError`` with how the server ended and its log's error lines when it dies
        or is not ready in time; nothing is left running in that case.
        """

    def remove_leftovers(self, labels: dict[str, str]) -> int:
        """Remove servers that a crashed earlier run with these labels left; returns how many."""
        return 0

    def describe(self) -> str:
        """Where servers run, for messages (``the local launcher's server``)."""
        return f"the {self.name} launcher's server"


class PortTaken(TrialError):
    """A port chosen for the server was bound by another process before the server bound it:
    the instrument's failure, never the configuration's; the server is started on other ports."""


# What Triton logs (and the engine answers) when a port it is told to bind is taken.
_PORT_TAKEN = re.compile(r"already in use|address in use|port is already allocated", re.IGNORECASE)
_START_TRIES = 3


def free_ports(address: str, count: int) -> list[int]:
    """``count`` distinct TCP ports nothing is bound to now, chosen below the kernel's range of
    ephemeral ports where it can: the kernel never hands those to an outgoing connection (the
    sweeper's own clients, a database's) in the seconds before the server binds them."""
    low, high = _ephemeral_range()
    candidates = list(range(10_000, low)) if low > 11_000 else []
    random.shuffle(candidates)
    ports: list[int] = []
    for port in candidates:
        if len(ports) == count:
            return ports
        if _bindable(address, port):
            ports.append(port)
    while len(ports) < count:  # no room below the range: let the kernel choose within it
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
            if sock.getsockname()[1] not in ports:
                ports.append(sock.getsockname()[1])
    return ports


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default


def _bindable(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def listen_options(address: str, ports: Sequence[int]) -> list[str]:
    """Tritonserver arguments that bind its HTTP, gRPC and metrics services to ``ports`` (in that
    order) on ``address``."""
    services = ("http", "grpc", "metrics")
    return [
        f"--{s}-{key}={value}"
        for s, port in zip(services, ports)
        for key, value in (("address", address), ("port", port))
    ]


def port_taken(message: str) -> bool:
    """Whether a server's error lines (or the engine's answer) say a port it was to bind is taken."""
    return _PORT_TAKEN.search(message) is not None


def start_on_free_ports(start_once: Callable[[], Server]) -> Server:
    """``start_once()`` (which chooses its ports), again on other ports while a port it chose
    was taken before the server bound it."""
    for _ in range(_START_TRIES - 1):
        try:
            return start_once()
        except PortTaken:
            continue
    return start_once()


def connect_address(address: str) -> str:
    """Where a client connects to a server bound to ``address`` (0.0.0.0 means any)."""
    return "127.0.0.1" if address in ("0.0.0.0", "") else address


def server_options(model_name: str | None, complete_config: bool) -> list[str]:
    """Tritonserver arguments: load everything at start, or nothing (explicit model control);
    with ``complete_config`` no auto-completion of configs (whose python-backend stub costs
    about a second per load: it ends with a one-second health check)."""
    control = [] if model_name is not None else ["--model-control-mode=explicit"]
    return control + (["--disable-auto-complete-config"] if complete_config else [])


def wait_until_ready(
    server: Server, model_name: str | None, *, timeout_s: float, on_poll: Callable[[], None] | None = None
) -> None:
    """Poll readiness (the model's, or the server's); connection errors mean "not yet", a dead
    server means "never". ``on_poll`` runs before each poll."""
    path = f"/v2/models/{model_name}/ready" if model_name is not None else "/v2/health/ready"
    url = f"http://{server.endpoints.http}{path}"
    deadline = time.monotonic() + timeout_s
    while True:
        if on_poll is not None:
            on_poll()
        if not server.alive():
            if port_taken(error_lines(server.log_text())):
                raise PortTaken(str(server.failure("a port chosen for the server was taken")))
            raise server.failure("the server exited before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            raise server.failure(f"the server was not ready after {timeout_s:g} s")
        time.sleep(_POLL_S)


# Triton's glog error lines ("E1127 16:05:01.123456 1234 file.cc:42] message"), also where a
# python stub's unterminated output ran into them, and its fatal messages ("error: ...").
_ERROR_LINE = re.compile(r"(?:E\d{4} \d\d:\d\d:[\d.]+\s+\d+\s+\S+\]\s*|^error: )(.*)$")
# What a server without a GPU logs as errors at every start: noise, not the trial's failure.
_NOISE = re.compile(r"NVML|DCGM|CudaDriverHelper|Unable to get CUDA|cudaGetDeviceCount|CUDA driver")


def error_lines(log: str, limit: int = _LOG_LINES) -> str:
    """The last error lines of a Triton log on one line, or "" (start-up noise is not a reason)."""
    errors = [m.group(1).strip().strip('"') for m in map(_ERROR_LINE.search, log.splitlines()) if m]
    return " | ".join([e for e in errors if not _NOISE.search(e)][-limit:])


def last_line(log: str, limit: int = 300) -> str:
    """The log's last non-empty line, cut to ``limit`` characters; "" for an empty log."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


def describe_exit(status: int) -> str:
    """``exited with status N`` or ``was killed by signal N (NAME)`` for a process's status."""
    import signal

    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = "?"
        return f"was killed by signal {-status} ({name})"
    return f"exited with status {status}"


def server_metadata(endpoints: Endpoints) -> dict[str, Any]:
    """Triton's name, version and extensions (GET /v2)."""
    with urllib.request.urlopen(f"http://{endpoints.http}/v2", timeout=10) as response:
        return json.load(response)


def server_statistics(endpoints: Endpoints, model_name: str) -> dict[str, Any]:
    """The model's cumulative statistics from Triton's HTTP statistics extension."""
    url = f"http://{endpoints.http}/v2/models/{model_name}/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["model_stats"][0]


def gpu_memory_mb(endpoints: Endpoints) -> float | None:
    """GPU memory in use (MiB, all GPUs) from Triton's metrics endpoint
    (``nv_gpu_memory_used_bytes``); None where Triton reports no GPU."""
    try:
        with urllib.request.urlopen(f"http://{endpoints.metrics}/metrics", timeout=5) as response:
            text = response.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return None
    used = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("nv_gpu_memory_used_bytes")]
    return sum(used) / 2**20 if used else None


def model_config(endpoints: Endpoints, model_name: str) -> dict[str, Any]:
    """The config Triton loaded for a model (JSON, as the server sees it)."""
    with urllib.request.urlopen(f"http://{endpoints.http}/v2/models/{model_name}/config", timeout=10) as response:
        return json.load(response)
