"""The Pareto front and the pick from it, on a table of trials (``sweeper.results``' or a
replayed one): the front, its knee by the distance to the ideal in log ratios, hypervolume,
which trials no measurement tells apart (their spreads overlap), the recommendation with its
tie rule, and the recommendation in words. Pure: frames in, numbers and words out.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from sweeper.vocabulary import parameter_columns


def pareto_front(frame: pd.DataFrame, objectives: list[str], directions: list[str]) -> pd.DataFrame:
    """Rows of ``frame`` that no other row dominates on ``objectives``."""
    signs = [1 if d == "minimize" else -1 for d in directions]
    values = frame[objectives].to_numpy(dtype=float) * signs
    keep = [not any((other <= row).all() and (other < row).any() for other in values) for row in values]
    return frame.loc[np.asarray(keep, dtype=bool)]  # a boolean mask, even when empty (not a column list)


def _log_ratio(values: pd.Series, direction: str) -> pd.Series:
    """How far each value is from the best of them, as the log of their ratio (0 = the best; a
    4x gap weighs ln 4, a 2 % gap ln 1.02): objectives compare by how much they differ, not by
    where they fall between the front's extremes."""
    values = values.astype(float).clip(lower=_TINY)
    best = values.min() if direction == "minimize" else values.max()
    ratio = values / best if direction == "minimize" else best / values
    return np.log(ratio)


_TINY = 1e-12
"""A floor for a figure of 0 (a capacity no load met): it stays far from any positive best."""


def ideal_distance(frame: pd.DataFrame, objectives: list[str], directions: list[str]) -> pd.Series:
    """Each row's squared distance from the ideal point (each objective's best value in
    ``frame``), each objective's gap measured as a ratio (``_log_ratio``)."""
    return sum(_log_ratio(frame[o], d) ** 2 for o, d in zip(objectives, directions))


def knee(frame: pd.DataFrame, objectives: list[str], directions: list[str]) -> int:
    """The knee of a front: the trial nearest the ideal point (``ideal_distance``)."""
    return int(frame.loc[ideal_distance(frame, objectives, directions).idxmin(), "number"])


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


TIE_RULE = (
    "fewer knobs changed from the baseline, then the better median on more objectives, then the smaller server "
    "memory, then fewer instances, then the earlier trial"
)
"""How a tie is broken. Inside a tie no measurement tells the trials apart (their medians differ
by less than the spread, which is no difference), so the least change to what runs today comes
first: the same answer from every study that measured the tie, and the least to review and roll
back. Then what was measured, then what costs least to run."""


def overlaps(a: pd.Series, b: pd.Series, objectives: list[str]) -> bool:
    """Whether two trials' spreads (``<objective>:lo`` .. ``:hi``) overlap on every objective: no
    lead of one over the other is larger than what was measured between fresh servers."""
    return all(max(a[f"{c}:lo"], b[f"{c}:lo"]) <= min(a[f"{c}:hi"], b[f"{c}:hi"]) for c in objectives)


def deciding_objectives(front: pd.DataFrame, objectives: list[str]) -> list[str]:
    """The objectives on which some front trials differ by more than their spreads: one whose
    every difference on the front lies inside the measured spread cannot decide the pick."""
    rows = [row for _, row in front.iterrows()]
    return [c for c in objectives if any(not overlaps(a, b, [c]) for a in rows for b in rows)]


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """The configuration the measurements stand behind, and why."""

    number: int
    """The trial to deploy: the knee, the first of its tie under ``TIE_RULE``, or the baseline."""
    knee: int
    """The trial nearest the ideal point by its medians (``knee``, over the deciding objectives)."""
    tied: tuple[int, ...] = ()
    """Front trials that no objective tells apart from the knee nor from each other (the knee
    among them), in the rule's order; empty when the knee stands alone."""
    baseline_kept: bool = False
    """Whether no configuration measurably beat the baseline: the pick is the baseline."""
    deciding: tuple[str, ...] = ()
    """The objectives whose differences on the front exceed the measured spread."""
    pool: str = "feasible"
    """The trials the choice was made among: ``confirmed`` (measured again) or ``feasible``."""
    why: tuple[str, ...] = ()
    """The recommendation in words, where the caller filled them in (``recommendation_sentences``)."""

    @property
    def rule(self) -> str | None:
        """The rule that broke the tie, or None."""
        return TIE_RULE if self.tied and not self.baseline_kept else None


