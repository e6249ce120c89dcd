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
from sweeper.front import Recommendation, indistinguishable, knee, pareto_front, recommend, recommendation_sentences
from sweeper.measured import MEASUREMENT_FIELDS, Measurement
from sweeper.record import StudyRecord, TrialRecord
from sweeper.vocabulary import (
    KNOBS,
    METRICS,
    PERCENTILES,
    Bound,
    Objective,
    Ranking,
    is_capacity,
    metric_column,
    parameter_columns,
    parse_capacity_column,
)

_INTERVAL_COLUMNS = [f"{p}:{side}" for p in PERCENTILES for side in ("lo", "hi")]
MEASUREMENT_COLUMNS = [
    "number",
    "repeat_of",
    "level",
    *(f for f in MEASUREMENT_FIELDS if f != "intervals"),
    *_INTERVAL_COLUMNS,
]
"""measurements.csv: one row per trial and load measured (``level`` ``c8`` or ``r500``; ``search``
names the capacity search that chose a load, empty for the levels the spec lists;
``repeat_of`` the trial a confirmation repeat or anchor measured again; ``p99_ms:lo`` and
``p99_ms:hi`` the 95 % interval of each percentile, empty where the generator kept no samples or
they do not bound that side; ``verdict`` a capacity search's judgement of the load, and
``remeasured`` why a load was measured again, both rows kept)."""


def _measurement_row(trial: TrialRecord, measurement: Measurement) -> dict:
    row = {"number": trial.number, "repeat_of": trial.repeat_of, "level": measurement.level, **measurement.as_dict()}
    for percentile, (low, high) in (row.pop("intervals") or {}).items():
        row.update({f"{percentile}:lo": low, f"{percentile}:hi": high})
    return row


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
    drift: Drift | None
    """The baseline's drift over the study under this ranking (None without an anchor)."""


@dataclasses.dataclass(frozen=True)
class Confirmed:
    """A trial's figures over its first measurement and its fresh-server repeats: the median of
    each figure, and the lowest and highest measured (min-max: with three measurements a MAD or
    a bootstrap interval says no more). The tables name the spread ``<objective>:lo`` and
    ``<objective>:hi`` (``p50_ms@c1:lo``)."""

    figures: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]
    measurements: int


def confirmed_figures(trial: TrialRecord, repeats: list[TrialRecord]) -> Confirmed:
    """``trial``'s figures with those of its completed ``repeats``."""
    runs = [trial.figures, *(r.figures for r in repeats)]
    columns = [c for c in trial.figures if all(c in run for run in runs)]
    values = {c: [run[c] for run in runs] for c in columns}
    return Confirmed(
        {c: float(np.median(v)) for c, v in values.items()},
        {c: float(min(v)) for c, v in values.items()},
        {c: float(max(v)) for c, v in values.items()},
        len(runs),
    )


def tables(study: StudyRecord, ranking: Ranking | None = None, *, confirmed: bool = True) -> StudyTables:
    """The tables of a study as it stands (running trials included, as RUNNING rows), ranked by
    the study's own objectives and constraints or by ``ranking`` (a re-rank: nothing is
    measured again, every figure is in the records). A trial measured again on fresh servers
    (``study.confirm_repeats``, the baseline's anchors) is ranked by its medians, with their
    spread; ``confirmed=False`` ranks every trial by its first measurement. Repeats are no rows of
    trials.csv; measurements.csv keeps each of their measurements (``repeat_of``)."""
    ranking = ranking or study.ranking
    objectives = ranking.columns
    retried_by = {t.retry_of: t.number for t in study.trials if t.retry_of is not None}
    repeats: dict[int, list[TrialRecord]] = {}
    for trial in study.trials:
        if trial.repeat_of is not None and trial.kind == "complete":
            repeats.setdefault(trial.repeat_of, []).append(trial)
    moved = drift(study, ranking)
    trial_rows, measurement_rows = [], []
    for trial in study.trials:
        if trial.kind == "duplicate":
            continue
        measurement_rows += [_measurement_row(trial, m) for m in trial.measurements]
        if trial.repeat_of is None:
            found = repeats.get(trial.number, []) if confirmed and trial.kind == "complete" else []
            summary = confirmed_figures(trial, found) if found else None
            # A median over repeats run side by side with the baseline's own carries no stretch's drift.
            flagged = confirmed and moved is not None and summary is None and trial.kind == "complete"
            drifted = moved.at(trial.number) if flagged else None
            row = _trial_row(trial, ranking, retried_by, summary, drifted)
            row["confirmed"] = any(not r.anchor for r in found)
            row.update(_capacity_columns([trial, *found]))
            trial_rows.append(row)
    trials = pd.DataFrame(trial_rows)
    for column in parameter_columns(trials.columns)[len(KNOBS) :]:  # 2 stays 2 beside an unset value
        trials[column] = pd.Series([row.get(column) for row in trial_rows], index=trials.index, dtype=object)
    measurements = pd.DataFrame(measurement_rows, columns=MEASUREMENT_COLUMNS)
    pareto = pareto_front(trials[trials["feasible"]], objectives, ranking.directions) if not trials.empty else trials
    redraws = sum(t.kind == "duplicate" for t in study.trials)
    return StudyTables(trials, measurements, pareto, objectives, redraws, ranking, moved)


