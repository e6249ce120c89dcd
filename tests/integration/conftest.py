"""Real parts for the integration tier: the nvidia-pytriton tritonserver, a Docker engine and its
test image, PostgreSQL, perf_analyzer. Nothing here is skipped: a missing part fails the test.

Every test is checked for leftovers when it ends: a tritonserver process, a sweeper container, or
a python-backend shared-memory file or folder that the test started and left fails that test, by
name.
Servers that fixtures keep for several tests are registered with ``keep``.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import FAST_LOAD, REPO, write_spec

_KEPT_PIDS: set[str] = set()
_KEPT_CONTAINERS: set[str] = set()


def keep(server) -> None:
    """A server a fixture keeps across tests is not a leftover of the test that started it."""
    if hasattr(server, "pid"):
        _KEPT_PIDS.add(str(server.pid))
    if hasattr(server, "id"):
        _KEPT_CONTAINERS.add(server.id)


# The suite's own processes carry this mark in their environment (the launchers pass theirs on),
# so a tritonserver of someone else's on the host neither fails a test nor hides a leftover.
_MARK = f"SWEEPER_TEST_SESSION={os.environ.setdefault('SWEEPER_TEST_SESSION', uuid.uuid4().hex)}".encode()
_SESSION_TEMP: list[str] = []
"""The session's temporary folder (a container mounting something under it is the suite's)."""


def _ours(pid: str) -> bool:
    if pid == str(os.getpid()):
        return True  # its /proc environ is the one it started with, before the mark
    try:
        return _MARK in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone, or not ours to read
        return False


def tritonservers() -> set[str]:
    """``pid command`` of every tritonserver process this test session started (zombies have no
    command line)."""
    found = subprocess.run(["pgrep", "-a", "-f", "bin/tritonserver"], capture_output=True, text=True)
    return {line for line in found.stdout.splitlines() if "pgrep" not in line and _ours(line.split()[0])}


def sweeper_containers() -> set[str]:
    """``id name`` of every container a sweeper of this session made (any state), if an engine
    runs: its owner is one of the session's processes, or it mounts the session's files."""
    if shutil.which("docker") is None:
        return set()
    found = subprocess.run(
        ["docker", "ps", "-a", "-q", "--no-trunc", "--filter", "label=triton-sweeper.study"],
        capture_output=True,
        text=True,
    )
    ids = found.stdout.split()
    if not ids:
        return set()
    described = subprocess.run(
        ["docker", "inspect", "--format", _CONTAINER_FORMAT, *ids], capture_output=True, text=True
    ).stdout.splitlines()
    ours = set()
    for line in described:
        if len(line.split()) < 3:
            continue  # removed between the listing and the inspection: gone, not left
        container, name, owner, *sources = line.split()
        pid = owner.rpartition(":")[2]
        if (pid.isdigit() and _ours(pid)) or any(s.startswith(tuple(_SESSION_TEMP)) for s in sources):
            ours.add(f"{container[:12]} {name.lstrip('/')}")
    return ours


_CONTAINER_FORMAT = (
    '{{.Id}} {{.Name}} {{or (index .Config.Labels "triton-sweeper.owner") "-"}} {{range .Mounts}}{{.Source}} {{end}}'
)


def shm_files() -> set[str]:
    """The sweeper's and the python backend's shared memory, less what a process of someone
    else's has mapped (a leftover is mapped by nobody, or by the session's own leftover)."""
    found = set(glob.glob("/dev/shm/sweeper_*")) | set(glob.glob("/dev/shm/triton_python_backend_shm_region*"))
    if not found:
        return found
    foreign = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        if _ours(maps.parent.name):
            continue
        try:
            foreign.update(line.split(maxsplit=5)[-1] for line in maps.read_text().splitlines() if "/dev/shm/" in line)
        except (OSError, IndexError):
            continue
    return {f for f in found if f not in foreign}


@pytest.fixture(scope="session", autouse=True)
def no_server_outlives_the_suite(tmp_path_factory):
    _SESSION_TEMP.append(str(tmp_path_factory.getbasetemp()))
    yield
    deadline = time.monotonic() + 10
    while tritonservers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not tritonservers(), f"tritonserver processes left after the suite: {tritonservers()}"


def python_env_folders() -> set[str]:
    """The python backend's folders (it makes one in /tmp as it loads, whatever $TMPDIR says)."""
    return set(glob.glob("/tmp/python_env_*"))


