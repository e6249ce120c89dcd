"""Shared fixtures: small real ONNX models, specs written to tmp dirs, and the leftover check."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

REPO = Path(__file__).resolve().parent.parent


def _tritonservers() -> list[str]:
    found = subprocess.run(["pgrep", "-a", "-f", "bin/tritonserver"], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


@pytest.fixture(scope="session", autouse=True)
def no_server_outlives_the_suite():
    """The suite fails if any tritonserver process is left when it ends."""
    before = _tritonservers()
    assert not before, f"tritonserver processes running before the suite: {before}"
    yield
    left = _tritonservers()
    assert not left, f"tritonserver processes left after the suite: {left}"


def make_mlp_onnx(path: Path, *, features: int = 16, outputs: int = 4, dynamic_batch: bool = True, seed: int = 0) -> Path:
    """A two-layer MLP as a real ONNX file: input 'x' [batch, features], output 'y' [batch, outputs]."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (features, 32)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (32, outputs)).astype(np.float32)
    batch = "batch" if dynamic_batch else 1
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    if not dynamic_batch:
        # Exported without a dynamic batch axis: a batch of more than one sample fails at run time.
        nodes[-1] = helper.make_node("MatMul", ["r", "w2"], ["m"])
        nodes.append(helper.make_node("Reshape", ["m", "shape"], ["y"]))
    initializers = [helper.make_tensor("w1", TensorProto.FLOAT, w1.shape, w1.ravel()),
                    helper.make_tensor("w2", TensorProto.FLOAT, w2.shape, w2.ravel())]
    if not dynamic_batch:
        initializers.append(helper.make_tensor("shape", TensorProto.INT64, [2], [1, outputs]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, outputs])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def mlp_onnx(tmp_path_factory) -> Path:
    return make_mlp_onnx(tmp_path_factory.mktemp("model") / "mlp.onnx")


def write_spec(folder: Path, body: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


FAST_LOAD = """
load:
  concurrency: [1]
  warmup_s: 0.3
  window_s: 0.4
  stability_tolerance: 0.5
  max_windows: 4
"""


@pytest.fixture(scope="session")
def local_launcher(tmp_path_factory):
    from sweeper.launchers import LocalLauncher

    launcher = LocalLauncher(tmp_path_factory.mktemp("local-launcher"), startup_timeout_s=60)
    launcher.preflight()
    return launcher


def docker_server_block() -> dict:
    """The `server:` block for the local test image, as docker/build-test-image.sh prints it.

    A missing Docker engine fails here: the Docker tests never skip."""
    import sys

    import yaml

    venv = Path(sys.executable).parent.parent
    built = subprocess.run(["bash", str(REPO / "docker" / "build-test-image.sh"), str(venv)],
                           capture_output=True, text=True)
    assert built.returncode == 0, f"the Docker test image could not be built (is dockerd running?): {built.stderr}"
    return yaml.safe_load(built.stdout)["server"]


@pytest.fixture(scope="session")
def docker_block() -> dict:
    return docker_server_block()


@pytest.fixture(scope="session")
def docker_launcher(docker_block):
    from sweeper.launchers import DockerLauncher
    from sweeper.spec import ServerSpec

    launcher = DockerLauncher(ServerSpec.model_validate({**docker_block, "startup_timeout_s": 60}))
    launcher.preflight()
    return launcher


@pytest.fixture(scope="session")
def docker_published_launcher(docker_block):
    """Triton's ports published on 127.0.0.1 from a container on a bridge network of its own."""
    import docker

    from sweeper.launchers import DockerLauncher
    from sweeper.spec import ServerSpec

    engine = docker.from_env()
    network = engine.networks.create("sweeper-test-bridge", driver="bridge")
    settings = {**docker_block["docker"], "network": "published", "bridge": network.name}
    launcher = DockerLauncher(ServerSpec.model_validate({**docker_block, "docker": settings, "startup_timeout_s": 60}))
    launcher.preflight()
    yield launcher
    network.remove()


@pytest.fixture(params=["local", "docker", "docker_published"])
def launcher(request):
    """Every launcher, for the shared launcher suite."""
    return request.getfixturevalue(f"{request.param}_launcher")


E2E_SPEC = """
study: {name: e2e, trials: 3, sampler: grid, seed: 0}
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
def swept(tmp_path_factory, mlp_onnx):
    """One real 3-trial sweep, shared by the study, report and export tests: (status, spec, study dir)."""
    from sweeper.cli import main

    folder = tmp_path_factory.mktemp("e2e")
    spec = write_spec(folder, E2E_SPEC.replace("MODEL", str(mlp_onnx)))
    status = main(["run", str(spec), "--results-dir", str(folder / "results")])
    return status, spec, folder / "results" / "e2e"


def start_sweep_until_serving(spec: Path, results: Path, study: str) -> subprocess.Popen:
    """`sweeper run` in a child process, returned once trial 0's server accepts requests."""
    import sys
    import time

    sweep = subprocess.Popen([sys.executable, "-m", "sweeper.cli", "run", str(spec), "--results-dir", str(results)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = results / study / "trials" / "0" / "server.log"
    deadline = time.monotonic() + 60
    while not (log.is_file() and "Started GRPCInferenceService" in log.read_text()):
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
        time.sleep(0.2)
    return sweep


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server (Debian's binaries, run as the postgres user) on a free port."""
    import glob
    import shutil
    import tempfile
    import time

    from sweeper.launchers._base import free_port

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert found, "PostgreSQL is required (scripts/setup-system.sh installs Debian's package 'postgresql')"
    binaries = Path(found[-1]).parent
    data = Path(tempfile.mkdtemp(prefix="sweeper-pg-"))
    shutil.chown(data, "postgres", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "sweeper"],
                   check=True, capture_output=True)
    port = free_port("127.0.0.1")
    server = subprocess.Popen(
        [*as_postgres, str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(data),
         "-c", "listen_addresses=127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while subprocess.run([str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                         capture_output=True).returncode != 0:
        assert server.poll() is None and time.monotonic() < deadline, "PostgreSQL did not start"
        time.sleep(0.2)
    yield f"postgresql://sweeper@127.0.0.1:{port}/postgres"
    server.terminate()
    server.wait(timeout=30)
    shutil.rmtree(data, ignore_errors=True)
