"""Stage 6: the Optuna study. Each trial builds, serves, measures and retires one configuration.

Every trial counts: ``study.trials`` is the number of distinct configurations measured (or
failed because of their configuration). The study's sampler (``sweeper.search.UntakenSampler``)
proposes only configurations no trial has taken, drawing again in memory, so a repeat is no
trial; one that slips past it (another worker took the configuration in the same instant) is
recorded as a redrawn proposal (state FAIL, ``duplicate_of``), as studies of earlier releases
recorded every repeat; it never counts and never reaches a table.
A trial that was interrupted (a signal, a killed sweeper, a lost worker) is re-run; one that
failed because of its configuration is not. Shared storages detect dead workers by Optuna's
heartbeats; a SQLite study is run by one sweeper at a time (a lock beside its database), so a
trial still RUNNING when a run starts was left by a killed one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from tritonclient.grpc import model_config_pb2 as mc

from sweeper.artifacts import PRECISIONS, ArtifactBuilder, Drift, ModelArtifact, outside_tolerance, time_in_process
from sweeper.ask_tell import run_trial
from sweeper.climb import ClimbingSampler
from sweeper.confirm import enqueue_anchor
from sweeper.errors import MeasurementLost, ModelError, PrecisionError, ServerDied, TrialError
from sweeper.files import write_atomic
from sweeper.launchers import LABEL_STUDY, LABEL_TRIAL, REUSE, Launcher, PeakMemory, Server, server_metadata
from sweeper.load import CapacityTarget, LoadGenerator, Workload, served_outputs
from sweeper.machine import machine_fingerprint
from sweeper.measured import Accuracy, Capacity, Measurement, Memory, figures_of
from sweeper.record import TrialWriter, enqueue, kind_of, mark_interrupted, marks, write_server_version
from sweeper.repository import write_model
from sweeper.samplers import make_sampler
from sweeper.search import (
    DuplicateProposal,
    UntakenSampler,
    config_key,
    counted,
    dropped_precisions,
    exhausted,
    planned_params,
    taken_configs,
)
from sweeper.server_options import server_argv
from sweeper.signals import signals_deferred, stop_requested
from sweeper.spec import LoadedSpec
from sweeper.triton_config import apply_trial, to_pbtxt
from sweeper.vocabulary import (
    KNOBS,
    InProcessTiming,
    TrialConfig,
)

FIRST_FEW = 3
"""Trials that all fail alike (at the same stage, with the same words), from the first: the
model's failure, not theirs."""


def model_failure(trials: list[FrozenTrial]) -> ModelError | None:
    """The model's own failure, where the trials so far show one: the baseline does not load, or
    the first ``FIRST_FEW`` trials all failed at the same stage with the same error (numbers and
    the protocol aside: ``the first http response`` and ``the first grpc response`` are alike)."""
    measured = [(t, marks(t)) for t in trials if kind_of(t) in ("complete", "failed")]
    measured = [(t, role) for t, role in measured if role.repeat_of is None]
    hint = "the server's log is trials/<trial>/server.log in the study folder; fix the model or its config.pbtxt"
    for trial, role in measured:
        if role.baseline and role.failed_at == "load":
            reason = role.failure
            return ModelError(f"the baseline (trial {trial.number}) does not load, so the sweep stops: {reason}", hint)
    first = measured[:FIRST_FEW]
    if len(first) < FIRST_FEW or any(kind_of(t) != "failed" or role.failed_at == "build" for t, role in first):
        return None
    alike = {(role.failed_at, re.sub(r"\d+|\b(?:http|grpc)\b", "_", role.failure or "")) for _, role in first}
    if len(alike) > 1:
        return None
    stage, reason = first[0][1].failed_at, first[0][1].failure
    return ModelError(
        f"the first {FIRST_FEW} trials all failed alike ({'loading' if stage == 'load' else 'measuring'}), "
        f"so the sweep stops: {reason}",
        hint,
    )


