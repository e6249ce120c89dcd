"""The docker launcher end to end against a real Docker engine and the local test image."""

from __future__ import annotations

import signal
import subprocess

import pandas as pd
import pytest
import yaml

import docker
from sweeper.cli import main
from tests.conftest import unloadable_onnx, write_spec
from tests.integration.conftest import E2E_SPEC, server_log_says, start_sweep, wait_for

STUDY_LABEL = "triton-sweeper.study"


def _spec(folder, model, docker_block: dict, *, name: str, trials: int = 3, extra: str = "") -> object:
    body = E2E_SPEC.replace("MODEL", str(model)).replace("name: e2e, trials: 3", f"name: {name}, trials: {trials}")
    body = body.replace("confirm_repeats: 1", "confirm_repeats: 0")  # the local suite confirms
    server = yaml.safe_dump({"server": {**docker_block, "startup_timeout_s": 60}})
    return write_spec(folder, body + server + extra)


def _containers(name: str) -> list:
    return docker.from_env().containers.list(all=True, filters={"label": f"{STUDY_LABEL}={name}"})


def test_three_trial_sweep_in_containers(tmp_path, mlp_file, docker_block):
    spec = _spec(tmp_path, mlp_file, docker_block, name="docker-e2e")
    body = spec.read_text().replace(  # a capacity over the levels measured anyway: no load is measured twice
        "constraints:\n", "constraints:\n  - {metric: capacity, percentile: p99_ms, budget_ms: 5000, min: 1}\n"
    )
    spec.write_text(body.replace("load:\n", "load:\n  capacity: {low: 1, high: 2, retakes: 0}\n"))
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    directory = tmp_path / "results" / "docker-e2e"
    trials = pd.read_csv(directory / "trials.csv")
    assert len(trials) == 3 and (trials["state"] == "COMPLETE").all()
    assert (trials["p50_ms@c1"] > 0).all() and (trials["throughput@c2"] > 0).all()
    measurements = pd.read_csv(directory / "measurements.csv")
    assert len(measurements) == 6 and (measurements["requests"] > 0).all()
    assert (trials["capacity@p99_ms<=5000:load"] == 2).all() and (trials["capacity@p99_ms<=5000"] > 0).all()
    log = (directory / "trials" / "0" / "server.log").read_text()
    assert "Started GRPCInferenceService at 127.0.0.1" in log  # streamed from the container
    assert _containers("docker-e2e") == []


def test_a_baseline_that_does_not_load_stops_the_run_with_the_container_log(tmp_path, docker_block, capsys):
    spec = _spec(tmp_path, unloadable_onnx(tmp_path / "broken.onnx"), docker_block, name="docker-broken", trials=3)
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 1, "a model that never loads"
    captured = capsys.readouterr()
    assert "FAILED: the server exited before it was ready" in captured.out and "exited with status 1" in captured.out
    assert "the baseline (trial 0) does not load, so the sweep stops" in captured.err
    assert "NoSuchOperator" in captured.err, "the server's own words"
    trials = pd.read_csv(tmp_path / "results" / "docker-broken" / "trials.csv")
    assert len(trials) == 1, "one fact, one failure: no other configuration pays for it"
    assert trials.loc[0, "state"] == "FAIL" and "NoSuchOperator" in trials.loc[0, "failure"]
    assert _containers("docker-broken") == []


def test_sigterm_mid_trial_leaves_no_container(tmp_path, mlp_file, docker_block):
    spec = _spec(tmp_path, mlp_file, docker_block, name="docker-term")
    spec.write_text(spec.read_text().replace("warmup_s: 0.1", "warmup_s: 30"))
    sweep = start_sweep(spec, tmp_path / "results")
    log = tmp_path / "results" / "docker-term" / "trials" / "0" / "server.log"
    wait_for(sweep, server_log_says(log, "Started GRPCInferenceService"), "trial 0 serving")
    assert len(_containers("docker-term")) == 1
    sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 143, err
    assert _containers("docker-term") == []


def test_stale_container_of_a_crashed_run_is_removed_at_start(tmp_path, mlp_file, docker_block, capsys):
    engine = docker.from_env()
    stale = engine.containers.create(
        docker_block["docker"]["image"],
        ["sleep", "600"],
        labels={STUDY_LABEL: "docker-stale", "triton-sweeper.trial": "0"},
        volumes={"/usr": {"bind": "/usr", "mode": "ro"}},
        network_mode="none",
    )
    stale.start()
    spec = _spec(tmp_path, mlp_file, docker_block, name="docker-stale", trials=1)
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    assert "removed 1 container(s) that an earlier run of 'docker-stale' left behind" in capsys.readouterr().out
    assert _containers("docker-stale") == []


def test_a_live_workers_container_is_not_a_leftover(tmp_path, mlp_file, docker_block):
    """Two sweepers sharing a study (PostgreSQL storage) must not remove each other's servers."""
    import socket

    from sweeper.launchers._docker import LABEL_OWNER

    engine = docker.from_env()
    other_worker = subprocess.Popen(["sleep", "120"])
    created = [
        engine.containers.create(
            docker_block["docker"]["image"],
            ["sleep", "600"],
            network_mode="none",
            labels={STUDY_LABEL: "docker-shared", LABEL_OWNER: f"{socket.gethostname()}:{pid}"},
        )
        for pid in (other_worker.pid, 2**22 + 1)  # a live process, and a pid no process has
    ]
    try:
        spec = _spec(tmp_path, mlp_file, docker_block, name="docker-shared", trials=1)
        assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
        assert [c.id for c in _containers("docker-shared")] == [created[0].id]
    finally:
        other_worker.kill()
        for container in _containers("docker-shared"):
            container.remove(force=True)


@pytest.mark.parametrize(
    "change, expected, hint",
    [
        (
            {"base_url": "unix:///nonexistent/docker.sock"},
            "cannot reach the Docker engine at unix:///nonexistent/docker.sock",
            "start the engine",
        ),
        (
            {"image": "sweeper-absent:1", "pull": "never"},
            "the image sweeper-absent:1 is not present and server.docker.pull is 'never'",
            "docker pull sweeper-absent:1",
        ),
        ({"image": "sweeper-absent:1", "pull": "missing"}, "pulling sweeper-absent:1 failed", "docker login"),
        (
            {"gpus": "all"},
            "server.docker.gpus is 'all' but the Docker engine has no NVIDIA runtime",
            "NVIDIA Container Toolkit",
        ),
    ],
)
def test_clear_errors_before_the_first_trial(tmp_path, mlp_file, docker_block, capsys, change, expected, hint):
    block = {**docker_block, "docker": {**docker_block["docker"], **change}}
    spec = _spec(tmp_path, mlp_file, block, name="docker-errors")
    status = main(["run", str(spec), "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert status == 1
    assert expected in err and hint in err and "Traceback" not in err
    assert not (tmp_path / "results" / "docker-errors" / "study.db").exists()
    assert _containers("docker-errors") == []


def test_docker_spec_is_validated(tmp_path, mlp_file, docker_block, capsys):
    block = {**docker_block, "docker": {**docker_block["docker"], "network": "bridge"}}
    spec = _spec(tmp_path, mlp_file, block, name="docker-bad")
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 2
    assert "server.docker.network" in capsys.readouterr().err
