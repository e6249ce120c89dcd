"""The trial record: one frozen, typed account of a trial, the only form in which a trial is read.

Optuna keeps a trial as parameters, values, constraints and user attributes; this module is the
one place that knows which attribute holds what. The study writes trials through
``TrialWriter``; results, report, export and the command line read them through
``read_study`` / ``read_trial``. The layout carries a schema version on the study
(``SCHEMA_VERSION``): a study written before versions existed (schema 1) is read as it is, one
written by a newer sweeper is refused with what to do.

A trial's kinds: ``complete``; ``failed`` (its configuration failed: not run again);
``interrupted`` (a signal, a killed sweeper, a lost worker: run again); ``duplicate`` (a
redrawn proposal, kept for the sampler's history, in no table); ``running``; ``waiting``.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from importlib import metadata
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeper.errors import UsageError
from sweeper.measured import (
    TIMINGS,
    Accuracy,
    Capacity,
    LoadGeneratorInfo,
    Measurement,
    Memory,
    Timings,
    figures_of,
)
from sweeper.vocabulary import KNOBS, Bound, Objective, Ranking, TrialConfig

SCHEMA_VERSION = 2
"""1: the layout before versions (no served config, generator version or machine); 2: this one."""

ACCURACY_CONSTRAINTS = ("cosine_similarity", "max_abs_error", "top1_agreement")
"""Constraint names of the accuracy guard; every other constraint bounds a measured metric."""

# The study's user attributes and the trial's, by what they hold.
_SCHEMA = "schema_version"
_STUDY_FACTS = (
    "backend",
    "gpu",
    "launcher",
    "model",
    "source",
    "spec",
    "generator",
    "server_version",
    "server",
    "fingerprint",
    "confirm_repeats",
    "in_process",
    "measured_with",
    "accuracy",
)


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """Everything a trial holds, as read from the study."""

    number: int
    kind: str
    config: TrialConfig | None
    baseline: bool = False
    served_config: str | None = None
    """The config.pbtxt the server loaded (schema 2); None in a schema 1 study."""
    measurements: tuple[Measurement, ...] = ()
    accuracy: Accuracy | None = None
    constraints: dict[str, float] = dataclasses.field(default_factory=dict)
    """Optuna's constraint values (<= 0 holds), accuracy and metric bounds alike."""
    timings: Timings = Timings()
    failure: str | None = None
    interrupted: str | None = None
    retry_of: int | None = None
    duplicate_of: int | None = None
    reuse: str | None = None
    generator: LoadGeneratorInfo | None = None
    machine: dict[str, Any] | None = None
    memory: Memory = Memory()
    capacities: tuple[Capacity, ...] = ()
    repeat_of: int | None = None
    """A confirmation repeat (or drift anchor) of that trial's configuration on a fresh server."""
    anchor: bool = False
    """A repeat of the baseline taken during the search, to see drift over time."""
    failed_at: str | None = None
    """Where a failed trial failed: ``build`` (its precision's model), ``load`` (the server or
    the model did not start) or ``measure``."""
    retried: str | None = None
    """Why the trial was measured again on a fresh server (its first server died), or None."""
    neighbour_of: int | None = None
    """The front trial this configuration is one step from, as the front was when the climb
    proposed it (``sweeper.climb.ClimbingSampler``); None for the wrapped sampler's proposals."""
    dropped_precision: bool = False
    """Whether this trial found that its precision cannot serve the model (later proposals of it
    are not measured)."""

    @functools.cached_property
    def figures(self) -> dict[str, float]:
        """Every measured metric by column name (``p50_ms@c1``, ``throughput@c8``,
        ``capacity@p99_ms<=20``, ``server_memory_mb``)."""
        return figures_of(self.measurements, self.memory, self.capacities)

    @property
    def figure_measurements(self) -> tuple[Measurement, ...]:
        """The measurements its figures come from: the listed levels, and the load each capacity
        was found at (not the loads a search tried beyond it)."""
        found = {c.load for c in self.capacities}
        return tuple(m for m in self.measurements if m.search is None or m.load in found)

    @property
    def stable(self) -> bool | None:
        """Whether the windows agreed at every load its figures come from (None: nothing measured)."""
        counted = self.figure_measurements
        return all(m.stable for m in counted) if counted else None

    @property
    def client_bound(self) -> bool | None:
        """Whether the load generator was the bottleneck at a load its figures come from (None:
        nothing measured)."""
        counted = self.figure_measurements
        return any(m.client_bound for m in counted) if counted else None

    def accuracy_violations(self) -> dict[str, float]:
        """The accuracy guard's constraints that fail (name -> by how much)."""
        return {k: v for k, v in self.constraints.items() if k in ACCURACY_CONSTRAINTS and v > 0}

    def violations(self, ranking: Ranking, figures: dict[str, float] | None = None) -> dict[str, float]:
        """Constraints this trial breaks under ``ranking`` (its bounds, and the accuracy guard):
        name -> by how much. Empty for a feasible trial. ``figures`` replaces its own (the
        medians of its confirmation repeats)."""
        figures = self.figures if figures is None else figures
        broken = self.accuracy_violations()
        for bound in ranking.constraints:
            value = figures.get(bound.column)
            excess = bound.excess(value) if value is not None else float("inf")
            if excess > 0:
                broken[bound.label] = excess
        return broken

    def feasible(self, ranking: Ranking, figures: dict[str, float] | None = None) -> bool:
        """Complete, measured at every column the ranking names, and within every constraint
        (on ``figures`` where given, see ``violations``)."""
        figures = self.figures if figures is None else figures
        if self.kind != "complete" or any(o.column not in figures for o in ranking.objectives):
            return False
        return not self.violations(ranking, figures)