def _trial_row(
    trial: TrialRecord, ranking: Ranking, retried_by: dict[int, int], summary: Confirmed | None, drifted: str | None
) -> dict:
    config = trial.config.as_dict() if trial.config is not None else {}
    accuracy = trial.accuracy
    complete = trial.kind == "complete"
    figures = summary.figures if summary is not None else trial.figures
    spread = {}
    for column in ranking.columns:
        value = figures.get(column)
        low = summary.low.get(column) if summary is not None else value
        high = summary.high.get(column) if summary is not None else value
        spread.update({f"{column}:lo": low, f"{column}:hi": high})
    return {
        "number": trial.number,
        "state": {"complete": "COMPLETE", "running": "RUNNING", "waiting": "WAITING"}.get(trial.kind, "FAIL"),
        "baseline": trial.baseline,
        **{knob: config.get(knob) for knob in KNOBS},
        **{name: value for name, value in config.items() if name not in KNOBS},
        **{column: figures.get(column) for column in ranking.columns},
        "feasible": trial.feasible(ranking, figures),
        "measured": summary.measurements if summary is not None else (1 if complete else 0),
        **spread,
        "max_abs_error": accuracy.max_abs_error if accuracy else None,
        "cosine_similarity": accuracy.cosine_similarity if accuracy else None,
        "top1_agreement": accuracy.top1_agreement if accuracy else None,
        "server_memory_mb": figures.get("server_memory_mb", trial.memory.server_mb),
        "gpu_memory_mb": figures.get("gpu_memory_mb", trial.memory.gpu_mb),
        **dataclasses.asdict(trial.timings),
        "reuse": trial.reuse,
        "generator": trial.generator.name if trial.generator else None,
        "stable": trial.stable,
        "client_bound": trial.client_bound,
        "drift": drifted,
        "infeasible": _infeasible_reason(trial, ranking, figures) if complete else None,
        "failure": _failure(trial, retried_by),
        "retried": trial.retried,
        "retry_of": trial.retry_of,
        "neighbour_of": trial.neighbour_of,
    }


def _capacity_columns(runs: list[TrialRecord]) -> dict:
    """Each capacity found, over a trial's runs (its first measurement and its repeats): the
    median figure (inferences/s) and load it was found at, and why it is 0 or a lower bound
    (``capacity@p99_ms<=20``, ``...:load``, ``...:note``), the same medians the ranking uses."""
    columns = {}
    for capacity in runs[0].capacities:
        found = [c for run in runs for c in run.capacities if c.column == capacity.column]
        notes = list(dict.fromkeys(c.note for c in found if c.note))
        columns[capacity.column] = float(np.median([c.throughput for c in found]))
        columns[f"{capacity.column}:load"] = float(np.median([c.load for c in found]))
        columns[f"{capacity.column}:note"] = "; ".join(notes) or None
    return columns


def _failure(trial: TrialRecord, retried_by: dict[int, int]) -> str | None:
    if trial.kind == "failed":
        return trial.failure or "failed"
    if trial.kind != "interrupted":
        return None
    why = trial.interrupted or "its sweeper stopped (killed, or its heartbeat ended)"
    again = retried_by.get(trial.number)
    return f"interrupted ({why}); " + (f"re-run as trial {again}" if again is not None else "re-run on resume")


def _infeasible_reason(trial: TrialRecord, ranking: Ranking, figures: dict[str, float]) -> str | None:
    violated = trial.violations(ranking, figures)
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
    objectives_now = chosen or study.ranking.objectives
    primary = study.ranking.primary if study.ranking.primary in {o.column for o in objectives_now} else None
    return Ranking(objectives_now, bounds if constraints else study.ranking.constraints, primary)


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
    trials = result.trials[result.trials["state"] == "COMPLETE"]
    wide = level_figures(result)
    if wide.empty:
        return trials
    wide = wide[[c for c in wide.columns if not c.endswith((":lo", ":hi"))]]
    # The objectives stay as ranked (the same medians); every other level's metric is its median too.
    wide = wide.drop(columns=[column for column in wide.columns if column in trials.columns])
    return trials.merge(wide, left_on="number", right_index=True)