def capacity_starts(trials: list[FrozenTrial], params: dict[str, Any], columns: list[str]) -> dict[str, float]:
    """Where each capacity search of a configuration with ``params`` should start: the load at
    which the most similar completed configuration (the same max_batch_size and instance count
    weigh double; the latest among equals) held the budget. A capacity of 0 or no completed trial
    leaves the column out: the search doubles up from ``load.capacity.low``."""
    weights = {"max_batch_size": 2, "instance_count": 2}

    def likeness(trial: FrozenTrial) -> int:
        return sum(weights.get(name, 1) for name, value in params.items() if trial.params.get(name) == value)

    starts: dict[str, float] = {}
    done = [(t, marks(t).capacities) for t in trials if t.state == TrialState.COMPLETE]
    for column in columns:
        found = [
            (likeness(t), t.number, stored.load)
            for t, capacities in done
            for stored in capacities
            if stored.column == column and stored.load > 0
        ]
        if found:
            starts[column] = max(found)[2]
    return starts


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Enqueue once each interrupted trial whose configuration no other trial covers; returns
    their numbers."""
    trials = study.get_trials(deepcopy=False)
    retried = {marks(t).retry_of for t in trials}
    taken = taken_configs(trials)
    pending = {config_key(planned_params(t)) for t in trials if t.state == TrialState.WAITING}
    requeued = []
    for trial in trials:
        key = config_key(trial.params)
        if kind_of(trial) != "interrupted" or trial.number in retried or key in taken or key in pending:
            continue
        role = marks(trial)
        if role.repeat_of is not None:  # repeats are planned again by confirm()
            continue
        enqueue(study, trial.params, baseline=role.baseline, retry_of=trial.number, neighbour_of=role.neighbour_of)
        pending.add(key)
        requeued.append(trial.number)
    return requeued


def fail_abandoned(study: optuna.Study, storage: optuna.storages.RDBStorage, exclusive: bool) -> None:
    """Mark dead workers' trials failed (interrupted): under the SQLite lock every RUNNING trial
    was left by a killed run; on a shared storage, those whose heartbeat stopped."""
    if exclusive:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            mark_interrupted(storage, trial, "its sweeper was killed")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def open_study(loaded: LoadedSpec, storage: optuna.storages.RDBStorage) -> optuna.Study:
    """Create the study, or load it when the name exists (a re-run resumes it; the sweep has
    checked beforehand that its objectives are the spec's: ``sweeper.sweep``)."""
    given = loaded.spec.study
    untaken = UntakenSampler(make_sampler(given.sampler, given.seed, loaded.space_size), loaded.space, given.seed)
    sampler = ClimbingSampler(untaken, loaded.space, loaded.ranking, climb_from=given.trials - given.neighbour_trials)
    return optuna.create_study(
        study_name=loaded.name,
        storage=storage,
        directions=loaded.ranking.directions,
        sampler=sampler,
        load_if_exists=True,
    )


def enqueue_baseline(study: optuna.Study, baseline: TrialConfig | None) -> None:
    """Trial 0 is the baseline, unless it was measured, failed by its configuration, is being
    measured by another worker or waits its turn."""
    if baseline is None:
        return
    for trial in study.get_trials(deepcopy=False):
        if marks(trial).baseline and kind_of(trial) in ("complete", "failed", "running", "waiting"):
            return
    enqueue(study, baseline.as_dict(), baseline=True)


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Time a phase of a trial; a signal that arrived during it and that the code it ran
    swallowed (an exception raised inside a C library's callback is printed, not raised) stops
    the trial once the phase ends."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = round(time.perf_counter() - start, 4)
    stop = stop_requested()
    if stop is not None:
        raise stop()


class Proposer:
    """The proposal as a configuration no other trial has taken. The study's sampler
    (``sweeper.search.UntakenSampler``) proposes untaken ones; a repeat that slips past it
    (another worker took the configuration in the same instant) fails its trial
    (DuplicateProposal, ``duplicate_of``) and the sweep asks again."""

    def __init__(self, loaded: LoadedSpec) -> None:
        self._space = loaded.space

    def __call__(self, trial: optuna.Trial) -> TrialConfig:
        """Suggest every parameter; raise DuplicateProposal when another trial has the configuration."""
        names = [*(name for name in self._space if name not in KNOBS), *KNOBS]
        # Whole or not at all: a signal between two suggestions would finish the trial with half
        # its parameters, which the grid sampler cannot place in its tree on the next run.
        with signals_deferred():
            params = {name: trial.suggest_categorical(name, self._space[name]) for name in names}
        config = TrialConfig.from_params({name: params[name] for name in self._space})
        role = marks(trial)
        if role.repeat_of is not None:  # a repeat measures a taken configuration again
            return config
        trials = trial.study.get_trials(deepcopy=False)
        earlier = taken_configs(trials, before=trial.number).get(config_key(trial.params))
        if earlier is None and not role.baseline:  # one verdict covers the precision
            earlier = dropped_precisions(trials).get(config.precision)
        if earlier is None:
            return config
        TrialWriter(trial).duplicate_of(earlier)
        raise DuplicateProposal(f"trial {earlier} has this configuration")


@dataclasses.dataclass(frozen=True)
class Measured:
    """What a trial's run found: every load measured, the capacities, accuracy and memory."""

    measurements: list[Measurement]
    capacities: list[Capacity]
    accuracy: Accuracy | None
    memory: Memory


class TrialRunner:
    """The objective: serve one configuration, measure every level and capacity, record it all."""

    def __init__(
        self, loaded: LoadedSpec, launcher: Launcher, directory: Path, backend: str, generator: LoadGenerator
    ) -> None:
        self._loaded = loaded
        self._spec = loaded.spec
        self._source = loaded.model
        self._dir = directory
        self._backend = backend
        self._generator = generator
        self._load = loaded.spec.load.settings
        self._gpu = launcher.has_gpu
        self.propose = Proposer(loaded)
        self._stage = "build"
        """Where the trial under way is: ``build``, ``load`` (the server and its model) or ``measure``."""
        batched = self._source.batched
        self.artifacts = (
            ArtifactBuilder(
                self._source.onnx_file,
                loaded.samples,
                directory / "models",
                gpu=self._gpu,
                batched=batched,
                score_outputs=loaded.score_outputs,
            )
            if self._source.convertible
            else None
        )
        self.workload = Workload(
            self._source.name,
            self._source.inputs,
            self._source.outputs,
            loaded.samples,
            self._spec.model.example_inputs.batch_size,
            batched,
        )
        # The configs the sweep generates are complete; a model folder's own config may rely on
        # Triton's auto-completion, as it does where the team deploys it.
        complete = self._source.kind != "repository" or (self._source.onnx_file is not None and backend == "python")
        reuse = REUSE[self._spec.server.reuse]
        self.servers = reuse(launcher, directory, self._spec.server.startup_timeout_s, complete)

    def prepare(self) -> None:
        """Before the first trial: the reference model under models/ and the sweep's first request
        (``samples.npz``)."""
        if self.artifacts is None:
            return
        self.artifacts.build(self._source.reference_precision)
        first = self.workload.samples.batch(0, 1, batched=self._source.batched)
        arrays = {name: array.astype(bytes) if array.dtype == object else array for name, array in first.items()}
        buffer = io.BytesIO()  # built in memory: a full disk fails the write, not numpy's zip file
        np.savez(buffer, **arrays)
        write_atomic(self._dir / "samples.npz", buffer.getvalue())

    def time_reference(self, runs: int = 200) -> InProcessTiming | None:
        """The reference model on the sweep's first request in this process, the median of
        ``runs`` calls (None where ONNX Runtime cannot run it here, or there is no ONNX model)."""
        if self.artifacts is None:
            return None
        precision = self._source.reference_precision
        first = self.workload.samples.batch(0, 1, batched=self._source.batched)
        try:
            ms = time_in_process(self.artifacts.build(precision).path, first, repeats=runs)
        except Exception:  # a GPU-only operator, a string input: no figure, said by its absence
            return None
        return InProcessTiming(round(ms, 5), precision, 1, runs)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        """Measure the configuration the sampler proposes; its objective values."""
        config = self.propose(trial)
        writer = TrialWriter(trial)
        timings: dict[str, float] = {}
        writer.started(self.servers.mode, self._generator.info, machine_fingerprint())
        try:
            measured = self._run_twice_if_lost(trial, writer, config, timings)
        except TrialError as exc:
            stop = stop_requested()
            if stop is not None:  # a signal cut a library short (an import reads as ImportError): re-run it
                writer.interrupted(stop.__name__)
                raise stop() from exc
            writer.failed(str(exc), self._stage)
            if isinstance(exc, PrecisionError):
                writer.precision_dropped(config.precision, str(exc))
            raise
        except BaseException as exc:  # a signal, a lost engine, a full disk: run it again later
            with contextlib.suppress(Exception):
                writer.interrupted(type(exc).__name__)
            raise
        finally:
            with contextlib.suppress(Exception):
                writer.timings(timings)
        if measured.accuracy is not None and measured.accuracy.outside_tolerance:
            writer.precision_dropped(config.precision, measured.accuracy.outside_tolerance)
        figures = figures_of(measured.measurements, measured.memory, measured.capacities)
        constraints = self._accuracy_constraints(measured.accuracy)
        constraints.update({b.label: b.excess(figures[b.column]) for b in self._loaded.ranking.constraints})
        writer.measured(measured.measurements, measured.capacities, constraints)
        return tuple(figures[column] for column in self._loaded.ranking.columns)

    def _run_twice_if_lost(
        self, trial: optuna.Trial, writer: TrialWriter, config: TrialConfig, timings: dict[str, float]
    ) -> Measured:
        """``_run``; a measurement cut off (the server died, or the load generator lost its
        connection: an intermittent crash is no verdict on the configuration) is taken again on
        a fresh server, the first log kept as ``server.attempt-1.log``. A second loss fails the
        trial."""
        try:
            return self._run(trial, writer, config, timings)
        except MeasurementLost as exc:
            if stop_requested() is not None:
                raise
            writer.retried(str(exc))
            log = self._trial_dir(trial) / "server.log"
            if log.is_file():
                log.replace(log.with_name("server.attempt-1.log"))
        return self._run(trial, writer, config, timings)

    def _trial_dir(self, trial: optuna.Trial) -> Path:
        return self._dir / "trials" / str(trial.number)

    def _accuracy(self, precision: str, drift: Drift) -> Accuracy:
        tolerance = self._spec.accuracy
        reason = outside_tolerance(
            precision,
            drift,
            min_cosine=tolerance.min_cosine_similarity,
            max_error=tolerance.max_abs_error,
            min_top1=tolerance.min_top1_agreement,
        )
        return Accuracy(drift.max_abs_error, drift.cosine_similarity, reason, drift.top1_agreement)

    def _accuracy_constraints(self, accuracy: Accuracy | None) -> dict[str, float]:
        """The accuracy guard as Optuna constraints (<= 0 holds)."""
        if accuracy is None:
            return {}
        tolerance = self._spec.accuracy
        constraints = {"cosine_similarity": tolerance.min_cosine_similarity - accuracy.cosine_similarity}
        if tolerance.max_abs_error is not None:
            constraints["max_abs_error"] = accuracy.max_abs_error - tolerance.max_abs_error
        if tolerance.min_top1_agreement is not None and accuracy.top1_agreement is not None:
            constraints["top1_agreement"] = tolerance.min_top1_agreement - accuracy.top1_agreement
        return constraints

    def model_config(self, config: TrialConfig) -> mc.ModelConfig:
        """The trial's config.pbtxt: the model's template with the trial's knobs."""
        serve_with = self._backend if self._source.onnx_file is not None else None
        kind = mc.ModelInstanceGroup.KIND_GPU if self._gpu else mc.ModelInstanceGroup.KIND_CPU
        tensorrt = PRECISIONS[config.precision].tensorrt
        return apply_trial(
            self._source.template, config, serve_with=serve_with, instance_kind=kind, tensorrt_precision=tensorrt
        )

    def _run(
        self, trial: optuna.Trial, writer: TrialWriter, config: TrialConfig, timings: dict[str, float]
    ) -> Measured:
        trial_dir = self._trial_dir(trial)
        trial_dir.mkdir(parents=True, exist_ok=True)
        artifact, model, accuracy = self._build(writer, config, trial_dir, timings)

        def write(repository: Path, served: str) -> Path:
            named = mc.ModelConfig()
            named.CopyFrom(model)
            named.name = served
            return write_model(repository, self._source, named, artifact.path if artifact is not None else None)

        labels = {LABEL_STUDY: self._loaded.name, LABEL_TRIAL: str(trial.number)}
        self._stage = "load"
        with _timed(timings, "start_s"):
            options = server_argv(config.server_options)
            server, served = self.servers.serve(write, trial_dir, labels, self._source.name, options)
        self._stage = "measure"
        failed = True
        try:
            write_server_version(trial.study, server_metadata(server.endpoints).get("version"))
            workload = dataclasses.replace(self.workload, model_name=served)
            if artifact is not None and accuracy is None:  # TensorRT: measured as served
                accuracy = self._served_accuracy(server, workload, config.precision)
                writer.accuracy(accuracy)
            starts = capacity_starts(
                trial.study.get_trials(deepcopy=False), trial.params, [c.column for c in self._spec.capacities]
            )
            with _timed(timings, "measure_s"), PeakMemory(server, gpu=self._gpu) as memory:
                measured = self._measure(server, workload, config.protocol, starts)
            writer.memory(memory.result)
            failed = False
        finally:
            with _timed(timings, "stop_s"):
                self.servers.retire(server, trial_dir, served, failed)
        return Measured(*measured, accuracy, memory.result)

    def _build(
        self, writer: TrialWriter, config: TrialConfig, trial_dir: Path, timings: dict[str, float]
    ) -> tuple[ModelArtifact | None, mc.ModelConfig, Accuracy | None]:
        """The trial's model file (its precision's, built once per study), its config.pbtxt, and
        its accuracy where the file alone tells it (TensorRT's is measured as served)."""
        self._stage = "build"
        with _timed(timings, "build_s"):
            artifact = self.artifacts.build(config.precision) if self.artifacts is not None else None
            model = self.model_config(config)
            write_atomic(trial_dir / "config.pbtxt", to_pbtxt(model))
        writer.served(to_pbtxt(model))
        accuracy = None
        if artifact is not None and artifact.drift is not None:
            accuracy = self._accuracy(config.precision, artifact.drift)
            writer.accuracy(accuracy)
        return artifact, model, accuracy

    def _served_accuracy(self, server: Server, workload: Workload, precision: str) -> Accuracy:
        produced = served_outputs(server.endpoints, workload, self.artifacts.accuracy_feeds())
        return self._accuracy(precision, self.artifacts.compare(produced))

    def _measure(
        self, server: Server, workload: Workload, protocol: str, starts: dict[str, float]
    ) -> tuple[list[Measurement], list[Capacity]]:
        """Every level of the spec and every capacity it ranks by (each search starting where
        ``starts`` says); a failure while the server died is the server's."""
        targets = [
            CapacityTarget(c.column, c.percentile, c.budget_ms, start=starts.get(c.column))
            for c in self._spec.capacities
        ]
        try:
            return self._generator.measure_trial(server.endpoints, protocol, workload, self._load, targets)
        except TrialError as exc:
            if _ended(server, within_s=1.0):
                raise ServerDied(str(server.failure(str(exc)))) from None
            raise


def _ended(server: Server, within_s: float) -> bool:
    """Whether the server has died (a dropped connection can be seen before its exit is)."""
    deadline = time.monotonic() + within_s
    while server.alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def run_study(
    study: optuna.Study,
    loaded: LoadedSpec,
    runner: TrialRunner | None,
    storage: optuna.storages.RDBStorage,
    *,
    exclusive: bool,
    on_trial_end: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    objective: Callable[[optuna.Trial], Any] | None = None,
) -> tuple[optuna.Study, str]:
    """Run trials until the study has ``study.trials`` counted ones (other workers' included),
    the last ``study.neighbours`` of them around the knee (the study's ``ClimbingSampler``); returns the
    study and why it stopped: ``done`` or ``exhausted`` (every configuration of the space is
    taken). ``objective`` replaces the runner (the search benchmark replays a table)."""
    fail_abandoned(study, storage, exclusive)
    requeue_interrupted(study)
    enqueue_baseline(study, loaded.baseline)
    while True:
        stop = stop_requested()
        if stop is not None:  # a signal a library swallowed between trials still stops the sweep
            raise stop()
        step = _next_step(study, loaded)
        if step in ("done", "exhausted"):
            return study, step
        if step == "wait":  # others measure the rest: wait, and re-run what dies with its worker
            time.sleep(loaded.spec.study.heartbeat_s)
            fail_abandoned(study, storage, exclusive=False)
            requeue_interrupted(study)
            continue
        run_trial(study, storage, objective or runner, on_trial_end)
        failure = model_failure(study.get_trials(deepcopy=False))
        if failure is not None:
            raise failure
        requeue_interrupted(study)
        enqueue_anchor(study, loaded.spec.study.anchor_every)


def _next_step(study: optuna.Study, loaded: LoadedSpec) -> str:
    """What the loop does next: ``done`` (``study.trials`` counted), ``exhausted`` (every
    configuration taken, none still measured elsewhere), ``wait`` (the rest is being measured by
    other workers) or ``run`` a trial."""
    trials = study.get_trials(deepcopy=False)
    done, target = counted(trials), loaded.spec.study.trials
    running = sum(kind_of(t) == "running" for t in trials)
    if done >= target:
        return "done"
    if exhausted(loaded.space, trials):
        return "wait" if running else "exhausted"
    waiting = any(t.state == TrialState.WAITING for t in trials)
    if not waiting and done + running >= target:
        return "wait"
    return "run"
