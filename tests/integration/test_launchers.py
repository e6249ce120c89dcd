"""One suite for every launcher: a real server starts, serves, loads models on demand, fails
loudly and stops cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient

from sweeper.errors import TrialError
from sweeper.vocabulary import TrialConfig
from tests.repositories import infer_mlp, make_repository


def _config(endpoints, model: str) -> dict:
    with urllib.request.urlopen(f"http://{endpoints.http}/v2/models/{model}/config") as response:
        return json.load(response)


def test_server_serves_the_model_with_the_trial_config(launcher, request, tmp_path, mlp_file):
    repository = make_repository(tmp_path / "repo", mlp_file, TrialConfig(8, 200, 2, "http", "fp32"))
    x = np.random.default_rng(1).random((3, 16), dtype=np.float32)
    expected = ort.InferenceSession(str(mlp_file), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    labels, options = {"triton-sweeper.study": "t"}, ["--exit-timeout-secs=7"]  # a trial's server option
    with launcher.start(repository, tmp_path / "server.log", labels, model_name="mlp", options=options) as server:
        assert server.endpoints.http.startswith("127.0.0.1:")
        loaded = _config(server.endpoints, "mlp")
        assert loaded["max_batch_size"] == 8
        assert loaded["dynamic_batching"]["max_queue_delay_microseconds"] == 200
        assert loaded["instance_group"][0]["count"] == 2
        np.testing.assert_allclose(infer_mlp(httpclient, server.endpoints.http, x), expected, rtol=1e-5, atol=1e-6)
        assert server.alive() and server.exit_reason() is None
        assert 20 < server.memory_mb() < 4000, "the server's resident memory, stubs included"
    assert not server.alive()
    # Bound to the loopback; in a container of its own network, to the container's interfaces.
    address = "0.0.0.0" if request.node.callspec.params["launcher"] == "docker_published" else "127.0.0.1"
    log = (tmp_path / "server.log").read_text()
    assert f"Started HTTPService at {address}" in log
    assert re.search(r"\|\s*exit_timeout\s*\|\s*7\s*\|", log), "the option reached tritonserver"


def test_model_that_fails_to_load_is_a_trial_error_with_the_log_lines(launcher, tmp_path, mlp_file):
    repository = make_repository(tmp_path / "repo", mlp_file, TrialConfig(8, "off", 1, "http", "fp32"))
    config = repository / "mlp" / "config.pbtxt"
    config.write_text(config.read_text().replace('backend: "python"', 'backend: "no_such_backend"'))
    with pytest.raises(TrialError) as failure:
        launcher.start(repository, tmp_path / "server.log", {"triton-sweeper.study": "t"}, model_name="mlp")
    message = str(failure.value)
    assert "exited before it was ready" in message and "exited with status 1" in message
    assert "no_such_backend" in message
    assert "CudaDriverHelper" not in message and "NVML" not in message, "start-up noise is no reason"


def test_a_port_taken_before_the_server_binds_it_is_chosen_again(launcher, monkeypatch, tmp_path, mlp_file):
    """Another process binds a chosen port between the choice and the server's bind: the server
    starts again on other ports (the instrument's failure, not the configuration's). Only the
    choice is steered, to a port this test holds; the collision and the server's failure are real."""
    import sweeper.launchers._base as base

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    taken = held.getsockname()[1]
    choices: list[list[int]] = []

    def first_choice_taken(address: str, count: int) -> list[int]:
        ports = base.free_ports(address, count)
        ports = [taken, *ports[1:]] if not choices else ports
        choices.append(ports)
        return ports

    monkeypatch.setattr(sys.modules[type(launcher).__module__], "free_ports", first_choice_taken)
    repository = make_repository(tmp_path / "repo", mlp_file, TrialConfig(8, 200, 1, "http", "fp32"))
    with (
        held,
        launcher.start(repository, tmp_path / "server.log", {"triton-sweeper.study": "t"}, model_name="mlp") as server,
    ):
        assert len(choices) == 2 and choices[0][0] == taken
        assert server.endpoints.http.endswith(f":{choices[1][0]}") and server.alive()


def test_models_load_and_unload_on_demand(launcher, tmp_path, mlp_file):
    """Explicit model control (reload mode): knob changes, a failed load, the server lives on."""
    repository = tmp_path / "repo"
    repository.mkdir()
    with launcher.start(
        repository, tmp_path / "server.log", {"triton-sweeper.study": "t"}, model_name=None, complete_config=True
    ) as server:
        x = np.ones((1, 16), np.float32)
        for name, config in (
            ("a", TrialConfig(4, 0, 1, "http", "fp32")),
            ("b", TrialConfig(2, "off", 2, "http", "fp32")),
        ):
            make_repository(repository, mlp_file, config, name)
            server.load(name, 60)
            loaded = _config(server.endpoints, name)
            assert loaded["max_batch_size"] == config.max_batch_size
            assert ("dynamic_batching" in loaded) == config.dynamic_batching
            assert infer_mlp(httpclient, server.endpoints.http, x, name).shape == (1, 4)
            server.unload(name, 60)
        broken = make_repository(repository, mlp_file, TrialConfig(4, 0, 1, "http", "fp32"), "c") / "c" / "config.pbtxt"
        broken.write_text(broken.read_text().replace('backend: "python"', 'backend: "no_such_backend"'))
        with pytest.raises(TrialError, match="loading the model failed.*no_such_backend"):
            server.load("c", 60)
        assert server.alive()