@dataclasses.dataclass(frozen=True)
class StudyRecord:
    """A sweep's study as read: its own ranking, the facts of how it was measured, its trials."""

    name: str
    schema: int
    ranking: Ranking
    facts: dict[str, Any]
    """backend, gpu, launcher, model, source (ModelSource facts), spec, generator,
    server_version, accuracy (the spec's tolerance), ...: what report and export need
    (study.db is self-contained)."""
    trials: tuple[TrialRecord, ...]

    def trial(self, number: int) -> TrialRecord:
        """The trial numbered ``number``."""
        return next(t for t in self.trials if t.number == number)


def proposed_whole(params: dict[str, Any]) -> bool:
    """Whether a trial's parameters hold every knob. The knobs are suggested last: a trial that
    has them all was proposed whole; one cut off before has none or part of its configuration."""
    return all(k in params for k in KNOBS)


def kind_of(trial: FrozenTrial) -> str:
    """What a stored trial is (see the module docstring)."""
    attrs = trial.user_attrs
    if "duplicate_of" in attrs:
        return "duplicate"
    if trial.state == TrialState.FAIL:
        return "failed" if "failure" in attrs and not attrs.get("interrupted") else "interrupted"
    return {TrialState.COMPLETE: "complete", TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}.get(
        trial.state, "failed"
    )


