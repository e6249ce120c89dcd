"""The study loop without servers: every sampler, every seed, no configuration measured twice.

The objective looks each configuration up in a table (as benchmarks/search_efficiency.py
does), so the loop, the redraw of repeated proposals, the retry of interrupted trials and the
stop on an exhausted space run for real on a real Optuna storage.
"""

from __future__ import annotations

import signal
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.errors import TrialError
from sweeper.record import TrialWriter, kind_of
from sweeper.samplers import SAMPLERS
from sweeper.search import config_key, counted, planned_params
from sweeper.signals import Terminated, clear_stop, signals_unwind
from sweeper.spec import load_spec
from sweeper.storage import open_storage
from sweeper.study import (
    Proposer,
    capacity_starts,
    enqueue_baseline,
    fail_abandoned,
    open_study,
    requeue_interrupted,
    run_study,
)
from tests.conftest import signal_at_first_commit, write_spec

SPEC = """
study: {name: loop, trials: TRIALS, sampler: SAMPLER, seed: SEED}
model: {name: mlp, source: {onnx: MODEL}}
search_space:
  max_batch_size: [8]
  max_queue_delay_us: [off, 0, 100]
  instance_count: [1]
  protocol: [http, grpc]
  precision: [fp32]
baseline: {max_batch_size: 8, max_queue_delay_us: 0, instance_count: 1, protocol: http}
objectives:
  - {metric: p50_ms, concurrency: 1, direction: minimize}
  - {metric: throughput, concurrency: 1, direction: maximize}
"""


def _loaded(tmp_path, mlp_file, sampler="tpe", seed=0, trials=6):
    body = SPEC.replace("MODEL", str(mlp_file)).replace("SAMPLER", sampler).replace("SEED", str(seed))
    return load_spec(write_spec(tmp_path, body.replace("TRIALS", str(trials))))


def _values(params: dict) -> tuple[float, float]:
    """A made-up but deterministic measurement of a configuration."""
    delay = {"off": 0, 0: 1, 100: 2}[params["max_queue_delay_us"]]
    grpc = params["protocol"] == "grpc"
    return 1.0 + delay * 0.3 + grpc * 0.1, 1000.0 + 400 * delay - 150 * grpc


def _replay(loaded, url=None):
    """The study loop over made-up measurements; Optuna's in-memory storage unless ``url`` names
    a database (the sampler tests: SQLite's commits cost 25x the loop itself here)."""
    storage = open_storage(url, loaded.spec.study.heartbeat_s) if url else optuna.storages.InMemoryStorage()
    study = open_study(loaded, storage)
    propose = Proposer(loaded)

    def objective(trial):
        return _values(propose(trial).as_dict())

    return run_study(study, loaded, None, storage, exclusive=True, objective=objective)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("seed", [0, 11])
def test_trials_equal_to_the_space_measure_every_configuration_once(tmp_path, mlp_file, sampler, seed):
    loaded = _loaded(tmp_path, mlp_file, sampler, seed)
    study, outcome = _replay(loaded)
    measured = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(measured) == 6 == loaded.space_size
    assert len({config_key(t.params) for t in measured}) == 6, "no configuration measured twice"
    assert measured[0].params == loaded.baseline.as_dict()
    assert all(t.state == TrialState.COMPLETE for t in study.trials), "a repeated proposal is no trial"
    assert outcome == "done"


def test_more_trials_than_the_space_stops_when_exhausted(tmp_path, mlp_file):
    loaded = _loaded(tmp_path, mlp_file, "random", 3, trials=10)
    study, outcome = _replay(loaded, f"sqlite:///{tmp_path / 'study.db'}")
    assert outcome == "exhausted"
    assert counted(study.trials) == 6


def test_a_precision_that_cannot_serve_the_model_costs_one_trial_and_counts_for_none(tmp_path, mlp_file):
    """INT8 is tried first and found unable to serve (as a build that changes no operator is):
    its other configurations are never proposed, and the 4 trials are 4 FP32 configurations."""
    body = SPEC.replace("MODEL", str(mlp_file)).replace("SAMPLER", "random").replace("SEED", "0")
    loaded = load_spec(write_spec(tmp_path, body.replace("TRIALS", "4").replace("[fp32]", "[fp32, int8]")))
    storage = optuna.storages.InMemoryStorage()
    study = open_study(loaded, storage)
    study.enqueue_trial({**loaded.baseline.as_dict(), "precision": "int8", "protocol": "grpc"})
    propose = Proposer(loaded)

    def objective(trial):
        config = propose(trial)
        if config.precision == "int8":
            writer = TrialWriter(trial)
            writer.failed("int8 changes no operator of this model", "build")
            writer.precision_dropped("int8", "int8 changes no operator of this model")
            raise TrialError("int8 changes no operator of this model")
        return _values(config.as_dict())

    run_study(study, loaded, None, storage, exclusive=True, objective=objective)
    tried = [t for t in study.trials if kind_of(t) in ("complete", "failed")]
    assert [t.params["precision"] for t in tried].count("int8") == 1, "found once"
    assert sum(t.state == TrialState.COMPLETE for t in tried) == 4, "the verdict took none of the 4 trials"
    assert counted(study.trials) == 4


