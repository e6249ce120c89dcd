"""Faults on the real parts: killed workers, concurrent runs, killed sweepers and servers, a full
disk, an unwritable folder, signals in every phase of a trial. Nothing is lost and nothing is
left behind (the autouse check in conftest fails any test that leaves a server, a container or
shared memory)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from sweeper.cli import main
from sweeper.record import kind_of
from tests.conftest import write_spec
from tests.integration.conftest import leftovers, server_log_says, start_sweep, tritonservers, wait_for

SPEC = """
study: {name: faults, trials: TRIALS, sampler: grid, heartbeat_s: 1, confirm_repeats: 0, anchor_every: 0}
model: {name: mlp, source: {onnx: MODEL}}
search_space:
  max_batch_size: [8]
  max_queue_delay_us: [off, 0]
  protocol: [http, grpc]
baseline: {max_batch_size: 8, max_queue_delay_us: 0, instance_count: 1, protocol: http}
load: {generator: builtin, concurrency: [1], warmup_s: WARMUP, window_s: 0.2, stability_tolerance: 1.0, max_windows: 3}
objectives:
  - {metric: p50_ms, concurrency: 1, direction: minimize}
"""


def _spec(folder: Path, model: Path, *, trials: int = 2, warmup: float = 0.2, extra: str = "") -> Path:
    body = SPEC.replace("MODEL", str(model)).replace("TRIALS", str(trials)).replace("WARMUP", str(warmup))
    return write_spec(folder, body + extra)


def _gone_within(seconds: float, before: dict[str, set[str]]) -> float:
    """Seconds until nothing beyond ``before`` is left (``leftovers``)."""
    started = time.monotonic()
    while True:
        now = leftovers()
        left = {kind: now[kind] - found for kind, found in before.items() if now[kind] - found}
        if not left:
            return time.monotonic() - started
        if time.monotonic() - started > seconds:
            raise AssertionError(f"left after {seconds} s: {left}")
        time.sleep(0.1)


def _study(directory: Path) -> optuna.Study:
    return optuna.load_study(study_name="faults", storage=f"sqlite:///{directory / 'study.db'}")


@pytest.mark.parametrize("launcher", ["local", "docker"])
def test_kill_9_of_the_sweeper_leaves_nothing_and_the_trial_is_rerun(tmp_path, mlp_file, launcher, docker_block):
    extra = "" if launcher == "local" else yaml.safe_dump({"server": {**docker_block, "startup_timeout_s": 60}})
    spec = _spec(tmp_path, mlp_file, warmup=30, extra=extra)
    results = tmp_path / "results"
    before = leftovers()
    sweep = start_sweep(spec, results)
    wait_for(
        sweep,
        server_log_says(results / "faults" / "trials" / "0" / "server.log", "Started GRPCInferenceService"),
        "trial 0 serving",
    )
    time.sleep(0.5)
    sweep.kill()
    sweep.communicate(timeout=30)
    seconds = _gone_within(15, before)
    print(f"{launcher}: nothing left {seconds:.1f} s after kill -9")
    # Resume: the killed run's trial is failed as interrupted and measured again.
    fast = _spec(tmp_path, mlp_file, extra=extra)
    assert main(["run", str(fast), "--results-dir", str(results)]) == 0
    trials = _study(results / "faults").trials
    assert [kind_of(t) for t in trials] == ["interrupted", "complete", "complete"]
    assert trials[2].user_attrs.get("retry_of") == 0 or trials[1].user_attrs.get("retry_of") == 0
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 2


@pytest.mark.slow
def test_a_server_aborted_mid_measurement_is_measured_again_on_a_fresh_one(tmp_path, mlp_file):
    """SIGABRT, as the python backend's intermittent crash under large concurrent payloads
    (triton-inference-server/server#8882) ends the server: no verdict on the configuration."""
    spec = _spec(tmp_path, mlp_file, trials=2, warmup=2)
    results = tmp_path / "results"
    sweep = start_sweep(spec, results)
    log = results / "faults" / "trials" / "0" / "server.log"
    wait_for(sweep, server_log_says(log, "Started GRPCInferenceService"), "trial 0 serving")
    time.sleep(1)
    server = [line.split()[0] for line in tritonservers() if str(results) in line]
    assert len(server) == 1
    os.kill(int(server[0]), signal.SIGABRT)
    out, err = sweep.communicate(timeout=180)
    assert sweep.returncode == 0, err
    trials = pd.read_csv(results / "faults" / "trials.csv").set_index("number")
    assert trials.loc[0, "state"] == "COMPLETE" and trials.loc[0, "p50_ms@c1"] > 0, "measured on a fresh server"
    assert "the server was killed by signal 6 (SIGABRT)" in trials.loc[0, "retried"]
    assert "measured again" in out
    assert (log.parent / "server.attempt-1.log").is_file() and log.is_file(), "both servers' logs are kept"
    assert len(trials) == 2 and trials.loc[1, "state"] == "COMPLETE" and pd.isna(trials.loc[1, "retried"])


def test_a_worker_killed_on_postgresql_has_its_trial_rerun_by_another(tmp_path, mlp_file, postgres_url):
    spec = _spec(tmp_path, mlp_file, trials=2, warmup=20)
    (tmp_path / "b").mkdir()
    fast = _spec(tmp_path / "b", mlp_file, trials=2, warmup=0.2)
    first = start_sweep(spec, tmp_path / "a", "--storage", postgres_url)
    wait_for(
        first,
        server_log_says(tmp_path / "a" / "faults" / "trials" / "0" / "server.log", "Started GRPCInferenceService"),
        "worker a serving trial 0",
    )
    first.kill()
    first.communicate(timeout=30)
    killed_at = time.monotonic()
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "sweeper.cli",
            "run",
            str(fast),
            "--results-dir",
            str(tmp_path / "b"),
            "--storage",
            postgres_url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr
    trials = optuna.load_study(study_name="faults", storage=postgres_url).trials
    kinds = [kind_of(t) for t in trials]
    assert kinds.count("running") == 0 and kinds.count("complete") == 2
    assert kinds[0] == "interrupted", "the dead worker's trial was failed by its stopped heartbeat"
    retry = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    assert retry[0].params == trials[0].params
    print(f"dead worker's trial re-run and the study done {time.monotonic() - killed_at:.1f} s after kill -9")


def test_two_runs_of_one_sqlite_study_the_second_is_refused(tmp_path, mlp_file):
    spec = _spec(tmp_path, mlp_file, trials=2, warmup=3)
    results = tmp_path / "results"
    first = start_sweep(spec, results)
    wait_for(
        first,
        server_log_says(results / "faults" / "trials" / "0" / "server.log", "Started GRPCInferenceService"),
        "the first run serving",
    )
    second = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "run", str(spec), "--results-dir", str(results)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 2
    assert "study 'faults' is being run by another sweeper (pid" in second.stderr and "Traceback" not in second.stderr
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    trials = _study(results / "faults").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2, "the first run lost nothing"


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_destroys_nothing(small_disk, tmp_path, mlp_file, capsys):
    spec = _spec(tmp_path, mlp_file, trials=1)
    assert main(["run", str(spec), "--results-dir", str(small_disk)]) == 0
    directory = small_disk / "faults"
    tables_before = (directory / "trials.csv").read_text()
    report_before = (directory / "report.html").stat().st_size
    capsys.readouterr()
    filler = small_disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=100"], capture_output=True)
    status = main(["run", str(spec), "--results-dir", str(small_disk), "--trials", "3"])
    err = capsys.readouterr().err
    assert status == 1
    assert "No space left on device" in err or "disk is full" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert (directory / "trials.csv").read_text() == tables_before, "the tables that existed are intact"
    assert (directory / "report.html").stat().st_size == report_before
    assert not list(directory.glob(".*.tmp")), "no partial file is left"
    filler.unlink()
    assert main(["run", str(spec), "--results-dir", str(small_disk), "--trials", "3"]) == 0
    trials = _study(directory).trials
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 3
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]