def leftovers() -> dict[str, set[str]]:
    """Everything a sweeper could leave behind, by kind; the sweeper's own temporary folders too,
    which a test's launcher keeps until the suite ends (so ``nothing_left_behind`` skips them)."""
    return {
        "tritonservers": tritonservers(),
        "containers": sweeper_containers(),
        "shared memory": shm_files(),
        "python backend folders": python_env_folders(),
        "temporary folders": set(glob.glob(f"{tempfile.gettempdir()}/sweeper-backends-*")),
    }


@pytest.fixture(autouse=True)
def nothing_left_behind(request):
    """Fail the test that leaves a server, a container, shared memory or a backend folder behind."""
    servers, containers, shm, folders = tritonservers(), sweeper_containers(), shm_files(), python_env_folders()
    yield
    deadline = time.monotonic() + 5
    while True:
        new_servers = {s for s in tritonservers() - servers if s.split()[0] not in _KEPT_PIDS}
        new_containers = {
            c for c in sweeper_containers() - containers if not any(c.startswith(k[:12]) for k in _KEPT_CONTAINERS)
        }
        new_shm = shm_files() - shm
        new_folders = python_env_folders() - folders
        if not (new_servers or new_containers or new_shm or new_folders) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not new_servers, f"{request.node.nodeid} left tritonserver processes: {new_servers}"
    assert not new_containers, f"{request.node.nodeid} left containers: {new_containers}"
    assert not new_shm, f"{request.node.nodeid} left shared memory: {new_shm}"
    assert not new_folders, f"{request.node.nodeid} left python backend folders: {new_folders}"


@pytest.fixture(scope="session")
def local_launcher(tmp_path_factory):
    from sweeper.launchers import LocalLauncher

    launcher = LocalLauncher(startup_timeout_s=60)
    launcher.preflight()
    return launcher


def docker_server_block() -> dict:
    """The `server:` block for the local test image, as docker/build-test-image.sh prints it.

    A missing Docker engine fails here: the Docker tests never skip."""
    venv = Path(sys.executable).parent.parent
    built = subprocess.run(
        ["bash", str(REPO / "docker" / "build-test-image.sh"), str(venv)], capture_output=True, text=True
    )
    assert built.returncode == 0, f"the Docker test image could not be built (is dockerd running?): {built.stderr}"
    return yaml.safe_load(built.stdout)["server"]


@pytest.fixture(scope="session")
def docker_block() -> dict:
    return docker_server_block()


@pytest.fixture(scope="session")
def docker_launcher(docker_block):
    from sweeper.launchers import DockerLauncher
    from sweeper.spec import ServerSpec

    launcher = DockerLauncher.from_spec(ServerSpec.model_validate({**docker_block, "startup_timeout_s": 60}))
    launcher.preflight()
    return launcher


@pytest.fixture(scope="session")
def docker_published_launcher(docker_block):
    """Triton's ports published on 127.0.0.1 from a container on a bridge network of its own."""
    import docker
    from sweeper.launchers import DockerLauncher
    from sweeper.spec import ServerSpec

    engine = docker.from_env()
    for stale in engine.networks.list(names=["sweeper-test-bridge"]):
        stale.remove()
    network = engine.networks.create("sweeper-test-bridge", driver="bridge")
    try:
        settings = {**docker_block["docker"], "network": "published", "bridge": network.name}
        spec = ServerSpec.model_validate({**docker_block, "docker": settings, "startup_timeout_s": 60})
        launcher = DockerLauncher.from_spec(spec)
        launcher.preflight()
        yield launcher
    finally:
        network.remove()


@pytest.fixture(params=["local", "docker", "docker_published"])
def launcher(request):
    """Every launcher, for the shared launcher suite."""
    return request.getfixturevalue(f"{request.param}_launcher")


