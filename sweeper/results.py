"""Stage 7: the study's records as tables (pandas), written as trials.csv, measurements.csv and
pareto.csv, under the study's own ranking or another one (a re-rank measures nothing again).

Everything is derived from the trial records (``sweeper.record``), so a report can be rebuilt
from study.db alone.
Redrawn proposals (a configuration the sampler proposed again) are not trials of the sweep and
appear in no table. ``max_queue_delay_us`` is ``off`` (no dynamic batching) or microseconds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from sweeper.errors import UsageError
from sweeper.files import atomic_path
from sweeper.record import MEASUREMENT_FIELDS, StudyRecord, TrialRecord
from sweeper.vocabulary import KNOBS, METRICS, Bound, Objective, Ranking, metric_column, parameter_columns

MEASUREMENT_COLUMNS = ["number", "level", *MEASUREMENT_FIELDS]
"""measurements.csv: one row per trial and load measured (``level`` ``c8`` or ``r500``; ``search``
names the capacity search that chose a load, empty for the levels the spec lists)."""


@dataclasses.dataclass(frozen=True)
class StudyTables:
    """The three tables of a study under one ranking, and that ranking's objective columns."""

    trials: pd.DataFrame
    measurements: pd.DataFrame
    pareto: pd.DataFrame
    objectives: list[str]
    redraws: int
    """Proposals that repeated a configuration and were asked again (not in the tables)."""
    ranking: Ranking


def tables(study: StudyRecord, ranking: Ranking | None = None) -> StudyTables:
    """The tables of a study as it stands (running trials included, as RUNNING rows), ranked by
    the study's own objectives and constraints or by ``ranking`` (a re-rank: nothing is
    measured again, every figure is in the records)."""
    ranking = ranking or study.ranking
    objectives = ranking.columns
    retried_by = {t.retry_of: t.number for t in study.trials if t.retry_of is not None}
    trial_rows, measurement_rows = [], []
    for trial in study.trials:
        if trial.kind == "duplicate":
            continue
        measurement_rows += [{"number": trial.number, "level": m.level, **m.as_dict()} for m in trial.measurements]
        trial_rows.append(_trial_row(trial, ranking, retried_by))
    trials = pd.DataFrame(trial_rows)
    for column in parameter_columns(trials.columns)[len(KNOBS) :]:  # 2 stays 2 beside an unset value
        trials[column] = pd.Series([row.get(column) for row in trial_rows], index=trials.index, dtype=object)
    measurements = pd.DataFrame(measurement_rows, columns=MEASUREMENT_COLUMNS)
    pareto = pareto_front(trials[trials["feasible"]], objectives, ranking.directions) if not trials.empty else trials
    redraws = sum(t.kind == "duplicate" for t in study.trials)
    return StudyTables(trials, measurements, pareto, objectives, redraws, ranking)


def _trial_row(trial: TrialRecord, ranking: Ranking, retried_by: dict[int, int]) -> dict:
    config = trial.config.as_dict() if trial.config is not None else {}
    accuracy = trial.accuracy
    complete = trial.kind == "complete"
    return {
        "number": trial.number,
        "state": {"complete": "COMPLETE", "running": "RUNNING", "waiting": "WAITING"}.get(trial.kind, "FAIL"),
        "baseline": trial.baseline,
        **{knob: config.get(knob) for knob in KNOBS},
        **{name: value for name, value in config.items() if name not in KNOBS},
        **{column: trial.figures.get(column) for column in ranking.columns},
        "feasible": trial.feasible(ranking),
        **_capacity_columns(trial),
        "max_abs_error": accuracy.max_abs_error if accuracy else None,
        "cosine_similarity": accuracy.cosine_similarity if accuracy else None,
        "server_memory_mb": trial.memory.server_mb,
        "gpu_memory_mb": trial.memory.gpu_mb,
        **dataclasses.asdict(trial.timings),
        "reuse": trial.reuse,
        "generator": trial.generator.name if trial.generator else None,
        "stable": trial.stable,
        "client_bound": trial.client_bound,
        "infeasible": _infeasible_reason(trial, ranking) if complete else None,
        "failure": _failure(trial, retried_by),
        "retry_of": trial.retry_of,
    }


def _capacity_columns(trial: TrialRecord) -> dict:
    """Each capacity found: its figure (inferences/s), the load it was found at and why it is 0
    or a lower bound (``capacity@p99_ms<=20``, ``...:load``, ``...:note``)."""
    columns = {}
    for capacity in trial.capacities:
        columns[capacity.column] = capacity.throughput
        columns[f"{capacity.column}:load"] = capacity.load
        columns[f"{capacity.column}:note"] = capacity.note
    return columns


def _failure(trial: TrialRecord, retried_by: dict[int, int]) -> str | None:
    if trial.kind == "failed":
        return trial.failure or "failed"
    if trial.kind != "interrupted":
        return None
    why = trial.interrupted or "its sweeper stopped (killed, or its heartbeat ended)"
    again = retried_by.get(trial.number)
    return f"interrupted ({why}); " + (f"re-run as trial {again}" if again is not None else "re-run on resume")


