"""Stage 7: the study as tables (pandas), written as trials.csv, measurements.csv and pareto.csv.

Everything is derived from the Optuna storage, so a report can be rebuilt from study.db alone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pandas as pd

from sweeper.load import Measurement, by_column
from sweeper.spec import KNOBS
from sweeper.study import TIMINGS

MEASUREMENT_COLUMNS = ["number", *(f.name for f in dataclasses.fields(Measurement))]


@dataclasses.dataclass(frozen=True)
class StudyTables:
    trials: pd.DataFrame
    measurements: pd.DataFrame
    pareto: pd.DataFrame
    objectives: list[str]


def objective_columns(study: optuna.Study) -> list[str]:
    return list(study.user_attrs.get("objectives", []))


def tables(study: optuna.Study) -> StudyTables:
    objectives = objective_columns(study)
    trial_rows, measurement_rows = [], []
    for trial in study.get_trials(deepcopy=False):
        measurements = trial.user_attrs.get("measurements", [])
        measurement_rows += [{"number": trial.number, **m} for m in measurements]
        figures = by_column(measurements)
        timings = trial.user_attrs.get("timings", {})
        complete = trial.state == optuna.trial.TrialState.COMPLETE
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
                "stable": all(m["stable"] for m in measurements) if measurements else None,
                "client_bound": any(m["client_bound"] for m in measurements) if measurements else None,
                "infeasible": _infeasible_reason(trial) if complete else None,
                "failure": trial.user_attrs.get("failure")
                or ("interrupted before it finished" if trial.state == optuna.trial.TrialState.FAIL else None),
            }
        )
    trials = pd.DataFrame(trial_rows)
    measurements = pd.DataFrame(measurement_rows, columns=MEASUREMENT_COLUMNS)
    front = {t.number for t in study.best_trials} if not trials.empty else set()
    pareto = trials[trials["number"].isin(front)] if not trials.empty else trials
    return StudyTables(trials=trials, measurements=measurements, pareto=pareto, objectives=objectives)


def _infeasible_reason(trial: optuna.trial.FrozenTrial) -> str | None:
    violated = [f"{key} (+{value:.3g})" for key, value in trial.constraints.items() if value > 0]
    if not violated:
        return None
    accuracy = trial.user_attrs.get("infeasible")
    return "; ".join(([accuracy] if accuracy else []) + [f"violates {v}" for v in violated])


def write_tables(result: StudyTables, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    result.trials.to_csv(directory / "trials.csv", index=False)
    result.measurements.to_csv(directory / "measurements.csv", index=False)
    result.pareto.to_csv(directory / "pareto.csv", index=False)
