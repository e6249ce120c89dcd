"""Capacity at a latency target: the highest load whose latency percentile stays within a budget,
found by a bounded search (grow, then bisect) over the load: concurrency, or requests/s.

``low`` is measured first (light load must hold the budget too); then, from where the most
similar configuration of the study held it (``CapacityTarget.start``) or else from ``low``, the
load grows while the percentile keeps within the budget (up to ``high``); the first load over it
and the last within it are then bisected until they are at most ``resolution`` apart. Every
load tried is a measurement of its own (warm-up, stability windows). The answer is read from
the loads tried by one rule (``capacity_of``), so a load within the budget above one that broke
it (noise) does not count.

perf_analyzer's own ``--binary-search`` is not used: its CSV holds only the loads within its
``--latency-threshold`` (those over it are printed as passes, without their figures), and it
measures the top of its range first. It is driven through this same search instead, one load
per run, so every load tried keeps perf_analyzer's own figures.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable

from sweeper.load._tail import OVER, UNDECIDED, WITHIN, verdict
from sweeper.measured import Capacity, Measurement
from sweeper.vocabulary import SearchBounds

OUTLIER_DROP = 0.15
"""A load over the budget whose throughput is this much below a lower load's that held it is
measured again before it may cap the search (the stability tolerance's default)."""


@dataclasses.dataclass(frozen=True)
class CapacityTarget:
    """A capacity the ranking names: ``percentile`` (``p99_ms``) within ``budget_ms``."""

    column: str
    percentile: str
    budget_ms: float
    start: float | None = None
    """Where comparable configurations of the study crossed the budget: the search brackets
    from there instead of doubling up from ``low`` (None: no such configuration yet)."""


def load_verdict(measurement: Measurement, target: CapacityTarget) -> str:
    """``within`` or ``over`` the budget by the whole 95 % interval of the percentile, else by
    its point estimate, said so (``within by its point estimate``): the interval straddled the
    budget after the most samples a load gets, or the generator kept no samples."""
    bounds = (measurement.intervals or {}).get(target.percentile)
    if bounds:
        low, high = (-math.inf if bounds[0] is None else bounds[0]), (math.inf if bounds[1] is None else bounds[1])
        decided = verdict(low, high, target.budget_ms)
        if decided != UNDECIDED:
            return decided
    point = WITHIN if getattr(measurement, target.percentile) <= target.budget_ms else OVER
    return f"{point} by its point estimate"


def _within(measurement: Measurement, target: CapacityTarget) -> bool:
    return load_verdict(measurement, target).startswith(WITHIN)


def _holds(
    load: float, tried: dict[float, Measurement], target: CapacityTarget, outvoted: dict[float, list[Measurement]]
) -> bool:
    """Whether a load tried holds the budget: its measurement does, and its retakes did not
    outvote it."""
    return load not in outvoted and _within(tried[load], target)


def _suspect(
    load: float, tried: dict[float, Measurement], holds: Callable[[float], bool], bounds: SearchBounds
) -> str | None:
    """Why a load that broke the budget may be an outlier rather than the capacity: its
    throughput fell well below that of the highest lower load that held the budget (in a closed
    loop more requests in flight serve no less, and an open loop sends what it is asked to, short
    of a disturbance: a stall, a neighbour on the host). None: it stands."""
    below = [other for other in tried if other < load and holds(other)]
    if not below:
        return None
    neighbour = tried[max(below)]
    if tried[load].throughput >= (1 - OUTLIER_DROP) * neighbour.throughput:
        return None
    return (
        f"its throughput {tried[load].throughput:.4g}/s fell {OUTLIER_DROP:.0%} or more below that of "
        f"{bounds.describe(max(below))} ({neighbour.throughput:.4g}/s)"
    )


def _midpoint(low: float, high: float, bounds: SearchBounds) -> float | None:
    """A load between ``low`` and ``high`` on the resolution's grid from ``low``, or None."""
    steps = round((high - low) / 2 / bounds.resolution)
    middle = low + max(1, steps) * bounds.resolution
    middle = float(int(middle)) if bounds.integer else middle
    return middle if low < middle < high else None


def _on_grid(load: float, bounds: SearchBounds) -> float:
    """``load`` rounded to the resolution's grid from ``low``, within the bounds."""
    snapped = bounds.low + round((load - bounds.low) / bounds.resolution) * bounds.resolution
    snapped = min(bounds.high, max(bounds.low, snapped))
    return float(int(snapped)) if bounds.integer else snapped


Measure = Callable[..., Measurement]
"""``measure(load)``, or ``measure(load, why)`` to measure a load again (the first measurement kept)."""

Retake = Callable[[float], list[Measurement]]
"""``retake(load)``: the load found measured ``load.capacity.retakes`` times more, each kept."""


def search_capacity(
    measure: Measure, target: CapacityTarget, bounds: SearchBounds, retake: Retake | None = None
) -> Capacity:
    """From ``bounds.low`` (light load must hold too), then from ``target.start`` where comparable
    configurations crossed the budget: a step of a quarter above it while within the budget
    (doubling after that), or straight to bisecting below it; without a start, doubling from
    ``low``. Then bisect to the resolution. A load that breaks the budget where a lower load
    says it should not (``_suspect``), when it is measured or once the bisection has measured
    below it, is measured again, once, before it may cap the search; the search then goes on
    from what the loads say. With ``retake``, the load found is measured again: where most of
    its measurements held the budget, the capacity's figure is their median throughput
    (``with_retakes``); where most broke it, its first measurement was the lucky one: the load
    counts as over the budget and the search bisects again below it. The capacity, with every
    load tried in ``tried`` (``measure`` may answer from loads measured already)."""
    search = _Search(measure, target, bounds)
    if not search.within(bounds.low):
        return search.capacity()
    search.settle(*_bracket(search.within, target, bounds))
    found = search.capacity()
    while retake is not None and found.load > 0:
        takes = [search.tried[found.load], *retake(found.load)]
        if held_by_most(takes, target):
            return with_retakes(found, takes, target, bounds)
        search.outvoted[found.load] = takes
        held = [load for load in search.tried if load < found.load and search.holds(load)]
        if held:
            search.settle(max(held), found.load)
        found = search.capacity()
    return found


@dataclasses.dataclass
class _Search:
    """The loads one capacity search has measured, and whether each holds the budget."""

    measure: Measure
    target: CapacityTarget
    bounds: SearchBounds
    tried: dict[float, Measurement] = dataclasses.field(default_factory=dict)
    again: set[float] = dataclasses.field(default_factory=set)
    """Loads measured again as suspects (once each)."""
    outvoted: dict[float, list[Measurement]] = dataclasses.field(default_factory=dict)
    """Loads found whose measurements (the search's, then its retakes) mostly broke the budget."""

    def holds(self, load: float) -> bool:
        return _holds(load, self.tried, self.target, self.outvoted)

    def within(self, load: float) -> bool:
        """Whether ``load`` holds the budget, measured now unless it was; a suspect measured again."""
        if load not in self.tried:
            self.tried[load] = self.measure(load)
        if not self.holds(load) and load not in self.again and load not in self.outvoted:
            why = _suspect(load, self.tried, self.holds, self.bounds)
            if why is not None:
                self.again.add(load)
                self.tried[load] = self.measure(load, why)
        return self.holds(load)

    def settle(self, good: float, over: float | None) -> None:
        """Bisect from ``good`` (held) and ``over`` (broke; None: not found) to the resolution; a
        broken load the bisection has since contradicted (a suspect) is measured again and the
        bracket read anew from every load."""
        while True:
            _bisect(self.within, good, over, self.bounds)
            suspects = [
                load
                for load in self.tried
                if not self.holds(load)
                and load not in self.again | self.outvoted.keys()
                and _suspect(load, self.tried, self.holds, self.bounds) is not None
            ]
            if not suspects:
                return
            self.within(min(suspects))
            limit = min((load for load in self.tried if not self.holds(load)), default=None)
            good = max(load for load in self.tried if self.holds(load) and (limit is None or load < limit))
            good, over = (good, limit) if limit is not None else _grow(self.within, good, self.bounds, 2.0)

    def capacity(self) -> Capacity:
        return capacity_of(self.tried, self.target, self.bounds, self.outvoted)


def _bracket(
    within: Callable[[float], bool], target: CapacityTarget, bounds: SearchBounds
) -> tuple[float, float | None]:
    """The highest load within the budget and the lowest over it found by growing from ``low``
    (or from ``target.start``); None over it: the search's upper bound held."""
    good, growth = bounds.low, 2.0
    start = None if target.start is None else _on_grid(target.start, bounds)
    if start is not None and start > bounds.low:
        if not within(start):
            return good, start
        good, growth = start, 1.25
    return _grow(within, good, bounds, growth)


def _grow(
    within: Callable[[float], bool], good: float, bounds: SearchBounds, growth: float
) -> tuple[float, float | None]:
    """Grow from ``good`` (by ``growth`` first, doubling after): the last load within the budget
    and the first over it (None: the upper bound held)."""
    while good < bounds.high:
        load = min(bounds.high, good * growth)
        load = float(int(load)) if bounds.integer else load
        load = load if load > good else min(bounds.high, good + bounds.resolution)
        growth = 2.0
        if not within(load):
            return good, load
        good = load
    return good, None


def _bisect(within: Callable[[float], bool], good: float, over: float | None, bounds: SearchBounds) -> None:
    while over is not None and over - good > bounds.resolution:
        middle = _midpoint(good, over, bounds)
        if middle is None:
            return
        if within(middle):
            good = middle
        else:
            over = middle


def capacity_of(
    tried: dict[float, Measurement],
    target: CapacityTarget,
    bounds: SearchBounds,
    outvoted: dict[float, list[Measurement]] | None = None,
) -> Capacity:
    """The capacity the loads tried show: the highest load within the budget below every load
    that broke it (``outvoted``: loads whose measurements, the search's and its retakes, mostly
    broke it, whatever the first said); 0 (with the reason) when none; a note when it is the
    search's upper bound or the load generator was the bottleneck there."""
    outvoted = outvoted or {}
    order = tuple(tried)
    holds = {load: _holds(load, tried, target, outvoted) for load in tried}
    limit = min((load for load, held in holds.items() if not held), default=float("inf"))
    good = [load for load, held in holds.items() if held and load < limit]
    notes = [
        f"{bounds.describe(load)} held the budget on the search's measurement but broke it in "
        f"{sum(not _within(m, target) for m in takes)} of {len(takes)} (measurements.csv, column retake): "
        "the capacity is read below it"
        for load, takes in sorted(outvoted.items())
    ]
    if not good:
        lowest = min(tried)
        seen = getattr(tried[lowest], target.percentile)
        if lowest not in outvoted:
            notes.append(
                f"{target.percentile} {seen:.3g} ms at {bounds.describe(lowest)} (load.capacity.low) is over the "
                f"budget of {target.budget_ms:g} ms: no load tried meets it"
            )
        return Capacity(target.column, 0.0, 0.0, order, "; ".join(notes))
    best = max(good)
    if best >= bounds.high:
        notes.append(
            f"within the budget up to load.capacity.high ({bounds.describe(bounds.high)}): "
            "the capacity is at least this"
        )
    if tried[best].client_bound:
        notes.append(f"the load generator was the bottleneck at {bounds.describe(best)}: the server may sustain more")
    switched = sorted(load for load, m in tried.items() if m.note is not None)
    if switched:
        notes.append(f"from {bounds.describe(switched[0])} on: {tried[switched[0]].note}")
    return Capacity(target.column, best, tried[best].throughput, order, "; ".join(notes) or None)


def held_by_most(takes: list[Measurement], target: CapacityTarget) -> bool:
    """Whether most measurements of a load (the search's, then its retakes) held the budget."""
    return 2 * sum(_within(m, target) for m in takes) > len(takes)


def with_retakes(found: Capacity, takes: list[Measurement], target: CapacityTarget, bounds: SearchBounds) -> Capacity:
    """``found`` with its figure from every measurement of its load (the search's first, then its
    retakes), most of which held the budget (``held_by_most``): the median throughput, so that a
    disturbance of the host during one measurement moves the figure no more than the others let
    it; a retake over the budget is said in the note."""
    over = sum(not _within(m, target) for m in takes[1:])
    notes = [found.note] if found.note else []
    if over:
        notes.append(
            f"{over} of {len(takes) - 1} retakes at {bounds.describe(found.load)} were over the budget "
            f"(measurements.csv, column retake)"
        )
    return dataclasses.replace(
        found, throughput=statistics.median(m.throughput for m in takes), note="; ".join(notes) or None
    )