def recommend(
    feasible: pd.DataFrame, objectives: list[str], directions: list[str], primary: str | None = None
) -> Recommendation:
    """The trial to deploy among ``feasible`` (rows with medians and their ``:lo``/``:hi``).

    Where some trials were confirmed on fresh servers, only those take part. On their front, the
    objectives whose differences exceed the spread decide (``deciding_objectives``); the knee is
    the trial nearest the ideal by ratio on those (where ``primary`` decides, among the trials
    whose spread on it overlaps its best's). When the baseline
    cannot be told apart from the knee on any objective, the baseline is kept. Otherwise the
    front trials whose spreads overlap the knee's (and each other's) on every objective tie
    with it, broken by ``TIE_RULE``."""
    confirmed = feasible[feasible["confirmed"].astype(bool)] if "confirmed" in feasible else feasible.iloc[:0]
    pool, named = (confirmed, "confirmed") if not confirmed.empty else (feasible, "feasible")
    front = pareto_front(pool, objectives, directions)
    deciding = deciding_objectives(front, objectives)
    weighed = [(o, d) for o, d in zip(objectives, directions) if o in deciding] or list(zip(objectives, directions))
    candidates = front
    if primary in deciding:
        # The primary objective decides first, by what was measured: the front trials it cannot
        # tell from the best on it (spreads overlapping) remain, and the others decide among them.
        maximize = directions[objectives.index(primary)] == "maximize"
        best = front.loc[front[primary].idxmax() if maximize else front[primary].idxmin()]
        candidates = front[[overlaps(row, best, [primary]) for _, row in front.iterrows()]]
    number = knee(candidates, *map(list, zip(*weighed)))
    rows = pool.set_index("number", drop=False)
    baseline = rows[rows["baseline"].astype(bool)] if "baseline" in rows else rows.iloc[:0]
    if not baseline.empty:
        base = int(baseline.index[0])
        if base == number or overlaps(rows.loc[base], rows.loc[number], objectives):
            return Recommendation(base, number, (), True, tuple(deciding), named)
    tied = [number]
    by_distance = sorted(
        (int(n) for n in front["number"] if n != number),
        key=lambda n: sum(_gap(rows.loc[n], rows.loc[number], o) ** 2 for o in objectives),
    )
    for candidate in by_distance:
        if all(overlaps(rows.loc[candidate], rows.loc[member], objectives) for member in tied):
            tied.append(candidate)
    if len(tied) < 2:
        return Recommendation(number, number, (), False, tuple(deciding), named)
    ordered = _tie_order(rows.loc[tied], objectives, directions, baseline.iloc[0] if not baseline.empty else None)
    return Recommendation(ordered[0], number, tuple(ordered), False, tuple(deciding), named)


def _gap(a: pd.Series, b: pd.Series, objective: str) -> float:
    return float(np.log(max(float(a[objective]), _TINY) / max(float(b[objective]), _TINY)))


def knobs_changed(row: pd.Series, baseline: pd.Series) -> int:
    """How many parameters (knobs, swept fields and options) ``row`` sets otherwise than ``baseline``."""
    columns = [c for c in parameter_columns(row.index) if c in row.index and c in baseline.index]
    # Parameters are scalars (Optuna's categorical choices; lists are stored as JSON text), and
    # one a trial leaves as the model has it is missing from its row on both sides.
    return sum(not (pd.isna(row[c]) and pd.isna(baseline[c])) and row[c] != baseline[c] for c in columns)