def test_an_unwritable_results_folder_is_refused_before_anything(tmp_path, mlp_file, capsys):
    mount = tmp_path / "read-only"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], check=True)
    try:
        spec = _spec(tmp_path, mlp_file)
        assert main(["run", str(spec), "--results-dir", str(mount / "results")]) == 2
        err = capsys.readouterr().err
        assert f"--results-dir {mount / 'results'}: {mount} is not writable" in err and "Traceback" not in err
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _slow_start_model(root: Path) -> Path:
    """A python-backend model whose instances take 4 s to initialize: a long start phase."""
    folder = root / "slow"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(
        'name: "slow" backend: "python" max_batch_size: 8 '
        'input [{ name: "x" data_type: TYPE_FP32 dims: [16] }] output [{ name: "y" data_type: TYPE_FP32 dims: [16] }] '
        "instance_group [{ count: 1 kind: KIND_CPU }]"
    )
    (folder / "1" / "model.py").write_text(
        "import time\nimport triton_python_backend_utils as pb_utils\n"
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n        time.sleep(4)\n"
        "    def execute(self, requests):\n"
        "        return [pb_utils.InferenceResponse([pb_utils.Tensor('y', pb_utils.get_input_tensor_by_name(r, 'x').as_numpy())])"
        " for r in requests]\n"
    )
    return folder


