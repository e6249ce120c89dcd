"""The local launcher: a tritonserver process in its own process group."""

from __future__ import annotations

import atexit
import ctypes
import functools
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sweeper.errors import SweeperError
from sweeper.launchers._base import (
    Endpoints,
    Launcher,
    Server,
    connect_address,
    describe_exit,
    free_ports,
    listen_options,
    server_options,
    start_on_free_ports,
    wait_until_ready,
)
from sweeper.launchers._watchdog import remove_empty_dir, remove_shm, watchdog

if TYPE_CHECKING:
    from sweeper.spec import ServerSpec

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_REAP_TIMEOUT_S = 10.0
# The python backend makes a folder here as it loads (a fixed path, not $TMPDIR) and removes it
# only on a graceful shutdown, which a trial's server never gets.
_PYTHON_ENV_GLOB = "/tmp/python_env_*"


def _python_env_dirs() -> set[str]:
    return set(glob.glob(_PYTHON_ENV_GLOB))


def pytriton_server_dir() -> Path | None:
    """The tritonserver folder shipped in the nvidia-pytriton wheel, if it is installed."""
    try:
        import pytriton
    except ImportError:
        return None
    folder = Path(pytriton.__file__).parent / "tritonserver"
    return folder if (folder / "bin" / "tritonserver").is_file() else None


def host_has_gpu() -> bool:
    """Whether ``nvidia-smi`` lists a GPU on this host."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
    return listed.returncode == 0 and "GPU" in listed.stdout


def _die_with_parent() -> None:
    # Runs in the child before exec: the kernel kills tritonserver if the sweeper dies.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _adopt_orphans() -> None:
    """Become the subreaper of this process's descendants: a killed server's python stubs are
    then reparented to the sweeper, which reaps them at once, instead of to PID 1, which in a
    container may reap them seconds later."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1)


class LocalLauncher(Launcher):
    """Runs ``tritonserver`` from the nvidia-pytriton wheel (default) or a given binary.

    For the wheel's build, the python backend needs the stub for this interpreter beside it:
    preflight lays out a backend folder of links to the wheel's files in a temporary folder
    (removed when the sweeper exits), so nothing is written beside the results.
    """

    name = "local"

    def __init__(
        self,
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
        self._backends_guarded = False
        if self._bundled is not None:
            self._binary = self._bundled / "bin" / "tritonserver"
        # The wheel's backends are linked into a temporary folder by preflight.
        if not self._links_backends and self._binary is not None and self._backends is None:
            self._backends = self._binary.parent.parent / "backends"

    @classmethod
    def from_spec(cls, server: ServerSpec) -> LocalLauncher:
        """The launcher a spec's ``server:`` block describes."""
        return cls(
            tritonserver=server.tritonserver,
            backend_directory=server.backend_directory,
            address=server.address,
            startup_timeout_s=server.startup_timeout_s,
        )

    def preflight(self) -> None:
        if self._binary is None or not self._binary.is_file():
            raise SweeperError(
                "no tritonserver binary found",
                hint="pip install nvidia-pytriton, or set server.tritonserver to a tritonserver binary",
            )
        if self._links_backends:
            self._link_bundled_backends()
        if not self.backends & {"python", "onnxruntime"}:
            raise SweeperError(
                f"{self._backends} has neither the python nor the onnxruntime backend",
                hint="set server.backend_directory to Triton's backends folder",
            )

    def _link_bundled_backends(self) -> None:
        """The wheel's python backend plus the stub for this interpreter, as links."""
        if self._backends is None:
            self._backends = Path(tempfile.mkdtemp(prefix="sweeper-backends-"))
            atexit.register(self._remove_linked_backends)
        python_dir = self._backends / "python"
        stub = self._bundled / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
        python_dir.mkdir(parents=True, exist_ok=True)
        for source in [*(self._bundled / "backends" / "python").iterdir(), stub / "triton_python_backend_stub"]:
            link = python_dir / source.name
            if source.name != "__pycache__" and not link.exists():
                link.symlink_to(source)

    def _remove_linked_backends(self) -> None:
        shutil.rmtree(self._backends, ignore_errors=True)
        if self._backends_guarded:
            watchdog().remove("tree", str(self._backends))

    @functools.cached_property
    def has_gpu(self) -> bool:
        return host_has_gpu()

    @property
    def backend_directory(self) -> Path:
        """The backends folder servers are started with."""
        return self._backends

    @property
    def backends(self) -> frozenset[str]:
        folder = self._backends
        if folder is None or not folder.is_dir():
            return frozenset()
        return frozenset(p.name for p in folder.iterdir() if p.is_dir())

    def describe(self) -> str:
        origin = "nvidia-pytriton's tritonserver" if self._bundled is not None else f"tritonserver {self._binary}"
        return f"the local launcher's server ({origin})"

    def _server_env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The python-backend stub embeds Python: it finds this venv's packages through PATH.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self._backends / "python"), env.get("PYTHONPATH")]))
        return env

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
        argv = [
            str(self._binary),
            f"--model-repository={repository}",
            f"--backend-directory={self._backends}",
            *server_options(model_name, complete_config),
            *options,
        ]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._links_backends and not self._backends_guarded:  # removed even if the sweeper is killed
            watchdog().add("tree", str(self._backends))
            self._backends_guarded = True
        return start_on_free_ports(functools.partial(self._start_once, argv, log_path, model_name))

    def _start_once(self, argv: list[str], log_path: Path, model_name: str | None) -> Server:
        """Start the server on ports chosen now and wait until it is ready; stopped on failure."""
        ports = free_ports(self._address, 3)
        endpoints = Endpoints(*(f"{connect_address(self._address)}:{port}" for port in ports))
        # The python backend names its shared-memory regions with this prefix: ours to remove.
        shm_prefix = f"sweeper_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        argv = [
            *argv,
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            *listen_options(self._address, ports),
        ]
        watchdog().add("shm", shm_prefix)
        _adopt_orphans()
        folders_before = _python_env_dirs()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._server_env(),
                process_group=0,
                preexec_fn=_die_with_parent,
            )
        watchdog().add("group", str(process.pid))
        server = _LocalServer(process, endpoints, log_path, shm_prefix)
        # The backend's folder is claimed as soon as it appears (a sweeper killed while the server
        # starts leaves none behind), and only while the server starts.
        claim = functools.partial(server.claim_env_dirs, folders_before)
        try:
            wait_until_ready(server, model_name, timeout_s=self._timeout, on_poll=claim)
        except BaseException:
            claim()
            server.stop()
            raise
        claim()
        return server


