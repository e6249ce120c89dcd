"""What the report says, computed once; the HTML, PNG and Markdown renderers only draw it."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable

import numpy as np
import optuna
import pandas as pd

from sweeper.errors import UsageError
from sweeper.fleet import FleetTarget, budget_words, fleet_of, front_fleets, sizing_capacity
from sweeper.front import hypervolume, reference_point
from sweeper.record import read_trial
from sweeper.results import StudyTables, confidence_sentences, level_figures, listed_levels, study_recommendation
from sweeper.vocabulary import (
    CAPACITY,
    COMPUTE_PARTS,
    TRIAL_METRICS,
    InProcessTiming,
    Ranking,
    knob_label,
    parameter_columns,
)

# The stacked latency breakdown, bottom to top; "network" is the client's mean latency minus
# the time Triton accounts for (serialization, transfer, client overhead).
BREAKDOWN_PARTS = ("queue_ms", *COMPUTE_PARTS, "network_ms")
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


SIZING_NOTE = (
    "capacity@<percentile><=<budget>: inferences/s at the highest load whose latency percentile stayed within the "
    "budget (':load' is that load, ':note' says when none met it or the search reached its upper bound); "
    "server_memory_mb: the peak resident memory of the server's processes (or container) over the measurement."
)


@dataclasses.dataclass(frozen=True)
class ReportInfo:
    """Everything the report shows, computed by ``collect``."""

    study_name: str
    objectives: list[str]
    ranked_by: str
    """The objectives and constraints of the front, in words."""
    reranked: bool
    """Whether the front is ranked by objectives other than the study's own (nothing re-measured)."""
    tables: StudyTables
    points: pd.DataFrame
    """Completed trials with their objectives, a ``label`` and a ``group`` from PARETO_GROUPS
    (the baseline, drawn as a star on top, is the row whose ``baseline`` is true)."""
    breakdown_level: str
    """The listed level with the lowest load (``c1``, ``r100``), where the breakdown is taken."""
    breakdown_load: str
    """That level in words (``concurrency 1``, ``100 requests/s (poisson)``)."""
    breakdown: pd.DataFrame
    """One row per Pareto trial and the baseline: number, label, the BREAKDOWN_PARTS, mean_ms,
    p50_ms, avg_batch_size (at the breakdown level)."""
    batching: pd.DataFrame
    """Measured average batch size: one row per Pareto trial and the baseline (by label), one
    column per listed level (``c1``, ``c8``, ``r500``, ...)."""
    pareto: pd.DataFrame
    """Pareto trials with each objective's ratio to the baseline (``<objective> / baseline``)."""
    sizing: pd.DataFrame
    """What a deployment is sized by, for the Pareto trials and the baseline (by label): each
    capacity (inferences/s within its latency budget), the load it was found at and its note,
    and the peak server (and GPU) memory; only the columns the study measured."""
    baseline: dict | None
    best_latency: dict | None
    """The feasible trial with the lowest p50 at the breakdown level, with its breakdown."""
    in_process: InProcessTiming | None
    """The reference model timed in the sweeper's process when the study was prepared."""
    hypervolume_history: pd.DataFrame | None
    """number, hypervolume of the feasible trials up to it (None with one objective)."""
    importances: dict[str, dict[str, float] | str]
    """Per objective: each knob's importance (Optuna's), or why it could not be computed."""
    generators: dict[str, int]
    """How many completed trials each load generator measured."""
    running: int
    problems: pd.DataFrame
    """Failed and infeasible trials with their reasons."""
    confidence: list[str] = dataclasses.field(default_factory=list)
    """Sentences on how far the figures can be trusted: confirmation, ties, drift."""
    machines: list[str] = dataclasses.field(default_factory=list)
    """Each machine (fingerprint) the trials were measured on, in words."""
    recommended: int | None = None
    """The trial the measurements stand behind (``sweeper.front.recommend``); None when no
    trial is feasible."""
    fleet_title: str | None = None
    """What the fleet table sizes for, in words (None without ``--target-rate``)."""
    fleet: pd.DataFrame | None = None
    """The servers each Pareto trial and the baseline need for the target (by label), their
    memory in all, and cost per million inferences with a cost (``sweeper.fleet``)."""
    fleet_sentences: list[str] = dataclasses.field(default_factory=list)
    """The recommendation's fleet in words."""

    def recommended_point(self) -> pd.Series | None:
        """The recommendation's row of ``points``, as the Pareto plot marks it (None: no pick)."""
        chosen = self.points[self.points["number"] == self.recommended]
        return None if chosen.empty else chosen.iloc[0]

    def pareto_group(self, group: str) -> pd.DataFrame:
        """The points drawn as ``group`` (a PARETO_GROUPS key), sorted by the first objective."""
        chosen = self.points["baseline"] if group == "baseline" else self.points["group"] == group
        return self.points[chosen].sort_values(self.objectives[0])