def _big_mlp(path: Path) -> Path:
    from sweeper.examples import mlp_onnx

    return mlp_onnx(path, features=2048, hidden=4096, outputs=2048)  # its INT8 conversion takes ~3.5 s here


# Each phase once, each signal at least once: how a signal is turned into an unwinding exit is one
# path for both (tests/unit/test_signals.py); what a phase leaves behind is the phase's.
PHASES = [("build", signal.SIGTERM, 143), ("start", signal.SIGTERM, 143), ("measure", signal.SIGINT, 130)]


@pytest.mark.parametrize("phase, sig, status", PHASES)
def test_a_signal_in_each_phase_stops_cleanly_and_the_trial_is_rerun(tmp_path, mlp_file, phase, sig, status):
    results = tmp_path / "results"
    directory = results / "faults"
    if phase == "build":  # converting a larger model to INT8 takes a while
        spec = _spec(tmp_path, _big_mlp(tmp_path / "big.onnx"), trials=1).read_text()
        spec = spec.replace("search_space:", "search_space:\n  precision: [int8]").replace(
            "protocol: http}", "protocol: http, precision: int8}"
        )
        spec_path = write_spec(tmp_path, spec)
        seen = lambda: (directory / "models" / "int8").is_dir()  # noqa: E731
    elif phase == "start":
        model = _slow_start_model(tmp_path / "models")
        spec_path = write_spec(
            tmp_path,
            SPEC.replace("{onnx: MODEL}", f"{{repository: {model}}}")
            .replace("TRIALS", "1")
            .replace("WARMUP", "0.2")
            .replace("name: mlp, ", ""),
        )
        seen = server_log_says(directory / "trials" / "0" / "server.log", "TRITONBACKEND_ModelInstanceInitialize")
    else:
        spec_path = _spec(tmp_path, mlp_file, trials=1, warmup=30)
        seen = server_log_says(directory / "trials" / "0" / "server.log", "Started GRPCInferenceService")
    before = leftovers()
    sweep = start_sweep(spec_path, results)
    wait_for(sweep, seen, f"the {phase} phase", timeout_s=120)
    if phase != "build":
        time.sleep(0.3)
    sweep.send_signal(sig)
    out, err = sweep.communicate(timeout=60)
    assert sweep.returncode == status, err[-3000:]
    assert "Traceback" not in err
    _gone_within(5, before)
    trials = _study(directory).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL and kind_of(trials[0]) == "interrupted"
    assert "interrupted" in pd.read_csv(directory / "trials.csv").loc[0, "failure"]
    if phase == "build":  # the signal landed inside the conversion: it never finished, no server started
        assert not (directory / "models" / "int8" / "accuracy.json").exists()
        assert not (directory / "trials" / "0" / "server.log").exists()
    if phase == "measure":  # and on resume it is measured again
        quick = _spec(tmp_path, mlp_file, trials=1)
        assert main(["run", str(quick), "--results-dir", str(results)]) == 0
        assert [kind_of(t) for t in _study(directory).trials] == ["interrupted", "complete"]