E2E_SPEC = """
study: {name: e2e, trials: 3, sampler: grid, seed: 0, confirm_repeats: 1}
model:
  name: mlp
  source: {onnx: MODEL}
search_space:
  max_batch_size: [1, 8]
  max_queue_delay_us: [20000]
  instance_count: [1]
  protocol: [http, grpc]
  precision: [fp32]
baseline: {max_batch_size: 8, max_queue_delay_us: 20000, instance_count: 1, protocol: http}
objectives:
  - {metric: p50_ms, concurrency: 1, direction: minimize}
  - {metric: throughput, concurrency: 2, direction: maximize}
constraints:
  - {metric: p99_ms, concurrency: 1, max: 5000}
""" + FAST_LOAD.replace("concurrency: [1]", "concurrency: [1, 2]")


@pytest.fixture(scope="session")
def swept(tmp_path_factory, mlp_file):
    """One real 3-trial sweep (the library call), shared by the study, report and export tests:
    (spec, study dir)."""
    from sweeper.spec import load_spec
    from sweeper.sweep import run_sweep

    folder = tmp_path_factory.mktemp("e2e")
    spec = write_spec(folder, E2E_SPEC.replace("MODEL", str(mlp_file)))
    result = run_sweep(load_spec(spec), results_dir=folder / "results")
    assert result.outcome == "done" and (result.tables.trials["state"] == "COMPLETE").sum() == 3
    return spec, result.directory


def _interruptible() -> None:
    """Ctrl-C reaches the child as it reaches a sweeper in a terminal, even when the suite itself
    was started in the background (where SIGINT is ignored, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_sweep(spec: Path, results: Path, *extra: str) -> subprocess.Popen:
    """`sweeper run` in a child process."""
    return subprocess.Popen(
        [sys.executable, "-m", "sweeper.cli", "run", str(spec), "--results-dir", str(results), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interruptible,
    )


def wait_for(sweep: subprocess.Popen, condition, what: str, timeout_s: float = 90) -> None:
    """Wait until ``condition()``; the child is killed (and its output shown) if it ends or the
    time runs out first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if sweep.poll() is not None or time.monotonic() > deadline:
            if sweep.poll() is None:
                sweep.kill()
            out, err = sweep.communicate()
            raise AssertionError(f"never saw {what}; exit {sweep.returncode}\n{out[-2000:]}\n{err[-3000:]}")
        time.sleep(0.1)


def server_log_says(log: Path, words: str):
    return lambda: log.is_file() and words in log.read_text(errors="replace")


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server (Debian's binaries, run as the postgres user) on a free port."""
    from sweeper.launchers._base import free_ports

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert found, "PostgreSQL is required (scripts/setup-system.sh installs Debian's package 'postgresql')"
    binaries = Path(found[-1]).parent
    data = Path(tempfile.mkdtemp(prefix="sweeper-pg-"))
    server = None
    try:
        shutil.chown(data, "postgres", "postgres")
        # Run as the postgres user directly (not through runuser) so signals reach the postmaster itself.
        as_postgres = {"user": "postgres", "group": "postgres", "extra_groups": []}
        subprocess.run(
            [str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "sweeper"],
            check=True,
            capture_output=True,
            **as_postgres,
        )
        (port,) = free_ports("127.0.0.1", 1)
        server = subprocess.Popen(
            [
                str(binaries / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                str(data),
                "-c",
                "listen_addresses=127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **as_postgres,
        )
        deadline = time.monotonic() + 30
        while (
            subprocess.run(
                [str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
            ).returncode
            != 0
        ):
            assert server.poll() is None and time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.2)
        yield f"postgresql://sweeper@127.0.0.1:{port}/postgres"
    finally:
        if server is not None:
            # SIGINT is PostgreSQL's fast shutdown: it closes the sessions the tests' pools still hold and
            # removes its shared memory; SIGTERM waits for those sessions (runuser then SIGKILLed it, leaving
            # /dev/shm/PostgreSQL.* behind).
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)