def level_figures(result: StudyTables) -> pd.DataFrame:
    """Every metric at every listed level of each trial that was ranked on its repeats (a
    confirmed trial, the baseline with its anchors) or on its one measurement: the median
    (``p50_ms@c1``) and the lowest and highest measured (``p50_ms@c1:lo``, ``:hi``), by trial
    number."""
    listed = listed_levels(result.measurements)
    if listed.empty:
        return pd.DataFrame()
    ranked_on_repeats = set(result.trials.loc[result.trials["measured"] > 1, "number"])
    owner = listed["repeat_of"].where(listed["repeat_of"].isin(ranked_on_repeats), listed["number"])
    listed = listed.assign(owner=owner.astype(int))
    listed = listed[listed["owner"].isin(set(result.trials["number"]))]
    grouped = listed.groupby(["owner", "level"])[list(METRICS)]
    frames = []
    for suffix, figures in (("", grouped.median()), (":lo", grouped.min()), (":hi", grouped.max())):
        wide = figures.unstack("level")
        wide.columns = [metric_column(metric, level) + suffix for metric, level in wide.columns]
        frames.append(wide)
    return pd.concat(frames, axis=1).rename_axis("number")


def listed_levels(measurements: pd.DataFrame) -> pd.DataFrame:
    """The rows of the levels the spec lists (not the loads a capacity search chose)."""
    return measurements[measurements["search"].isna()]


def study_recommendation(result: StudyTables, frame: pd.DataFrame | None = None) -> Recommendation:
    """``recommend`` over the feasible trials of ``frame`` (the study's trials by default) under
    the tables' ranking."""
    frame = result.trials if frame is None else frame
    ranking = result.ranking
    return recommend(frame[frame["feasible"]], ranking.columns, ranking.directions, ranking.primary)


def confirmation_candidates(study: StudyRecord, ranking: Ranking, margin: float, cap: int | None = None) -> list[int]:
    """The trials to measure again, by their first measurements: the knee, the Pareto trials,
    every feasible trial that a relative ``margin`` on each objective would put on the front
    (at most ``cap`` of these, in that order), and the baseline."""
    result = tables(study, ranking, confirmed=False)
    trials = result.trials
    feasible = trials[trials["feasible"]]
    chosen: list[int] = []
    if not feasible.empty:
        objectives, directions = ranking.columns, ranking.directions
        front = result.pareto
        chosen.append(knee(front, objectives, directions))
        chosen += sorted(int(n) for n in front["number"])
        signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
        best = front[objectives].to_numpy(dtype=float) * signs
        for _, row in feasible.sort_values("number").iterrows():
            point = row[objectives].to_numpy(dtype=float) * signs
            improved = point - np.abs(point) * margin
            if not any((other <= improved).all() and (other < improved).any() for other in best):
                chosen.append(int(row["number"]))
    baseline = [int(n) for n in trials[(trials["baseline"]) & (trials["state"] == "COMPLETE")]["number"]]
    chosen = [n for n in dict.fromkeys(chosen) if n not in baseline]
    return chosen[:cap] + baseline


def still_racing(study: StudyRecord, ranking: Ranking, candidates: list[int]) -> list[int]:
    """The candidates worth another measurement, by what was measured so far: one that another
    candidate beats beyond both spreads on every objective cannot come back to the front or the
    pick (successive halving's rule, on measured spreads), and is measured no more; with a
    primary objective, beaten beyond both spreads on it is enough, as the pick is made among the
    trials that the best on it cannot be told from (``recommend``). The baseline always runs:
    the recommendation compares against it."""
    result = tables(study, ranking)
    rows = result.trials.set_index("number")
    deciding = [ranking.primary] if ranking.primary is not None else ranking.columns
    signs = {c: 1.0 if d == "minimize" else -1.0 for c, d in zip(ranking.columns, ranking.directions)}
    alive = [n for n in candidates if n in rows.index and rows.loc[n, "state"] == "COMPLETE"]

    def beaten(loser: int, winner: int) -> bool:
        a, b = rows.loc[loser], rows.loc[winner]
        if not b["feasible"]:
            return False
        return all((b[f"{c}:hi"] < a[f"{c}:lo"]) if signs[c] > 0 else (b[f"{c}:lo"] > a[f"{c}:hi"]) for c in deciding)

    return [n for n in alive if rows.loc[n, "baseline"] or not any(beaten(n, other) for other in alive if other != n)]