def read_trial(trial: FrozenTrial) -> TrialRecord:
    """A stored trial as a record (schema 1 and 2 alike)."""
    attrs = trial.user_attrs
    params = trial.params
    config = TrialConfig.from_params(params) if proposed_whole(params) else None
    accuracy = None
    if attrs.get("cosine_similarity") is not None:
        accuracy = Accuracy(
            attrs.get("max_abs_error"), attrs["cosine_similarity"], attrs.get("infeasible"), attrs.get("top1_agreement")
        )
    generator = attrs.get("load_generator")
    measurements = tuple(Measurement.from_dict(m) for m in attrs.get("measurements", []))
    if generator is None and measurements:  # schema 1: the name on each measurement, no version
        generator = {"name": measurements[0].generator}
    return TrialRecord(
        number=trial.number,
        kind=kind_of(trial),
        config=config,
        baseline=bool(attrs.get("baseline", False)),
        served_config=attrs.get("served_config"),
        measurements=measurements,
        accuracy=accuracy,
        # Named constraints only: the unnamed list beside them is the same values, for optuna-dashboard.
        constraints={k: v for k, v in trial.constraints.items() if not k.isdigit()},
        timings=Timings(**{k: v for k, v in attrs.get("timings", {}).items() if k in TIMINGS}),
        failure=attrs.get("failure"),
        interrupted=attrs.get("interrupted"),
        retry_of=attrs.get("retry_of"),
        duplicate_of=attrs.get("duplicate_of"),
        reuse=attrs.get("reuse"),
        generator=LoadGeneratorInfo(**generator) if generator else None,
        machine=attrs.get("machine"),
        memory=Memory(**attrs.get("memory", {})),
        capacities=tuple(Capacity.from_dict(c) for c in attrs.get("capacities", [])),
        repeat_of=attrs.get("repeat_of"),
        neighbour_of=attrs.get("neighbour_of"),
        anchor=bool(attrs.get("anchor", False)),
        failed_at=attrs.get("failed_at"),
        retried=attrs.get("retried"),
        dropped_precision="precision_dropped" in attrs,
    )


def read_study(study: optuna.Study) -> StudyRecord:
    """A sweep's study as records; UsageError (one line, what to do) for a study this sweeper
    cannot read: not a sweep's, or written by a newer sweeper."""
    attrs = study.user_attrs
    schema = int(attrs.get(_SCHEMA, 1))
    if schema > SCHEMA_VERSION:
        raise UsageError(
            f"study '{study.study_name}' was written by a newer triton-sweeper (trial record schema {schema}; "
            f"this one reads up to {SCHEMA_VERSION})",
            hint="upgrade triton-sweeper (pip install -U triton-sweeper) to read it",
        )
    if "objectives" not in attrs:
        raise UsageError(
            f"study '{study.study_name}' is not a triton-sweeper study (it has no objectives recorded)",
            hint="give the folder or --storage of a study that 'sweeper run' wrote",
        )
    ranking = Ranking(
        tuple(Objective(column, direction) for column, direction in zip(attrs["objectives"], _directions(study))),
        tuple(Bound.parse(text) for text in attrs.get("constraints", [])),
        attrs.get("primary"),
    )
    trials = tuple(read_trial(t) for t in study.get_trials(deepcopy=False))
    if "constraints" not in attrs:  # schema 1 kept its bounds only on the trials, as Optuna constraints
        ranking = dataclasses.replace(ranking, constraints=_bounds_from_trials(trials))
    facts = {key: attrs.get(key) for key in _STUDY_FACTS}
    return StudyRecord(study.study_name, schema, ranking, facts, trials)


def _directions(study: optuna.Study) -> list[str]:
    return [d.name.lower() for d in study.directions]


def _bounds_from_trials(trials: tuple[TrialRecord, ...]) -> tuple[Bound, ...]:
    names = {name for t in trials for name in t.constraints if name not in ACCURACY_CONSTRAINTS}
    return tuple(Bound.parse(name) for name in sorted(names))


def write_study_facts(study: optuna.Study, ranking: Ranking, facts: dict[str, Any]) -> None:
    """The study's schema version, ranking (metric names by Optuna's own API, so
    optuna-dashboard and optuna.visualization name the objectives) and facts."""
    wanted = {
        _SCHEMA: SCHEMA_VERSION,
        "objectives": ranking.columns,
        "constraints": [b.label for b in ranking.constraints],
        "primary": ranking.primary,
        **{key: facts[key] for key in _STUDY_FACTS if key in facts},
    }
    for key, value in wanted.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    if study.metric_names != ranking.columns:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and what its tools read
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(ranking.columns)


