"""`sweeper run` end to end on the real server: trials, failures, resume, CSVs, interruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest

from sweeper.cli import main
from tests.conftest import E2E_SPEC as SPEC
from tests.conftest import make_mlp_onnx, start_sweep_until_serving, write_spec



def test_run_writes_the_three_tables(swept):
    status, _, directory = swept
    assert status == 0
    trials = pd.read_csv(directory / "trials.csv")
    assert list(trials.columns[:8]) == [
        "number", "state", "baseline", "max_batch_size", "max_queue_delay_us", "instance_count", "protocol", "precision",
    ]
    for column in ("p50_ms@c1", "throughput@c2", "max_abs_error", "cosine_similarity",
                   "build_s", "start_s", "measure_s", "stop_s", "failure"):
        assert column in trials.columns
    assert len(trials) == 3 and (trials["state"] == "COMPLETE").all()
    assert trials.loc[0, "baseline"] and trials.loc[0, "max_batch_size"] == 8 and trials.loc[0, "protocol"] == "http"
    assert (trials["start_s"] > 0).all() and (trials["measure_s"] > 0).all() and (trials["stop_s"] > 0).all()

    measurements = pd.read_csv(directory / "measurements.csv")
    assert len(measurements) == 6 and sorted(measurements["concurrency"].unique()) == [1, 2]
    for column in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "throughput", "queue_ms", "compute_input_ms",
                   "compute_infer_ms", "compute_output_ms", "avg_batch_size", "stable"):
        assert column in measurements.columns
    # The 20 ms delay with batching on holds requests in the queue at concurrency 1.
    batched = measurements[(measurements["number"] == 0) & (measurements["concurrency"] == 1)].iloc[0]
    assert batched["queue_ms"] > 15

    pareto = pd.read_csv(directory / "pareto.csv")
    assert list(pareto.columns) == list(trials.columns)
    assert 1 <= len(pareto) <= 3 and pareto["feasible"].all()
    for name in ("config.pbtxt", "server.log"):
        assert (directory / "trials" / "0" / name).is_file()


def test_rerun_resumes_the_study(swept, capsys):
    _, spec, directory = swept
    assert main(["run", str(spec), "--results-dir", str(directory.parent), "--trials", "4"]) == 0
    trials = pd.read_csv(directory / "trials.csv")
    assert list(trials["number"]) == [0, 1, 2, 3]
    assert trials["baseline"].sum() == 1
    assert "Pareto front of 'e2e'" in capsys.readouterr().out


def test_failed_trial_is_recorded_with_its_reason_and_the_study_goes_on(tmp_path):
    """A model exported without a dynamic batch axis fails once the batcher groups requests."""
    model = make_mlp_onnx(tmp_path / "fixed.onnx", dynamic_batch=False)
    body = SPEC.replace("MODEL", str(model)).replace("name: e2e, trials: 3", "name: fails, trials: 2")
    body = body.replace("protocol: [http, grpc]", "protocol: [grpc]").replace("protocol: http}", "protocol: grpc}")
    spec = write_spec(tmp_path, body)
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    trials = pd.read_csv(tmp_path / "results" / "fails" / "trials.csv").set_index("max_batch_size")
    assert trials.loc[8, "state"] == "FAIL"
    assert "inference failed at concurrency 2" in trials.loc[8, "failure"]
    assert trials.loc[1, "state"] == "COMPLETE" and pd.isna(trials.loc[1, "failure"])


def test_accuracy_tolerance_makes_trials_infeasible(tmp_path, mlp_onnx):
    body = SPEC.replace("MODEL", str(mlp_onnx)).replace("name: e2e, trials: 3", "name: acc, trials: 2")
    body = body.replace("precision: [fp32]", "precision: [fp32, int8]").replace("max_batch_size: [1, 8]", "max_batch_size: [8]")
    body = body.replace("protocol: [http, grpc]", "protocol: [http]") + "accuracy: {min_cosine_similarity: 0.999999999}\n"
    spec = write_spec(tmp_path, body)
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    trials = pd.read_csv(tmp_path / "results" / "acc" / "trials.csv").set_index("precision")
    assert trials.loc["int8", "state"] == "COMPLETE" and not trials.loc["int8", "feasible"]
    assert "int8 cosine similarity" in trials.loc["int8", "infeasible"]
    assert trials.loc["fp32", "feasible"]
    pareto = pd.read_csv(tmp_path / "results" / "acc" / "pareto.csv")
    assert list(pareto["precision"]) == ["fp32"]


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_trial_stops_the_server(tmp_path, mlp_onnx, sig, status):
    body = SPEC.replace("MODEL", str(mlp_onnx)).replace("warmup_s: 0.3", "warmup_s: 30")
    spec = write_spec(tmp_path, body)
    results = tmp_path / "results"
    sweep = start_sweep_until_serving(spec, results, "e2e")
    time.sleep(1)  # now measuring (the warm-up lasts 30 s)
    sweep.send_signal(sig)
    out, err = sweep.communicate(timeout=60)
    assert sweep.returncode == status, err
    assert "Traceback" not in err
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert [pid for pid in left if int(pid) != os.getpid()] == []
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{results / 'e2e' / 'study.db'}")
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    trials = pd.read_csv(results / "e2e" / "trials.csv")
    assert trials.loc[0, "failure"] == "interrupted before it finished"


def test_resume_fails_a_trial_that_a_killed_run_left_running(tmp_path, mlp_onnx):
    spec = write_spec(tmp_path, SPEC.replace("MODEL", str(mlp_onnx)).replace("trials: 3", "trials: 2"))
    results = tmp_path / "results"
    storage = f"sqlite:///{results / 'e2e' / 'study.db'}"
    (results / "e2e").mkdir(parents=True)
    killed = optuna.create_study(study_name="e2e", storage=storage, directions=["minimize", "maximize"])
    # What a SIGKILLed run leaves: the baseline trial, its knobs drawn, in state RUNNING.
    killed.enqueue_trial({"max_batch_size": 8, "max_queue_delay_us": 20000, "instance_count": 1,
                          "protocol": "http", "precision": "fp32"}, user_attrs={"baseline": True})
    trial = killed.ask()
    for knob, choices in [("max_batch_size", [1, 8]), ("max_queue_delay_us", [20000]), ("instance_count", [1]),
                          ("protocol", ["http", "grpc"]), ("precision", ["fp32"])]:
        trial.suggest_categorical(knob, choices)
    assert main(["run", str(spec), "--results-dir", str(results)]) == 0
    trials = optuna.load_study(study_name="e2e", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    # The baseline was never measured: it is enqueued again and measured this time.
    assert trials[1].user_attrs.get("baseline") and trials[1].params == trials[0].params


def test_storage_errors_are_one_line_without_the_password(tmp_path, mlp_onnx, capsys):
    spec = write_spec(tmp_path, SPEC.replace("MODEL", str(mlp_onnx)))
    results = tmp_path / "results"
    assert main(["run", str(spec), "--results-dir", str(results), "--storage", "not a url"]) == 2
    assert "not a database URL: 'not a url'" in capsys.readouterr().err
    assert not results.exists()
    status = main(["run", str(spec), "--results-dir", str(results), "--storage", "postgresql://me:s3cret@127.0.0.1:9/db"])
    err = capsys.readouterr().err
    assert status == 1
    assert "storage postgresql://me:***@127.0.0.1:9/db" in err and "s3cret" not in err and "Traceback" not in err


def test_two_workers_share_a_postgresql_study(tmp_path, mlp_onnx, postgres_url):
    """Two sweepers, one study in a real PostgreSQL: the trials are shared, not run twice."""
    spec = write_spec(tmp_path, SPEC.replace("MODEL", str(mlp_onnx)).replace("trials: 3", "trials: 4"))
    command = [sys.executable, "-m", "sweeper.cli", "run", str(spec), "--storage", postgres_url, "--results-dir"]
    first = subprocess.Popen([*command, str(tmp_path / "a")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "a" / "e2e" / "trials" / "0" / "server.log"
    deadline = time.monotonic() + 60
    while not log.is_file():  # the first worker has enqueued the baseline and started it
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.2)
    second = subprocess.run([*command, str(tmp_path / "b")], capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    trials = optuna.load_study(study_name="e2e", storage=postgres_url).trials
    assert 4 <= len(trials) <= 5  # each worker may finish the trial it had started
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1
    ran_in = {n: w for w in ("a", "b") for n in pd.read_csv(tmp_path / w / "e2e" / "trials.csv")["number"]
              if (tmp_path / w / "e2e" / "trials" / str(n)).is_dir()}
    assert set(ran_in.values()) == {"a", "b"}, "both workers measured trials"