def _lowest_level(measurements: pd.DataFrame) -> tuple[str, str]:
    """The listed level with the lowest load, and it in words."""
    row = measurements.assign(load=measurements["concurrency"].fillna(measurements["request_rate"])).sort_values("load")
    first = row.iloc[0]
    if pd.notna(first["concurrency"]):
        return str(first["level"]), f"concurrency {int(first['concurrency'])}"
    return str(first["level"]), f"{float(first['request_rate']):g} requests/s ({first['arrival']})"


def collect(
    result: StudyTables,
    *,
    study_name: str,
    in_process: InProcessTiming | None,
    importances: dict[str, dict[str, float] | str],
    reranked: bool = False,
    machines: list[dict] | None = None,
    target: FleetTarget | None = None,
) -> ReportInfo:
    """Compute the report of a study's tables (pure: the importances, which need Optuna's study,
    are computed by the caller: ``sweeper.report``; the in-process timing is a stored fact);
    with a ``target``, the fleet each Pareto trial needs for it."""
    _require_completed(result, study_name)
    measurements, level, load = _first_measurements(result)
    at_level = _with_medians(_at_level(measurements, level), level_figures(result), level)
    trials = result.trials.set_index("number", drop=False)
    baseline_rows = trials[trials["baseline"] & (trials["state"] == "COMPLETE")]
    baseline_number = int(baseline_rows.index[0]) if not baseline_rows.empty else None
    label = _labeller(trials, baseline_number)
    shown = sorted(set(result.pareto["number"]) | ({baseline_number} if baseline_number is not None else set()))
    breakdown, batching = _breakdown_and_batching(measurements, at_level, shown, label)
    feasible = trials[trials["feasible"]]
    recommended = study_recommendation(result).number if not feasible.empty else None
    return ReportInfo(
        study_name=study_name,
        objectives=result.objectives,
        ranked_by=describe_ranking(result.ranking),
        reranked=reranked,
        tables=result,
        breakdown_level=level,
        breakdown_load=load,
        breakdown=breakdown,
        batching=batching,
        pareto=_pareto_against_baseline(result, trials, baseline_number),
        sizing=_sizing(trials, shown, label),
        baseline=_baseline_row(at_level, trials, baseline_number, result.objectives, label),
        best_latency=_best_latency(at_level, feasible, label),
        in_process=in_process,
        importances=importances,
        machines=[_machine(m) for m in machines or []],
        recommended=recommended,
        **_study_state(result, feasible),
        **(_fleets(result, shown, label, recommended, target) if target is not None else {}),
    )


def _require_completed(result: StudyTables, study_name: str) -> None:
    if result.trials.empty or not (result.trials["state"] == "COMPLETE").any():
        raise UsageError(
            f"study '{study_name}' has no completed trial yet",
            hint="run more trials ('sweeper run SPEC'), or look at trials.csv for the failures",
        )


def _first_measurements(result: StudyTables) -> tuple[pd.DataFrame, str, str]:
    """The listed levels' first measurements (a confirmed trial's repeats are in its medians),
    and the lowest listed level the breakdown is drawn at, with it in words."""
    measurements = listed_levels(result.measurements)
    measurements = measurements[measurements["repeat_of"].isna()]
    return (measurements, *_lowest_level(measurements))