def stored_ranking_conflict(study: optuna.Study, ranking: Ranking) -> str | None:
    """Why a stored study cannot be resumed with ``ranking`` (other objectives or directions),
    or None. Reads only."""
    stored = list(study.user_attrs.get("objectives", []))
    directions = _directions(study)
    if stored and stored != ranking.columns:
        return f"it optimizes {', '.join(stored)}, the spec {', '.join(ranking.columns)}"
    if directions != ranking.directions:
        return f"its directions are {', '.join(directions)}, the spec's {', '.join(ranking.directions)}"
    return None


def enqueued_attrs(
    *,
    baseline: bool = False,
    retry_of: int | None = None,
    repeat_of: int | None = None,
    anchor: bool = False,
    neighbour_of: int | None = None,
) -> dict[str, Any]:
    """The user attributes an enqueued trial starts with."""
    attrs: dict[str, Any] = {}
    if repeat_of is not None:
        attrs["repeat_of"] = repeat_of
    if anchor:
        attrs["anchor"] = True
    if baseline:
        attrs["baseline"] = True
    if retry_of is not None:
        attrs["retry_of"] = retry_of
    if neighbour_of is not None:
        attrs["neighbour_of"] = neighbour_of
    return attrs


def mark_neighbour(study: optuna.Study, trial: FrozenTrial, origin: int) -> None:
    """Mark a trial the climb proposes (``sweeper.climb.ClimbingSampler``) as ``neighbour_of``
    front trial ``origin``. A sampler holds the trial as Optuna caches it: written to the storage
    and to that cache, as ``optuna.Trial.set_user_attr`` writes both."""
    study._storage.set_trial_user_attr(trial._trial_id, "neighbour_of", origin)
    trial.user_attrs["neighbour_of"] = origin


@dataclasses.dataclass(frozen=True)
class TrialMarks:
    """What the study loop reads of a stored trial: its role, how it ended, what it found."""

    baseline: bool
    repeat_of: int | None
    """The trial this one measures again on a fresh server (a confirmation repeat, an anchor)."""
    anchor: bool
    retry_of: int | None
    neighbour_of: int | None
    failed_at: str | None
    failure: str | None
    dropped_precision: str | None
    """A precision this trial found cannot serve the model."""
    capacities: tuple[Capacity, ...]
    fixed_params: dict[str, Any]
    """The parameters ``enqueue`` fixed for it (empty for the sampler's proposals)."""


def marks(trial: FrozenTrial | optuna.Trial) -> TrialMarks:
    """The loop's view of a stored trial (or of the one under way: no fixed parameters then)."""
    attrs = trial.user_attrs
    fixed = trial.system_attrs.get("fixed_params", {}) if isinstance(trial, FrozenTrial) else {}
    dropped = attrs.get("precision_dropped")
    return TrialMarks(
        baseline=bool(attrs.get("baseline")),
        repeat_of=attrs.get("repeat_of"),
        anchor=bool(attrs.get("anchor")),
        retry_of=attrs.get("retry_of"),
        neighbour_of=attrs.get("neighbour_of"),
        failed_at=attrs.get("failed_at"),
        failure=attrs.get("failure"),
        dropped_precision=dropped["precision"] if dropped else None,
        capacities=tuple(Capacity.from_dict(c) for c in attrs.get("capacities", [])),
        fixed_params=dict(fixed),
    )


def enqueue(study: optuna.Study, params: dict[str, Any], **roles: Any) -> None:
    """Enqueue a trial of ``params`` with its role (``enqueued_attrs``' keywords); the same
    parameters may wait more than once (a repeat)."""
    study.enqueue_trial(dict(params), user_attrs=enqueued_attrs(**roles), skip_if_exists=False)


def study_fact(study: optuna.Study, key: str) -> Any:
    """One of the facts the sweep stored on the study (``write_study_facts``), or None."""
    return study.user_attrs.get(key)