@dataclasses.dataclass(frozen=True)
class Drift:
    """The baseline measured again through the study (anchors), per objective: its first value,
    each anchor's, and the spread its confirmation repeats showed side by side at the end."""

    baseline: int
    anchors: pd.DataFrame
    """One row per anchor: ``number``, then each objective's value and its change from the first
    measurement (``<objective>:change``, a fraction)."""
    spread: dict[str, float]
    """Per objective, (highest - lowest) / median over the baseline's first measurement and its
    confirmation repeats; empty without repeats."""

    @property
    def beyond(self) -> list[str]:
        """Objectives whose anchors moved further than the repeats' spread (none without repeats)."""
        return [
            column for column, spread in self.spread.items() if (self.anchors[f"{column}:change"].abs() > spread).any()
        ]

    def at(self, number: int) -> str | None:
        """What the anchor that closes trial ``number``'s stretch of the study (the first anchor
        after it) found moved beyond the repeats' spread, e.g. ``throughput@c8 -39.8%``; None
        when nothing did, without repeats, or after the last anchor (the baseline's confirmation
        repeats, run beside the others at the end, are the reference there)."""
        later = self.anchors[self.anchors["number"] > number].sort_values("number")
        if later.empty:
            return None
        anchor = later.iloc[0]
        moves = [
            f"{c} {anchor[f'{c}:change']:+.1%}"
            for c, spread in self.spread.items()
            if abs(anchor[f"{c}:change"]) > spread
        ]
        return ", ".join(moves) or None

    def describe(self) -> str:
        """One line: the largest move of each objective, and whether it is beyond the spread."""
        parts = []
        for column in [c for c in self.anchors.columns if c.endswith(":change")]:
            name = column.removesuffix(":change")
            largest = self.anchors[column].loc[self.anchors[column].abs().idxmax()]
            spread = f" (repeats' spread {self.spread[name]:.1%})" if name in self.spread else ""
            parts.append(f"{name} {largest:+.1%}{spread}")
        flag = "; beyond the spread: " + ", ".join(self.beyond) if self.beyond else ""
        return f"baseline (trial {self.baseline}) re-measured {len(self.anchors)}x: " + ", ".join(parts) + flag


def drift(study: StudyRecord, ranking: Ranking | None = None) -> Drift | None:
    """The baseline's drift over the study, or None without a completed baseline and anchor."""
    ranking = ranking or study.ranking
    baseline = next((t for t in study.trials if t.baseline and t.repeat_of is None and t.kind == "complete"), None)
    if baseline is None:
        return None
    repeats = [t for t in study.trials if t.repeat_of == baseline.number and t.kind == "complete"]
    anchors = [t for t in repeats if t.anchor]
    if not anchors:
        return None
    rows = []
    for anchor in anchors:
        row: dict = {"number": anchor.number}
        for column in ranking.columns:
            first, value = baseline.figures.get(column), anchor.figures.get(column)
            row[column] = value
            row[f"{column}:change"] = (value - first) / first if first and value is not None else float("nan")
        rows.append(row)
    confirming = [t for t in repeats if not t.anchor]
    spread = {}
    if confirming:
        summary = confirmed_figures(baseline, confirming)
        spread = {
            c: (summary.high[c] - summary.low[c]) / abs(summary.figures[c])
            for c in ranking.columns
            if c in summary.figures and summary.figures[c]
        }
    return Drift(baseline.number, pd.DataFrame(rows), spread)


def capacity_sentence(result: StudyTables, number: int, column: str) -> str:
    """A front trial's capacity with its spread over fresh servers, and the load that decided it
    on its first server: the percentile there, its 95 % interval and the samples behind it."""
    row = result.trials.set_index("number").loc[number]
    spread = (
        f"{row[f'{column}:lo']:,.0f}-{row[f'{column}:hi']:,.0f}/s over {int(row['measured'])} servers"
        if row["measured"] > 1
        else "one server"
    )
    sentence = f"Trial {number}: {column} {row[column]:,.0f}/s ({spread})"
    percentile = parse_capacity_column(column)[0]
    takes = deciding_takes(result.measurements, number, column)
    if takes.empty:
        return sentence + "."
    load = takes[takes["retake"].isna()].iloc[0]
    low, high = load.get(f"{percentile}:lo"), load.get(f"{percentile}:hi")
    bounds = f", 95 % interval {low:.3g}-{high:.3g} ms" if pd.notna(low) and pd.notna(high) else ""
    median = f", its figure there the median of {len(takes)} measurements" if len(takes) > 1 else ""
    return (
        f"{sentence}; decided at {load['level']} on its first server: {percentile} {load[percentile]:.3g} ms"
        f"{bounds} from {int(load['requests']):,} requests ({load['verdict']}){median}."
    )