def test_a_signal_during_the_servers_stop_leaves_nothing(tmp_path, mlp_file):
    """The stop phase lasts milliseconds: a child process arms a 1 ms timer whose handler
    raises KeyboardInterrupt just before it stops its server, so the real signal lands inside
    (or right around) the real stop; then it exits. Whatever the stop had not done, the
    watchdog does. The timer fires once: a repeating one also lands in the script's own
    ``except`` and in the interpreter's shutdown, which then dies of SIGALRM (exit -14)."""
    script = tmp_path / "stop.py"
    script.write_text(f"""
import signal, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from sweeper.launchers import LocalLauncher
from tests.repositories import make_repository
from sweeper.vocabulary import TrialConfig
launcher = LocalLauncher()
launcher.preflight()
repository = make_repository(Path({str(tmp_path / "repo")!r}), Path({str(mlp_file)!r}), TrialConfig(4, "off", 2, "http", "fp32"))
server = launcher.start(repository, Path({str(tmp_path / "server.log")!r}), {{}}, model_name="mlp")
print("serving", flush=True)
def interrupt(*args):
    raise KeyboardInterrupt
signal.signal(signal.SIGALRM, interrupt)
signal.setitimer(signal.ITIMER_REAL, 0.001)
try:
    server.stop()
    while True:
        pass
except KeyboardInterrupt:
    sys.exit(130)
""")
    before = leftovers()
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 130 and "serving" in done.stdout, done.stderr
    _gone_within(10, before)
    assert shutil.which("pgrep")


@pytest.mark.slow
def test_reload_mode_restarts_a_server_that_died(tmp_path, mlp_file):
    spec = _spec(tmp_path, mlp_file, trials=2, warmup=2, extra="server: {reuse: reload}\n")
    results = tmp_path / "results"
    sweep = start_sweep(spec, results)
    wait_for(
        sweep,
        server_log_says(results / "faults" / "reload" / "server-1.log", "successfully loaded 'mlp__t0'"),
        "trial 0 loaded into the study's server",
    )
    time.sleep(1)
    (server,) = [line.split()[0] for line in tritonservers() if str(results) in line]
    os.kill(int(server), signal.SIGKILL)
    out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 0, err
    trials = pd.read_csv(results / "faults" / "trials.csv").set_index("number")
    assert trials.loc[0, "state"] == "COMPLETE", "measured again, on a new study server"
    assert "killed by signal 9" in trials.loc[0, "retried"]
    assert trials.loc[1, "state"] == "COMPLETE" and trials.loc[1, "reuse"] == "reload"
    assert (results / "faults" / "reload" / "server-2.log").is_file(), "a new server after the death"


LOST = """
study: {name: lost, trials: 2, sampler: grid, confirm_repeats: 0, anchor_every: 0}
model: {name: mlp, source: {onnx: MODEL}}
search_space:
  max_batch_size: [8]
  max_queue_delay_us: [0]
  protocol: [grpc]
  server:
    --grpc-max-connection-age: [400]
baseline: {max_batch_size: 8, max_queue_delay_us: 0, instance_count: 1, protocol: grpc}
load: {generator: builtin, concurrency: [1], warmup_s: 0.2, window_s: 0.2, stability_tolerance: 1.0, max_windows: 3}
objectives:
  - {metric: p50_ms, concurrency: 1, direction: minimize}
"""


def test_a_load_generator_that_loses_its_connection_is_measured_again_before_it_counts(tmp_path, mlp_file, capsys):
    """The server lives on but closes the load generator's connection under it (GOAWAY: it
    closes connections older than 400 ms): no verdict on the first loss. The trial is measured
    again on a fresh server, both logs kept; the loss repeats, so only then is it the
    configuration's failure, and trials.csv says both."""
    spec = write_spec(tmp_path, LOST.replace("MODEL", str(mlp_file)))
    results = tmp_path / "results"
    assert main(["run", str(spec), "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    trials = pd.read_csv(results / "lost" / "trials.csv").set_index("number")
    assert trials.loc[0, "state"] == "COMPLETE" and pd.isna(trials.loc[0, "retried"]), (
        "the baseline keeps its connection"
    )
    aged = trials.loc[1]
    assert aged["state"] == "FAIL" and "GOAWAY" in aged["retried"] and "GOAWAY" in aged["failure"], aged.to_dict()
    assert "FAILED (measured twice; the first time: " in out
    folder = results / "lost" / "trials" / "1"
    assert (folder / "server.attempt-1.log").is_file() and (folder / "server.log").is_file()
