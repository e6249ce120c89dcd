"""The local launcher: a tritonserver process per trial, in its own process group."""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sweeper.errors import SweeperError
from sweeper.launchers._base import Endpoints, Launcher, Server, connect_address, free_port, wait_until_ready

_EXIT_TIMEOUT_S = 5
_STOP_GRACE_S = 15.0
_PR_SET_PDEATHSIG = 1


def pytriton_server_dir() -> Path | None:
    """The tritonserver folder shipped in the nvidia-pytriton wheel, if it is installed."""
    try:
        import pytriton
    except ImportError:
        return None
    folder = Path(pytriton.__file__).parent / "tritonserver"
    return folder if (folder / "bin" / "tritonserver").is_file() else None


def _die_with_parent() -> None:
    # Runs in the child before exec: the kernel kills tritonserver if the sweeper dies.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class LocalLauncher(Launcher):
    """Runs ``tritonserver`` from the nvidia-pytriton wheel (default) or a given binary.

    For the wheel's build, the python backend needs the stub for this interpreter beside it:
    the launcher lays out a backend folder under ``workdir`` with links to the wheel's files.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        tritonserver: Path | None = None,
        backend_directory: Path | None = None,
        address: str = "127.0.0.1",
        startup_timeout_s: float = 120.0,
    ) -> None:
        self._binary = tritonserver
        self._backends = backend_directory
        self._address = address
        self._timeout = startup_timeout_s
        self._bundled = pytriton_server_dir() if tritonserver is None else None
        self._links_backends = self._bundled is not None and backend_directory is None
        if self._bundled is not None:
            self._binary = self._bundled / "bin" / "tritonserver"
        if self._links_backends:
            self._backends = workdir / "backends"  # laid out by preflight
        elif self._binary is not None and self._backends is None:
            self._backends = self._binary.parent.parent / "backends"

    def preflight(self) -> None:
        if self._binary is None or not self._binary.is_file():
            raise SweeperError(
                "no tritonserver binary found",
                hint="pip install nvidia-pytriton, or set server.tritonserver to a tritonserver binary",
            )
        if self._links_backends:
            self._link_bundled_backends()
        if not (self._backends / "python").is_dir() and not (self._backends / "onnxruntime").is_dir():
            raise SweeperError(
                f"{self._backends} has neither the python nor the onnxruntime backend",
                hint="set server.backend_directory to Triton's backends folder",
            )

    def _link_bundled_backends(self) -> None:
        """The wheel's python backend plus the stub for this interpreter, as links."""
        python_dir = self._backends / "python"
        stub = self._bundled / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
        python_dir.mkdir(parents=True, exist_ok=True)
        for source in [*(self._bundled / "backends" / "python").iterdir(), stub / "triton_python_backend_stub"]:
            link = python_dir / source.name
            if source.name != "__pycache__" and not link.exists():
                link.symlink_to(source)

    @functools.cached_property
    def has_gpu(self) -> bool:
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return False
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
        return listed.returncode == 0 and "GPU" in listed.stdout

    @property
    def has_onnxruntime_backend(self) -> bool:
        return (self._backends / "onnxruntime").is_dir()

    def start(self, repository: Path, model_name: str, log_path: Path, labels: dict[str, str]) -> Server:
        ports = [free_port(self._address) for _ in range(3)]
        host = connect_address(self._address)
        endpoints = Endpoints(*(f"{host}:{port}" for port in ports))
        argv = [
            str(self._binary),
            f"--model-repository={repository}",
            f"--backend-directory={self._backends}",
            f"--http-address={self._address}",
            f"--http-port={ports[0]}",
            f"--grpc-address={self._address}",
            f"--grpc-port={ports[1]}",
            f"--metrics-address={self._address}",
            f"--metrics-port={ports[2]}",
            # Load has stopped when a trial stops its server: no need for Triton's 30 s drain.
            f"--exit-timeout-secs={int(_EXIT_TIMEOUT_S)}",
        ]
        env = dict(os.environ)
        # The python-backend stub embeds Python: it finds this venv's packages through PATH.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self._backends / "python"), env.get("PYTHONPATH")]))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=0,
                preexec_fn=_die_with_parent,
            )
        server = _LocalServer(process, endpoints)
        try:
            wait_until_ready(
                endpoints,
                model_name,
                alive=server.alive,
                read_log=lambda: log_path.read_text(errors="replace"),
                timeout_s=self._timeout,
            )
        except BaseException:
            server.stop()
            raise
        return server


class _LocalServer(Server):
    def __init__(self, process: subprocess.Popen, endpoints: Endpoints) -> None:
        self._process = process
        self.endpoints = endpoints
        self.pid = process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        """SIGTERM to the whole group (server and python stubs), SIGKILL after a grace period."""
        group = self._process.pid
        _signal_group(group, signal.SIGTERM)
        try:
            self._process.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(group, signal.SIGKILL)
            self._process.wait()
        # Stubs can outlive the server for a moment; the group is gone only when they are.
        deadline = time.monotonic() + _STOP_GRACE_S
        while _signal_group(group, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(group, signal.SIGKILL)


def _signal_group(group: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when the group no longer exists."""
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        return False
    return True