def test_a_seeded_sampler_repeats_its_proposals(tmp_path, mlp_file):
    """Seed 0 is a seed: the same spec gives the same sequence of configurations."""
    sequences = []
    for run in range(2):
        folder = tmp_path / str(run)
        folder.mkdir()
        loaded = _loaded(folder, mlp_file, "tpe", 0, trials=4)
        study, _ = _replay(loaded)
        sequences.append([t.params for t in study.trials if t.state == TrialState.COMPLETE])
    assert len(sequences[0]) == 4 and sequences[0] == sequences[1]


def _failed_trial(study, loaded, attrs, **knobs):
    study.enqueue_trial({**loaded.baseline.as_dict(), **knobs})
    trial = study.ask()
    for knob, choices in loaded.space.items():
        trial.suggest_categorical(knob, choices)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    study.tell(trial, state=TrialState.FAIL)


def test_interrupted_trial_is_rerun_and_a_failed_one_is_not(tmp_path, mlp_file):
    loaded = _loaded(tmp_path, mlp_file, "random", 0, trials=4)
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", 10)
    study = open_study(loaded, storage)
    _failed_trial(study, loaded, {"interrupted": "KeyboardInterrupt", "neighbour_of": 3}, max_queue_delay_us="off")
    _failed_trial(study, loaded, {"failure": "the model did not load"}, protocol="grpc")
    assert [kind_of(t) for t in study.get_trials()] == ["interrupted", "failed"]
    assert requeue_interrupted(study) == [0]
    assert requeue_interrupted(study) == [], "queued once"
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == 0
    assert waiting[0].user_attrs["neighbour_of"] == 3, "a neighbour's re-run is still the knee's neighbour"
    assert planned_params(waiting[0])["max_queue_delay_us"] == "off"


def test_a_killed_runs_running_trial_is_failed_under_the_lock(tmp_path, mlp_file):
    loaded = _loaded(tmp_path, mlp_file)
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", 10)
    study = open_study(loaded, storage)
    Proposer(loaded)(study.ask())  # what a SIGKILLed run leaves: a proposed trial in state RUNNING
    fail_abandoned(study, storage, exclusive=True)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.FAIL and kind_of(trial) == "interrupted"


def test_a_trial_killed_before_its_proposal_waits_again_and_the_grid_goes_on(tmp_path, mlp_file):
    """Killed inside ``study.ask()``: RUNNING without parameters. Failed, it would end the next
    grid run in BruteForceSampler's 'param_name mismatch'; it is run as planned instead."""
    loaded = _loaded(tmp_path, mlp_file, "grid", 0, trials=6)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = open_storage(url, 10)
    study = open_study(loaded, storage)
    enqueue_baseline(study, loaded.baseline)
    study.ask()
    fail_abandoned(study, storage, exclusive=True)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.WAITING and trial.user_attrs == {"baseline": True}
    study, outcome = _replay(loaded, url)
    assert outcome == "done"
    first = study.trials[0]
    assert first.state == TrialState.COMPLETE and first.params == loaded.baseline.as_dict()
    assert len({config_key(t.params) for t in study.trials if t.state == TrialState.COMPLETE}) == 6


def test_a_signal_during_the_proposal_lands_after_the_last_suggestion(tmp_path, mlp_file):
    """A real SIGTERM, sent from inside the first suggestion's database commit (the storage
    defers it to the write's end), reaches the sweep only once every knob is suggested; the
    resumed grid then measures the whole space."""
    loaded = _loaded(tmp_path, mlp_file, "grid", 0, trials=6)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = open_storage(url, 10)
    study = open_study(loaded, storage)
    propose = Proposer(loaded)
    sent: list[bool] = []

    def objective(trial):
        nonlocal sent
        if trial.number == 2:
            sent = signal_at_first_commit(storage, signal.SIGTERM)
        return _values(propose(trial).as_dict())

    with signals_unwind(), pytest.raises(Terminated):
        run_study(study, loaded, None, storage, exclusive=True, objective=objective)
    clear_stop()  # as the next command starts
    cut = study.trials[2]
    assert sent and cut.state == TrialState.FAIL and set(cut.params) == set(loaded.space)
    study, outcome = _replay(loaded, url)
    assert outcome == "done"
    assert len({config_key(t.params) for t in study.trials if t.state == TrialState.COMPLETE}) == 6


def test_every_sampler_name_builds_its_sampler(mlp_file, tmp_path):
    from sweeper.samplers import make_sampler

    expected = {
        "tpe": "TPESampler",
        "nsga2": "NSGAIISampler",
        "gp": "GPSampler",
        "random": "RandomSampler",
        "grid": "BruteForceSampler",
    }
    assert set(expected) == set(SAMPLERS)
    for name, cls in expected.items():
        assert type(make_sampler(name, 0, 6)).__name__ == cls
    assert isinstance(make_sampler("tpe", None, 6), optuna.samplers.TPESampler)