def deciding_takes(rows: pd.DataFrame, number: int, column: str) -> pd.DataFrame:
    """The measurements of the load that decided ``column`` on trial ``number``'s server: the last
    load retaken, where most of its measurements held (its first one may be a listed level the
    search started from, measured before it), else the highest load whose measurement held;
    none where the last load retaken was outvoted (the capacity is 0)."""
    own = rows[(rows["number"] == number) & rows["remeasured"].isna()]
    searched = own[own["search"] == column]
    retaken = searched[searched["retake"].notna()]
    if retaken.empty:
        held = searched[searched["verdict"].fillna("").str.startswith("within")]
        if held.empty:
            return held
        top = held.loc[held["concurrency"].fillna(held["request_rate"]).idxmax()]
        return searched[searched["level"] == top["level"]]
    level = retaken["level"].iloc[-1]
    takes = own[(own["level"] == level) & (own["search"].isna() | (own["search"] == column))]
    held = 2 * takes["verdict"].fillna("").str.startswith("within").sum() > len(takes)
    return takes if held else takes[:0]


LARGE_RESPONSE_BYTES = 2**20
"""Responses this large (output tensors) are said with what they cost the client over the wire."""


def client_sentences(measurements: pd.DataFrame) -> list[str]:
    """What large responses cost the client (bytes per request, MiB/s read, how many loads the
    client was flagged the bottleneck at), and the loads measured by the built-in client
    because perf_analyzer failed there or reached its memory limit."""
    sentences = []
    sized = measurements.dropna(subset=["response_bytes"]) if "response_bytes" in measurements else measurements[:0]
    if not sized.empty and sized["response_bytes"].max() >= LARGE_RESPONSE_BYTES:
        busiest = sized.loc[sized["response_mb_s"].idxmax()]
        bound = int(sized["client_bound"].astype(bool).sum())
        sentences.append(
            f"Responses carry up to {sized['response_bytes'].max() / 2**20:.3g} MiB of outputs each: the client read "
            f"up to {busiest['response_mb_s']:.4g} MiB/s (trial {int(busiest['number'])} at {busiest['level']}); it "
            f"was flagged the bottleneck at {bound} of {len(sized)} loads (column client_bound)."
        )
    noted = measurements[measurements["note"].notna()] if "note" in measurements else measurements[:0]
    if not noted.empty:
        trials = ", ".join(map(str, sorted(set(noted["number"].astype(int)))))
        sentences.append(
            f"perf_analyzer failed or reached its memory limit (load.client_memory_mb) in trial(s) {trials}: "
            f"{len(noted)} load(s) were measured by the built-in client instead (column note)."
        )
    return sentences


def confidence_sentences(result: StudyTables) -> list[str]:
    """How far the front can be trusted, in sentences: the trials confirmed on fresh servers,
    the front trials no measurement tells apart, a tie at the knee and the rule that broke it,
    and the baseline's drift over the study."""
    trials, front, objectives = result.trials, result.pareto, result.objectives
    confirmed = trials[trials["measured"] > 1]
    if confirmed.empty:
        sentences = [
            "Every trial was measured once, on one server: no spread (study.confirm_repeats measures the "
            "front's candidates again on fresh servers)."
        ]
    else:
        counts = sorted(set(confirmed["measured"].astype(int)))
        sentences = [
            f"{len(confirmed)} trial(s) ({', '.join(map(str, confirmed['number']))}) were measured "
            f"{'/'.join(map(str, counts))} times on fresh servers: their figures are the medians, the error bars the "
            "lowest and highest measured."
        ]
    if not front.empty:
        for a, b in indistinguishable(front, objectives):
            sentences.append(f"Trials {a} and {b} are indistinguishable: their spreads overlap on every objective.")
        feasible = trials[trials["feasible"]]
        choice = study_recommendation(result)
        sentences += recommendation_sentences(choice, feasible, objectives)
        sentences += [
            capacity_sentence(result, int(n), c) for n in front["number"] for c in objectives if is_capacity(c)
        ]
    sentences += client_sentences(result.measurements)
    if result.drift is not None:
        sentences.append(f"Drift: {result.drift.describe()}.")
        drifted = trials[trials["drift"].notna()]
        if not drifted.empty:
            sentences.append(
                f"Trial(s) {', '.join(map(str, drifted['number']))} were measured once in a stretch of the study "
                "after which the baseline had moved beyond its spread (column drift): their figures may carry that "
                "move; confirmation measures the front's candidates again beside the baseline."
            )
    return sentences