def _study_state(result: StudyTables, feasible: pd.DataFrame) -> dict:
    """The report's fields on the study as a whole: its points, progress, generators, problems
    and how far it can be trusted."""
    completed = result.trials[result.trials["state"] == "COMPLETE"]
    problems = result.trials[~result.trials["feasible"]]  # failed trials are never feasible
    return {
        "points": _points(completed, result.pareto),
        "hypervolume_history": _hypervolume_history(feasible, result.objectives, result.ranking.directions),
        "generators": {str(k): int(v) for k, v in completed["generator"].value_counts().items()},
        "running": int((result.trials["state"] == "RUNNING").sum()),
        "problems": problems[["number", "state", *parameter_columns(problems.columns), "infeasible", "failure"]],
        "confidence": confidence_sentences(result),
    }


def _fleets(
    result: StudyTables, shown: list[int], label: Callable[[int], str], recommended: int | None, target: FleetTarget
) -> dict:
    """The report's fleet fields: the table of ``shown`` trials and the recommendation's sentences."""
    column = sizing_capacity(result.ranking)
    closed_loop = bool(result.measurements["request_rate"].isna().all())
    fleet = front_fleets(result.trials, shown, column, target, closed_loop=closed_loop)
    fleet.index = [label(int(n)) for n in fleet.pop("number")]
    sentences = []
    if recommended is not None:
        row = result.trials.set_index("number", drop=False).loc[recommended]
        sentences = [f"The recommendation, {label(recommended)}:"]
        sentences += fleet_of(row, column, target, closed_loop=closed_loop).sentences()
    spare = f", {target.headroom:.0%} headroom" if target.headroom else ""
    title = f"Servers for {target.rate:,.0f} inferences/s at {budget_words(column)}{spare}"
    return {"fleet_title": title, "fleet": fleet, "fleet_sentences": sentences}


def _machine(fingerprint: dict) -> str:
    gpus = ", ".join(fingerprint.get("gpus") or []) or "no GPU"
    return (
        f"{fingerprint.get('cpu')} x{fingerprint.get('cpus')} ({fingerprint.get('machine')}), {gpus}; "
        f"{fingerprint.get('system')}; measured by {fingerprint.get('generator')}"
    )


