"""What the report says, computed once; the HTML, PNG and Markdown renderers only draw it."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from sweeper.artifacts import time_in_process
from sweeper.errors import UsageError
from sweeper.results import StudyTables, tables
from sweeper.spec import KNOBS
from sweeper.study import stored_model_io
from sweeper.tensors import generate_inputs

# The stacked latency breakdown, bottom to top; "network" is the client's mean latency minus
# the time Triton accounts for (serialization, transfer, client overhead).
BREAKDOWN_PARTS = ("queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms", "network_ms")
BREAKDOWN_LABELS = {
    "queue_ms": "queue",
    "compute_input_ms": "compute input",
    "compute_infer_ms": "compute infer",
    "compute_output_ms": "compute output",
    "network_ms": "client / network / serialization",
}

# How each kind of trial is drawn on the Pareto plot (plotly and matplotlib alike); the
# baseline is drawn again, as a star, over its group's marker.
PARETO_GROUPS = {
    "infeasible": {"color": "#e0e0e0", "size": 7, "plotly": "x", "matplotlib": "x"},
    "dominated": {"color": "#a0a0a0", "size": 8, "plotly": "circle", "matplotlib": "o"},
    "Pareto front": {"color": "#d62728", "size": 11, "plotly": "circle", "matplotlib": "o"},
    "baseline": {"color": "#000000", "size": 16, "plotly": "star", "matplotlib": "*"},
}


@dataclasses.dataclass(frozen=True)
class ReportInfo:
    study_name: str
    objectives: list[str]
    directions: list[str]
    tables: StudyTables
    points: pd.DataFrame
    """Completed trials with their objectives and a ``group`` from PARETO_GROUPS (the baseline,
    drawn as a star on top, is the row whose ``baseline`` is true)."""
    breakdown_concurrency: int
    breakdown: pd.DataFrame
    """One row per Pareto trial and the baseline: number, label, the BREAKDOWN_PARTS, mean_ms."""
    pareto: pd.DataFrame
    """Pareto trials with each objective's ratio to the baseline (``<objective> / baseline``)."""
    baseline: dict | None
    best_latency: dict | None
    """The feasible trial with the lowest p50 at the breakdown concurrency, with its breakdown."""
    in_process_ms: float | None
    reference_point: list[float] | None
    running: int
    problems: pd.DataFrame
    """Failed and infeasible trials with their reasons."""

    def pareto_group(self, group: str) -> pd.DataFrame:
        """The points drawn as ``group`` (a PARETO_GROUPS key), sorted by the first objective."""
        chosen = self.points["baseline"] if group == "baseline" else self.points["group"] == group
        return self.points[chosen].sort_values(self.objectives[0])


def collect(study: optuna.Study, directory: Path) -> ReportInfo:
    result = tables(study)
    if result.trials.empty or not (result.trials["state"] == "COMPLETE").any():
        raise UsageError(
            f"study '{study.study_name}' in {directory} has no completed trial yet",
            hint="run more trials ('sweeper run SPEC'), or look at trials.csv for the failures",
        )
    measurements = result.measurements
    level = int(measurements["concurrency"].min())
    at_level = measurements[measurements["concurrency"] == level].set_index("number")
    at_level = at_level.assign(
        network_ms=(at_level["mean_ms"] - at_level[list(BREAKDOWN_PARTS[:-1])].sum(axis=1)).clip(lower=0)
    )
    trials = result.trials.set_index("number", drop=False)
    baseline_rows = trials[trials["baseline"] & (trials["state"] == "COMPLETE")]
    baseline_number = int(baseline_rows.index[0]) if not baseline_rows.empty else None

    shown = sorted(set(result.pareto["number"]) | ({baseline_number} if baseline_number is not None else set()))
    breakdown = at_level.loc[[n for n in shown if n in at_level.index], [*BREAKDOWN_PARTS, "mean_ms", "p50_ms"]]
    breakdown = breakdown.assign(label=[_label(trials.loc[n], n == baseline_number) for n in breakdown.index])
    breakdown = breakdown.reset_index()

    pareto = result.pareto.copy()
    if baseline_number is not None:
        for objective in result.objectives:
            reference = trials.loc[baseline_number, objective]
            pareto[f"{objective} / baseline"] = pareto[objective] / reference if reference else math.nan

    feasible = trials[trials["feasible"]]
    feasible_levels = at_level.loc[[n for n in feasible.index if n in at_level.index]]
    best = None
    if not feasible_levels.empty:
        number = int(feasible_levels["p50_ms"].idxmin())
        best = {"number": number, "label": _label(trials.loc[number], number == baseline_number),
                **feasible_levels.loc[number].to_dict()}
    baseline = None
    if baseline_number is not None and baseline_number in at_level.index:
        baseline = {"number": baseline_number, "label": _label(trials.loc[baseline_number], True),
                    **at_level.loc[baseline_number].to_dict(),
                    **{o: trials.loc[baseline_number, o] for o in result.objectives}}

    completed = result.trials[result.trials["state"] == "COMPLETE"]
    on_front = completed["number"].isin(result.pareto["number"])
    points = completed.assign(
        group=np.where(on_front, "Pareto front", np.where(completed["feasible"], "dominated", "infeasible"))
    )

    problems = result.trials[~result.trials["feasible"]]  # failed trials are never feasible
    problems = problems[["number", "state", *KNOBS, "infeasible", "failure"]]
    return ReportInfo(
        study_name=study.study_name,
        objectives=result.objectives,
        directions=[d.name.lower() for d in study.directions],
        tables=result,
        points=points,
        breakdown_concurrency=level,
        breakdown=breakdown,
        pareto=pareto,
        baseline=baseline,
        best_latency=best,
        in_process_ms=_in_process_ms(directory, study),
        reference_point=_reference_point(feasible, result.objectives, study.directions),
        running=int((result.trials["state"] == "RUNNING").sum()),
        problems=problems,
    )


def _label(row: pd.Series, baseline: bool) -> str:
    text = (
        f"#{int(row['number'])} mbs={row['max_batch_size']} delay={row['max_queue_delay_us']}us "
        f"x{row['instance_count']} {row['protocol']} {row['precision']}"
    )
    return f"{text} (baseline)" if baseline else text


def _reference_point(feasible: pd.DataFrame, objectives: list[str], directions) -> list[float] | None:
    """A point every feasible trial dominates: 10 % beyond the worst value of each objective."""
    complete = feasible[objectives].dropna()
    if complete.empty:
        return None
    point = []
    for objective, direction in zip(objectives, directions):
        values = complete[objective]
        if direction == optuna.study.StudyDirection.MINIMIZE:
            point.append(float(values.max()) * 1.1 + 1e-9)
        else:
            point.append(float(values.min()) * 0.9 - 1e-9)
    return point


def _in_process_ms(directory: Path, study: optuna.Study) -> float | None:
    """Batch-1 ONNX Runtime latency of the FP32 model in this process: the 'local' baseline."""
    model = directory / "models" / "fp32" / "model.onnx"
    if not model.is_file():
        return None
    inputs, _ = stored_model_io(study, model)
    if any(-1 in tensor.shape for tensor in inputs):
        return None  # the spec gave the shapes; the graph alone cannot say them
    low, high = study.user_attrs.get("input_range", (0.0, 1.0))
    return time_in_process(model, generate_inputs(inputs, 1, low=low, high=high, seed=0), repeats=30)


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
