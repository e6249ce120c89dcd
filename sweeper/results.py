"""Stage 7: the study as tables (pandas), written as trials.csv, measurements.csv and pareto.csv.

Everything is derived from the Optuna storage, so a report can be rebuilt from study.db alone.
Redrawn proposals (a configuration the sampler proposed again) are not trials of the sweep and
appear in no table. ``max_queue_delay_us`` is ``off`` (no dynamic batching) or microseconds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from sweeper.files import atomic_path
from sweeper.load import Measurement
from sweeper.study import TIMINGS, kind_of
from sweeper.vocabulary import KNOBS, METRICS, metric_column, metric_values

MEASUREMENT_COLUMNS = ["number", *(f.name for f in dataclasses.fields(Measurement))]


@dataclasses.dataclass(frozen=True)
class StudyTables:
    """The three tables of a study, and the objective columns in the study's order."""

    trials: pd.DataFrame
    measurements: pd.DataFrame
    pareto: pd.DataFrame
    objectives: list[str]
    redraws: int
    """Proposals that repeated a configuration and were asked again (not in the tables)."""


def tables(study: optuna.Study) -> StudyTables:
    """The tables of a study as it stands (running trials included, as RUNNING rows)."""
    objectives = list(study.user_attrs.get("objectives", []))
    all_trials = study.get_trials(deepcopy=False)
    retried_by = {t.user_attrs["retry_of"]: t.number for t in all_trials if "retry_of" in t.user_attrs}
    trial_rows, measurement_rows, redraws = [], [], 0
    for trial in all_trials:
        kind = kind_of(trial)
        if kind == "duplicate":
            redraws += 1
            continue
        measurements = trial.user_attrs.get("measurements", [])
        measurement_rows += [{"number": trial.number, **m} for m in measurements]
        figures = metric_values(measurements)
        timings = trial.user_attrs.get("timings", {})
        complete = kind == "complete"
        trial_rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "baseline": bool(trial.user_attrs.get("baseline", False)),
                **{knob: trial.params.get(knob) for knob in KNOBS},
                **{column: figures.get(column) for column in objectives},
                "feasible": complete and all(v <= 0 for v in trial.constraints.values()),
                "max_abs_error": trial.user_attrs.get("max_abs_error"),
                "cosine_similarity": trial.user_attrs.get("cosine_similarity"),
                **{key: timings.get(key) for key in TIMINGS},
                "reuse": trial.user_attrs.get("reuse"),
                "generator": measurements[0]["generator"] if measurements else None,
                "stable": all(m["stable"] for m in measurements) if measurements else None,
                "client_bound": any(m["client_bound"] for m in measurements) if measurements else None,
                "infeasible": _infeasible_reason(trial) if complete else None,
                "failure": _failure(trial, kind, retried_by),
                "retry_of": trial.user_attrs.get("retry_of"),
            }
        )
    trials = pd.DataFrame(trial_rows)
    measurements = pd.DataFrame(measurement_rows, columns=MEASUREMENT_COLUMNS)
    directions = [d.name.lower() for d in study.directions]
    pareto = pareto_front(trials[trials["feasible"]], objectives, directions) if not trials.empty else trials
    return StudyTables(trials, measurements, pareto, objectives, redraws)


def _failure(trial: optuna.trial.FrozenTrial, kind: str, retried_by: dict[int, int]) -> str | None:
    if kind == "failed":
        return trial.user_attrs.get("failure", "failed")
    if kind != "interrupted":
        return None
    why = trial.user_attrs.get("interrupted") or "its sweeper stopped (killed, or its heartbeat ended)"
    again = retried_by.get(trial.number)
    return f"interrupted ({why}); " + (f"re-run as trial {again}" if again is not None else "re-run on resume")


def _infeasible_reason(trial: optuna.trial.FrozenTrial) -> str | None:
    violated = [f"{key} (+{value:.3g})" for key, value in trial.constraints.items() if value > 0]
    if not violated:
        return None
    accuracy = trial.user_attrs.get("infeasible")
    return "; ".join(([accuracy] if accuracy else []) + [f"violates {v}" for v in violated])


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
    """Completed trials with every measured metric at every level as a ``<metric>@c<N>`` column."""
    trials = result.trials[result.trials["state"] == "COMPLETE"].drop(columns=result.objectives)
    if result.measurements.empty:
        return trials
    wide = result.measurements.pivot(index="number", columns="concurrency", values=list(METRICS))
    wide.columns = [metric_column(metric, level) for metric, level in wide.columns]
    return trials.merge(wide, left_on="number", right_index=True)


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