def mark_interrupted(storage: optuna.storages.BaseStorage, trial: FrozenTrial, reason: str) -> None:
    """Fail a trial that a dead run left RUNNING, as interrupted (it is run again). One cut off
    before its knobs were all suggested goes back to waiting instead, and is run as it was
    planned: a finished trial without them would break the grid sampler's tree
    (BruteForceSampler: 'param_name mismatch'), and nothing of it was measured."""
    if not proposed_whole(trial.params):
        storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
        return
    storage.set_trial_user_attr(trial._trial_id, "interrupted", reason)
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def write_server_version(study: optuna.Study, version: str | None) -> None:
    """The Triton version that served the study's trials (recorded by the first)."""
    if "server_version" not in study.user_attrs:
        study.set_user_attr("server_version", version)


class TrialWriter:
    """The one writer of a running trial's record. Each part is stored as soon as it is known,
    so a trial that fails or is interrupted keeps what it had."""

    def __init__(self, trial: optuna.Trial) -> None:
        self._trial = trial

    def started(self, reuse: str, generator: LoadGeneratorInfo, machine: dict[str, Any]) -> None:
        """How the trial is served and measured, and on what."""
        self._trial.set_user_attr("reuse", reuse)
        self._trial.set_user_attr("load_generator", dataclasses.asdict(generator))
        self._trial.set_user_attr("machine", machine)

    def served(self, config_text: str) -> None:
        """The config.pbtxt the trial's server loads."""
        self._trial.set_user_attr("served_config", config_text)

    def accuracy(self, accuracy: Accuracy) -> None:
        """Accuracy against the reference model."""
        self._trial.set_user_attr("max_abs_error", accuracy.max_abs_error)
        self._trial.set_user_attr("cosine_similarity", accuracy.cosine_similarity)
        if accuracy.top1_agreement is not None:
            self._trial.set_user_attr("top1_agreement", accuracy.top1_agreement)
        if accuracy.outside_tolerance is not None:
            self._trial.set_user_attr("infeasible", accuracy.outside_tolerance)

    def duplicate_of(self, number: int) -> None:
        """A redrawn proposal: trial ``number`` has this configuration."""
        self._trial.set_user_attr("duplicate_of", number)

    def failed(self, reason: str, stage: str) -> None:
        """The configuration failed at ``stage`` (``build``, ``load``, ``measure``; not run again)."""
        self._trial.set_user_attr("failure", reason)
        self._trial.set_user_attr("failed_at", stage)

    def retried(self, reason: str) -> None:
        """The trial's first server died (``reason``): it is measured again on a fresh one."""
        self._trial.set_user_attr("retried", reason)

    def precision_dropped(self, precision: str, reason: str) -> None:
        """``precision`` cannot serve this model (its build failed, or its outputs fail the
        accuracy guard): later proposals of it are not measured."""
        self._trial.set_user_attr("precision_dropped", {"precision": precision, "reason": reason})

    def interrupted(self, reason: str) -> None:
        """The trial was stopped from outside (run again)."""
        self._trial.set_user_attr("interrupted", reason)

    def timings(self, timings: dict[str, float]) -> None:
        """Seconds per phase reached so far."""
        self._trial.set_user_attr("timings", timings)

    def memory(self, memory: Memory) -> None:
        """The peak memory over the measurement."""
        self._trial.set_user_attr("memory", dataclasses.asdict(memory))

    def measured(
        self, measurements: list[Measurement], capacities: list[Capacity], constraints: dict[str, float]
    ) -> None:
        """The measurements, the capacities found and every constraint value (accuracy and
        bounds). Optuna's own ``set_constraint`` per name (samplers, optuna.visualization) and
        the list that optuna-dashboard reads as the trial's feasibility."""
        self._trial.set_user_attr("measurements", [m.as_dict() for m in measurements])
        self._trial.set_user_attr("capacities", [c.as_dict() for c in capacities])
        for name, value in constraints.items():
            self._trial.set_constraint(name, value)
        # No public accessor for the id: Optuna's own samplers write this list the same way.
        self._trial.storage.set_trial_system_attr(self._trial._trial_id, "constraints", list(constraints.values()))


def sweeper_version() -> str | None:
    """This package's version (None when run from a source tree that was not installed)."""
    try:
        return metadata.version("triton-sweeper")
    except metadata.PackageNotFoundError:
        return None