def _tie_order(
    tied: pd.DataFrame, objectives: list[str], directions: list[str], baseline: pd.Series | None
) -> list[int]:
    """``TIE_RULE``: fewer knobs changed from ``baseline``, then more objectives on which the
    trial has the best median of the tie, then less server memory, then fewer instances, then
    the earlier trial."""
    changed = {n: knobs_changed(tied.loc[n], baseline) if baseline is not None else 0 for n in tied.index}
    wins = pd.Series(0, index=tied.index)
    for objective, direction in zip(objectives, directions):
        values = tied[objective].astype(float)
        wins += values == (values.min() if direction == "minimize" else values.max())
    memory = tied["server_memory_mb"].astype(float).fillna(np.inf) if "server_memory_mb" in tied else wins * 0
    order = sorted(
        tied.index,
        key=lambda n: (changed[n], -wins[n], memory[n], tied.loc[n, "instance_count"], int(tied.loc[n, "number"])),
    )
    return [int(n) for n in order]


def trade(a: pd.Series, b: pd.Series, objectives: list[str]) -> str:
    """What trial ``a`` gives and costs against ``b``, objective by objective, as ratios ("4.4x
    the capacity@p99_ms<=10, 2.1% more server_memory_mb"); "within the spread" where their
    spreads overlap."""
    parts = []
    for objective in objectives:
        mine, theirs = float(a[objective]), float(b[objective])
        if not theirs or not mine:
            parts.append(f"{objective} {mine:.4g} against {theirs:.4g}")
            continue
        ratio = mine / theirs
        size = f"{ratio:.2g}x" if ratio >= 1.5 else f"{1 / ratio:.2g}x less" if ratio <= 1 / 1.5 else None
        if size is None:
            change = ratio - 1
            size = f"{abs(change):.1%} {'more' if change >= 0 else 'less'}"
        within = " (within the spread)" if overlaps(a, b, [objective]) else ""
        parts.append(f"{size} {objective}{within}")
    return ", ".join(parts)


def recommendation_sentences(choice: Recommendation, frame: pd.DataFrame, objectives: list[str]) -> list[str]:
    """The recommendation in words: the baseline kept, or the pick, its tie and the rule, and
    what it trades against its nearest front neighbour."""
    rows = frame.set_index("number", drop=False)
    named = ", ".join(objectives)
    if choice.baseline_kept and choice.knee != choice.number:
        return [
            f"No configuration measurably beat the baseline on {named}: the knee (trial {choice.knee}) lies within "
            f"the baseline's spread, so the recommendation is the baseline (trial {choice.number})."
        ]
    if choice.baseline_kept:
        return [
            f"The knee is the baseline (trial {choice.number}): no configuration measurably beat it on {named} "
            "without costing more on another."
        ]
    pool = "confirmed " if choice.pool == "confirmed" else ""
    sentences = [f"The recommendation is trial {choice.number}, the knee of the {pool}front."]
    if choice.tied:
        others = ", ".join(str(n) for n in choice.tied if n != choice.number)
        sentences = [
            f"The knee (trial {choice.knee}) is a tie: trials {choice.number} and {others} are told apart by no "
            f"objective; trial {choice.number} is recommended, by {choice.rule}."
        ]
    undecided = [o for o in objectives if o not in choice.deciding]
    if undecided and choice.deciding:
        sentences.append(f"{', '.join(undecided)} did not decide: its differences on the front lie within the spread.")
    base = rows[rows["baseline"].astype(bool)] if "baseline" in rows else rows.iloc[:0]
    if not base.empty and int(base.index[0]) != choice.number:
        against = trade(rows.loc[choice.number], base.iloc[0], objectives)
        sentences.append(f"Against the baseline (trial {int(base.index[0])}): {against}.")
    return sentences


def indistinguishable(front: pd.DataFrame, objectives: list[str]) -> list[tuple[int, int]]:
    """Pairs of front trials whose spreads overlap on every objective."""
    rows = [row for _, row in front.sort_values("number").iterrows()]
    return [
        (int(a["number"]), int(b["number"]))
        for i, a in enumerate(rows)
        for b in rows[i + 1 :]
        if overlaps(a, b, objectives)
    ]