def test_with_max_batch_size_1_the_delays_are_one_configuration(tmp_path, mlp_file):
    """A batch of one is full at once: mbs 1 with delay 0 or 100 serve alike and count once;
    off stays apart. 2 sizes x 3 delays x 2 protocols = 12 combinations, 10 distinct."""
    body = SPEC.replace("max_batch_size: [8]", "max_batch_size: [1, 8]")
    body = body.replace("MODEL", str(mlp_file)).replace("SAMPLER", "random").replace("SEED", "0")
    loaded = load_spec(write_spec(tmp_path, body.replace("TRIALS", "20")))
    assert loaded.space_size == 10
    study, outcome = _replay(loaded)
    measured = [t.params for t in study.trials if t.state == TrialState.COMPLETE]
    assert outcome == "exhausted" and len(measured) == 10
    single = [(p["max_queue_delay_us"], p["protocol"]) for p in measured if p["max_batch_size"] == 1]
    assert sorted(p for d, p in single if d == "off") == ["grpc", "http"]
    assert sorted(p for d, p in single if d != "off") == ["grpc", "http"], "one delay per protocol, not two"
    assert config_key({**measured[0], "max_batch_size": 1, "max_queue_delay_us": 0}) == config_key(
        {**measured[0], "max_batch_size": 1, "max_queue_delay_us": 100}
    )
    assert config_key({**measured[0], "max_batch_size": 8, "max_queue_delay_us": 0}) != config_key(
        {**measured[0], "max_batch_size": 8, "max_queue_delay_us": 100}
    )


def test_a_capacity_search_starts_where_the_most_similar_configuration_held_the_budget():
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import create_trial

    column = "capacity@p99_ms<=10"

    def done(number, mbs, instances, protocol, load):
        params = {"max_batch_size": mbs, "instance_count": instances, "protocol": protocol}
        distributions = {
            "max_batch_size": CategoricalDistribution([1, 8, 32]),
            "instance_count": CategoricalDistribution([1, 2]),
            "protocol": CategoricalDistribution(["http", "grpc"]),
        }
        capacities = [{"column": column, "load": load, "throughput": load * 100.0, "tried": [1.0], "note": None}]
        trial = create_trial(
            state=TrialState.COMPLETE,
            params=params,
            distributions=distributions,
            user_attrs={"capacities": capacities},
            values=[1.0],
        )
        trial.number = number
        return trial

    trials = [
        done(0, 8, 1, "http", 12),
        done(1, 32, 2, "grpc", 40),
        done(2, 32, 1, "http", 24),
        done(3, 1, 1, "grpc", 0),
    ]
    want = {"max_batch_size": 32, "instance_count": 2, "protocol": "http"}
    assert capacity_starts(trials, want, [column]) == {column: 40}, (
        "same batch size and instances outweigh the protocol"
    )
    assert capacity_starts(trials, {"max_batch_size": 1, "instance_count": 1, "protocol": "grpc"}, [column]) == {
        column: 24
    }, "a capacity of 0 says nothing of where to start; among equally similar ones the latest"
    assert capacity_starts(trials[3:], want, [column]) == {}, "nothing held the budget: double up from low"
    assert capacity_starts([], want, [column]) == {}


PREVIOUS = Path(__file__).with_name("fixtures") / "previous-release"
"""A study.db the previous release's loop wrote (make_fixture.py beside it, run on commit
4d4d83e's tree): 4 trials of TPE on this file's spec, trial 1 a FAIL-marked repeat of trial 0."""


def test_a_study_the_previous_release_started_reads_as_before_and_resumes_without_repeats(tmp_path, mlp_file):
    import shutil

    import pandas as pd

    from sweeper.record import read_study
    from sweeper.results import tables

    shutil.copy(PREVIOUS / "study.db", tmp_path / "study.db")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    loaded = _loaded(tmp_path, mlp_file, "tpe", 0, trials=6)
    stored = optuna.load_study(study_name="loop", storage=open_storage(url, loaded.spec.study.heartbeat_s))
    expected = pd.read_csv(PREVIOUS / "trials.csv")
    tables(read_study(stored)).trials.to_csv(tmp_path / "trials.csv", index=False)
    read = pd.read_csv(tmp_path / "trials.csv")
    pd.testing.assert_frame_equal(read[expected.columns], expected)
    study, outcome = _replay(loaded, url)
    assert [t.number for t in study.trials if kind_of(t) == "duplicate"] == [1], (
        "the old repeat stays, counted for none"
    )
    assert all(t.state == TrialState.COMPLETE for t in study.trials if t.number > 4), "no new repeat is a trial"
    measured = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert counted(study.trials) == 6 == len({config_key(t.params) for t in measured}) and outcome == "done"