def _infeasible_reason(trial: TrialRecord, ranking: Ranking) -> str | None:
    violated = trial.violations(ranking)
    if not violated:
        return None
    accuracy = [trial.accuracy.outside_tolerance] if trial.accuracy and trial.accuracy.outside_tolerance else []
    return "; ".join(accuracy + [f"violates {key} (+{value:.3g})" for key, value in violated.items()])


def parse_ranking(study: StudyRecord, objectives: list[str], constraints: list[str]) -> Ranking:
    """The study's ranking with the objectives and constraints the command line gives instead
    (``min:p99_ms@c8``, ``throughput@c8 >= 500``); UsageError naming what is allowed."""
    try:
        chosen = tuple(Objective.parse(text) for text in objectives)
        bounds = tuple(Bound.parse(text) for text in constraints)
    except ValueError as exc:
        raise UsageError(f"--objective / --constraint {exc}") from None
    measured = sorted({column for t in study.trials for column in t.figures})
    for column in [o.column for o in chosen] + [b.column for b in bounds]:
        if column not in measured:
            raise UsageError(
                f"no measured column '{column}' in study '{study.name}'", hint=f"measured: {', '.join(measured)}"
            )
    if len({o.column for o in chosen}) != len(chosen):
        raise UsageError(f"--objective names a column twice: {', '.join(o.column for o in chosen)}")
    return Ranking(chosen or study.ranking.objectives, bounds if constraints else study.ranking.constraints)


def write_tables(result: StudyTables, directory: Path) -> None:
    """trials.csv, measurements.csv and pareto.csv, each written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in (
        ("trials.csv", result.trials),
        ("measurements.csv", result.measurements),
        ("pareto.csv", result.pareto),
    ):
        with atomic_path(directory / name) as temporary:
            frame.to_csv(temporary, index=False)


def measured_metrics(result: StudyTables) -> pd.DataFrame:
    """Completed trials with every measured metric at every listed level as a ``<metric>@<level>``
    column (``p50_ms@c1``, ``p99_ms@r500``), beside the trial's own (``server_memory_mb``,
    capacities)."""
    levels = [column for column in result.objectives if "@c" in column or "@r" in column]
    trials = result.trials[result.trials["state"] == "COMPLETE"].drop(columns=levels)
    listed = listed_levels(result.measurements)
    if listed.empty:
        return trials
    wide = listed.pivot(index="number", columns="level", values=list(METRICS))
    wide.columns = [metric_column(metric, level) for metric, level in wide.columns]
    return trials.merge(wide, left_on="number", right_index=True)


def listed_levels(measurements: pd.DataFrame) -> pd.DataFrame:
    """The rows of the levels the spec lists (not the loads a capacity search chose)."""
    return measurements[measurements["search"].isna()]


def pareto_front(frame: pd.DataFrame, objectives: list[str], directions: list[str]) -> pd.DataFrame:
    """Rows of ``frame`` that no other row dominates on ``objectives``."""
    signs = [1 if d == "minimize" else -1 for d in directions]
    values = frame[objectives].to_numpy(dtype=float) * signs
    keep = [not any((other <= row).all() and (other < row).any() for other in values) for row in values]
    return frame.loc[np.asarray(keep, dtype=bool)]  # a boolean mask, even when empty (not a column list)


def knee(frame: pd.DataFrame, objectives: list[str], directions: list[str]) -> int:
    """The knee of a front: the trial closest to the ideal point once each objective is scaled
    to [0, 1] over the front (0 = best value seen, 1 = worst)."""
    scaled = []
    for objective, direction in zip(objectives, directions):
        values = frame[objective].astype(float)
        span = values.max() - values.min()
        position = (values - values.min()) / span if span > 0 else values * 0
        scaled.append(position if direction == "minimize" else 1 - position)
    distance = np.sqrt(sum(s**2 for s in scaled))
    return int(frame.loc[distance.idxmin(), "number"])


def hypervolume(points: np.ndarray, directions: list[str], reference: list[float]) -> float:
    """The hypervolume a set of objective vectors dominates up to ``reference`` (Optuna's exact
    algorithm; maximized objectives are negated, points beyond the reference ignored)."""
    from optuna._hypervolume import compute_hypervolume  # the implementation Optuna's plots use

    signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    losses = np.asarray(points, dtype=float).reshape(-1, len(directions)) * signs
    bound = np.asarray(reference, dtype=float) * signs
    inside = losses[(losses < bound).all(axis=1)]
    return float(compute_hypervolume(inside, bound)) if len(inside) else 0.0


def reference_point(values: pd.DataFrame, directions: list[str]) -> list[float]:
    """A point every row dominates: 10 % beyond the worst value of each objective."""
    point = []
    for column, direction in zip(values.columns, directions):
        worst = values[column].max() if direction == "minimize" else values[column].min()
        margin = 0.1 * abs(worst) + 1e-9
        point.append(float(worst + margin if direction == "minimize" else worst - margin))
    return point