def test_a_killed_server_says_how_it_ended(local_launcher, tmp_path, mlp_file):
    repository = make_repository(tmp_path / "repo", mlp_file, TrialConfig(4, "off", 1, "http", "fp32"))
    server = local_launcher.start(repository, tmp_path / "server.log", {}, model_name="mlp")
    try:
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.exit_reason() == "was killed by signal 9 (SIGKILL)"
        assert "the server was killed by signal 9" in str(server.failure("inference failed"))
    finally:
        server.stop()


def test_stop_ends_the_whole_process_group_its_shared_memory_and_folders(local_launcher, tmp_path, mlp_file):
    import glob

    repository = make_repository(tmp_path / "repo", mlp_file, TrialConfig(4, "off", 2, "http", "fp32"))
    folders_before = set(glob.glob("/tmp/python_env_*"))
    server = local_launcher.start(repository, tmp_path / "server.log", {}, model_name="mlp")
    assert set(glob.glob("/tmp/python_env_*")) - folders_before, "the python backend makes its folder in /tmp"
    group = server.pid
    stubs = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _group_of(p) == group and int(p.name) != group]
    assert stubs, "the python backend stubs run in the server's process group"
    regions = glob.glob(f"/dev/shm/{server.shm_prefix}*")
    assert regions, "the python backend's shared memory carries the server's own prefix"
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)
    assert not glob.glob(f"/dev/shm/{server.shm_prefix}*")
    assert not set(glob.glob("/tmp/python_env_*")) - folders_before, "a killed server's backend folder is removed"


def _group_of(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def test_stop_removes_the_container(docker_launcher, tmp_path, mlp_file):
    import docker

    repository = make_repository(tmp_path / "repo", mlp_file, TrialConfig(4, "off", 1, "http", "fp32"))
    labels = {"triton-sweeper.study": "stop-test", "triton-sweeper.trial": "0"}
    server = docker_launcher.start(repository, tmp_path / "server.log", labels, model_name="mlp")
    engine = docker.from_env()
    (container,) = engine.containers.list(filters={"label": "triton-sweeper.study=stop-test"})
    attributes = container.attrs["HostConfig"]
    assert f"{repository.resolve()}:/models:ro" in attributes["Binds"]
    assert {u["Name"] for u in attributes["Ulimits"]} == {"memlock", "stack"}
    assert container.labels["triton-sweeper.trial"] == "0"
    server.stop()
    server.stop()  # idempotent
    assert engine.containers.list(all=True, filters={"label": "triton-sweeper.study=stop-test"}) == []


def test_published_ports_bind_the_loopback_only(docker_published_launcher, tmp_path, mlp_file):
    import docker

    repository = make_repository(tmp_path / "repo", mlp_file, TrialConfig(4, "off", 1, "http", "fp32"))
    labels = {"triton-sweeper.study": "published-test"}
    with docker_published_launcher.start(repository, tmp_path / "server.log", labels, model_name="mlp") as server:
        (container,) = docker.from_env().containers.list(filters={"label": "triton-sweeper.study=published-test"})
        bindings = container.attrs["HostConfig"]["PortBindings"]
        assert sorted(bindings) == ["8000/tcp", "8001/tcp", "8002/tcp"]
        assert {b["HostIp"] for published in bindings.values() for b in published} == {"127.0.0.1"}
        assert server.endpoints.http == f"127.0.0.1:{bindings['8000/tcp'][0]['HostPort']}"


def test_a_given_tritonserver_binary_and_backend_folder(tmp_path, mlp_file):
    from sweeper.launchers import LocalLauncher
    from sweeper.launchers._local import pytriton_server_dir

    bundled = LocalLauncher()
    bundled.preflight()  # lays out a backend folder with the stub for this Python
    given = LocalLauncher(
        tritonserver=pytriton_server_dir() / "bin" / "tritonserver", backend_directory=bundled.backend_directory
    )
    given.preflight()
    assert given.backend_directory == bundled.backend_directory, "a given backend folder is used as it is"
    assert given.backends == frozenset({"python"})
    repository = make_repository(tmp_path / "repo", mlp_file, TrialConfig(4, "off", 1, "http", "fp32"))
    with given.start(repository, tmp_path / "server.log", {}, model_name="mlp") as server:
        assert infer_mlp(httpclient, server.endpoints.http, np.ones((1, 16), np.float32)).shape == (1, 4)


def test_a_backend_folder_without_python_or_onnxruntime_is_refused(tmp_path):
    from sweeper.errors import SweeperError
    from sweeper.launchers import LocalLauncher
    from sweeper.launchers._local import pytriton_server_dir

    (tmp_path / "empty").mkdir()
    launcher = LocalLauncher(
        tritonserver=pytriton_server_dir() / "bin" / "tritonserver", backend_directory=tmp_path / "empty"
    )
    with pytest.raises(SweeperError, match="has neither the python nor the onnxruntime backend"):
        launcher.preflight()