class _LocalServer(Server):
    def __init__(self, process: subprocess.Popen, endpoints: Endpoints, log_path: Path, shm_prefix: str) -> None:
        self._process = process
        self.endpoints = endpoints
        self.pid = process.pid
        self._log_path = log_path
        self.shm_prefix = shm_prefix
        """Names of the python backend's shared-memory regions start with this."""
        self._env_dirs: set[str] = set()
        self._stopped = False

    def claim_env_dirs(self, before: set[str]) -> None:
        """Take the python backend's folder, made as it loads its first model, as this server's,
        to remove when it stops (``_PYTHON_ENV_GLOB``): the new ones since ``before``, taken just
        before the server started or loaded a model, so that another server's is not mistaken for
        this one's. A server has one: once found, it is not looked for again."""
        if self._env_dirs:
            return
        self._env_dirs = _python_env_dirs() - before
        guard = watchdog()
        for path in self._env_dirs:
            guard.add("dir", path)

    def load(self, model_name: str, timeout_s: float) -> None:
        before = set() if self._env_dirs else _python_env_dirs()
        try:
            super().load(model_name, timeout_s)
        finally:
            self.claim_env_dirs(before)

    def alive(self) -> bool:
        return self._process.poll() is None

    def exit_reason(self) -> str | None:
        status = self._process.poll()
        return None if status is None else describe_exit(status)

    def log_text(self) -> str:
        return self._log_path.read_text(errors="replace") if self._log_path.is_file() else ""

    def memory_mb(self) -> float | None:
        """The resident set of every process in the server's group (server and stubs), from /proc."""
        return group_rss_mb(self._process.pid)

    def stop(self) -> None:
        """SIGKILL to the whole group (server and python stubs), then its shared memory.

        A trial's server holds nothing worth saving, and a graceful stop costs seconds: the
        python backend checks each stub's health with a one-second sleep before ending it."""
        if self._stopped:
            return
        group = self._process.pid
        _signal_group(group, signal.SIGKILL)
        self._process.wait()
        # The stubs, orphaned, are this process's children now (``_adopt_orphans``): reap them.
        while True:
            try:
                os.waitpid(-group, 0)
            except ChildProcessError:
                break
        deadline = time.monotonic() + _REAP_TIMEOUT_S
        while _signal_group(group, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        remove_shm(self.shm_prefix)
        guard = watchdog()
        for path in self._env_dirs:
            remove_empty_dir(path)
            guard.remove("dir", path)
        guard.remove("group", str(group))
        guard.remove("shm", self.shm_prefix)
        self._stopped = True


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def group_rss_mb(group: int) -> float | None:
    """Resident memory (MiB) of the processes in process group ``group``; None if there are none."""
    pages, found = 0, False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:  # the process ended while the folder was read
            continue
        if int(fields[2]) == group:  # proc(5) fields 5 (pgrp) and 24 (rss), counted after the name
            pages += int(fields[21])
            found = True
    return pages * _PAGE_BYTES / 2**20 if found else None


def _signal_group(group: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when the group no longer exists."""
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        return False
    return True