def _breakdown_and_batching(
    measurements: pd.DataFrame, at_level: pd.DataFrame, shown: list[int], label: Callable[[int], str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The breakdown of the trials shown at the breakdown level, and their batch size per level."""
    breakdown = at_level.loc[
        [n for n in shown if n in at_level.index], [*BREAKDOWN_PARTS, "mean_ms", "p50_ms", "avg_batch_size"]
    ]
    breakdown = breakdown.assign(label=[label(n) for n in breakdown.index]).reset_index()
    batching = measurements[measurements["number"].isin(shown)].pivot(
        index="number", columns="level", values="avg_batch_size"
    )
    batching.index = [label(n) for n in batching.index]
    return breakdown, batching


def _at_level(measurements: pd.DataFrame, level: str) -> pd.DataFrame:
    """The measurements at ``level`` by trial, with the client/network rest of the mean latency."""
    at_level = measurements[measurements["level"] == level].set_index("number")
    parts = at_level[list(BREAKDOWN_PARTS[:-1])].sum(axis=1)
    return at_level.assign(network_ms=(at_level["mean_ms"] - parts).clip(lower=0))


def _with_medians(at_level: pd.DataFrame, figures: pd.DataFrame, level: str) -> pd.DataFrame:
    """``at_level`` with p50 as the median over a trial's repeats (the figure the tables show)
    and its lowest and highest measured (``p50_lo``, ``p50_hi``): a claim of improvement is
    held to them."""
    column = f"p50_ms@{level}"
    known = figures.reindex(at_level.index)
    return at_level.assign(
        p50_ms=known[column].fillna(at_level["p50_ms"]),
        p50_lo=known[f"{column}:lo"].fillna(at_level["p50_ms"]),
        p50_hi=known[f"{column}:hi"].fillna(at_level["p50_ms"]),
    )


def describe_ranking(ranking: Ranking) -> str:
    """``min p50_ms@c1, max throughput@c8; feasible when p99_ms@c1<=50``."""
    text = ", ".join(f"{o.direction[:3]} {o.column}" for o in ranking.objectives)
    return text + (f"; feasible when {', '.join(b.label for b in ranking.constraints)}" if ranking.constraints else "")


def _labeller(trials: pd.DataFrame, baseline_number: int | None) -> Callable[[int], str]:
    labels = {n: knob_label(trials.loc[n]) for n in trials.index}

    def label(number: int) -> str:
        return f"#{number} {labels[number]}" + (" (baseline)" if number == baseline_number else "")

    return label


def _points(completed: pd.DataFrame, pareto: pd.DataFrame) -> pd.DataFrame:
    on_front = completed["number"].isin(pareto["number"])
    return completed.assign(
        group=np.where(on_front, "Pareto front", np.where(completed["feasible"], "dominated", "infeasible")),
        label=[knob_label(row) for _, row in completed.iterrows()],
    )


def _pareto_against_baseline(result: StudyTables, trials: pd.DataFrame, baseline_number: int | None) -> pd.DataFrame:
    pareto = result.pareto.copy()
    if baseline_number is not None:
        for objective in result.objectives:
            reference = trials.loc[baseline_number, objective]
            pareto[f"{objective} / baseline"] = pareto[objective] / reference if reference else math.nan
    return pareto


def _sizing(trials: pd.DataFrame, shown: list[int], label: Callable[[int], str]) -> pd.DataFrame:
    capacity = [c for c in trials.columns if c.startswith(f"{CAPACITY}@")]
    memory = [c for c in TRIAL_METRICS if c in trials.columns and trials[c].notna().any()]
    rows = trials.loc[[n for n in shown if n in trials.index], capacity + memory]
    rows = rows.dropna(axis=1, how="all")
    rows.index = [label(n) for n in rows.index]
    return rows


def _best_latency(at_level: pd.DataFrame, feasible: pd.DataFrame, label: Callable[[int], str]) -> dict | None:
    feasible_levels = at_level.loc[[n for n in feasible.index if n in at_level.index]]
    if feasible_levels.empty:
        return None
    number = int(feasible_levels["p50_ms"].idxmin())
    return {"number": number, "label": label(number), **feasible_levels.loc[number].to_dict()}


def _baseline_row(
    at_level: pd.DataFrame,
    trials: pd.DataFrame,
    baseline_number: int | None,
    objectives: list[str],
    label: Callable[[int], str],
) -> dict | None:
    if baseline_number is None or baseline_number not in at_level.index:
        return None
    return {
        "number": baseline_number,
        "label": label(baseline_number),
        **at_level.loc[baseline_number].to_dict(),
        **{o: trials.loc[baseline_number, o] for o in objectives},
    }


def _hypervolume_history(feasible: pd.DataFrame, objectives: list[str], directions: list[str]) -> pd.DataFrame | None:
    if len(objectives) < 2 or feasible.empty:
        return None
    ordered = feasible.reset_index(drop=True).sort_values("number")
    values = ordered[objectives].astype(float)
    reference = reference_point(values, directions)
    history = [hypervolume(values.iloc[: i + 1].to_numpy(), directions, reference) for i in range(len(values))]
    return pd.DataFrame({"number": ordered["number"].to_numpy(), "hypervolume": history})


def param_importances(study: optuna.Study, ranking: Ranking) -> dict[str, dict[str, float] | str]:
    """Per objective of ``ranking``: each knob's importance (Optuna's fANOVA), or why it could
    not be computed. Fits a model: the report's one costly computation besides the timing."""
    found: dict[str, dict[str, float] | str] = {}
    for column in ranking.columns:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found[column] = dict(
                    optuna.importance.get_param_importances(
                        study, target=lambda t, c=column: read_trial(t).figures.get(c, math.nan)
                    )
                )
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # too few or too alike trials
            found[column] = f"not computed ({str(exc)[:200]})"
    return found


def in_process_of(facts: dict) -> InProcessTiming | None:
    """The in-process timing the study stored when it was prepared (None before studies stored it)."""
    stored = facts.get("in_process")
    return InProcessTiming(**stored) if stored else None
