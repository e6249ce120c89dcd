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
from collections.abc import Callable

from sweeper.record import Capacity, Measurement
from sweeper.vocabulary import SearchBounds


@dataclasses.dataclass(frozen=True)
class CapacityTarget:
    """A capacity the ranking names: ``percentile`` (``p99_ms``) within ``budget_ms``."""

    column: str
    percentile: str
    budget_ms: float
    start: float | None = None
    """Where comparable configurations of the study crossed the budget: the search brackets
    from there instead of doubling up from ``low`` (None: no such configuration yet)."""


def _within(measurement: Measurement, target: CapacityTarget) -> bool:
    return getattr(measurement, target.percentile) <= target.budget_ms


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


def search_capacity(measure: Callable[[float], Measurement], target: CapacityTarget, bounds: SearchBounds) -> Capacity:
    """From ``bounds.low`` (light load must hold too), then from ``target.start`` where comparable
    configurations crossed the budget: a step of a quarter above it while within the budget
    (doubling after that), or straight to bisecting below it; without a start, doubling from
    ``low``. Then bisect to the resolution. The capacity, with every load tried in ``tried``
    (``measure`` may answer from loads measured already)."""
    tried: dict[float, Measurement] = {}

    def within(load: float) -> bool:
        if load not in tried:
            tried[load] = measure(load)
        return _within(tried[load], target)

    if not within(bounds.low):
        return capacity_of(tried, target, bounds)
    good, over, growth = bounds.low, None, 2.0
    start = None if target.start is None else _on_grid(target.start, bounds)
    if start is not None and start > bounds.low:
        if within(start):
            good, growth = start, 1.25
        else:
            over = start
    while over is None and good < bounds.high:
        load = min(bounds.high, good * growth)
        load = float(int(load)) if bounds.integer else load
        load = load if load > good else min(bounds.high, good + bounds.resolution)
        growth = 2.0
        if within(load):
            good = load
        else:
            over = load
    while over is not None and over - good > bounds.resolution:
        middle = _midpoint(good, over, bounds)
        if middle is None:
            break
        if within(middle):
            good = middle
        else:
            over = middle
    return capacity_of(tried, target, bounds)


def capacity_of(tried: dict[float, Measurement], target: CapacityTarget, bounds: SearchBounds) -> Capacity:
    """The capacity the loads tried show: the highest load within the budget below every load
    that broke it; 0 (with the reason) when none; a note when it is the search's upper bound
    or the load generator was the bottleneck there."""
    order = tuple(tried)
    broke = [load for load, m in tried.items() if not _within(m, target)]
    limit = min(broke, default=float("inf"))
    good = [load for load, m in tried.items() if _within(m, target) and load < limit]
    if not good:
        lowest = min(tried)
        seen = getattr(tried[lowest], target.percentile)
        note = (
            f"{target.percentile} {seen:.3g} ms at {bounds.describe(lowest)} (load.capacity.low) is over the "
            f"budget of {target.budget_ms:g} ms: no load tried meets it"
        )
        return Capacity(target.column, 0.0, 0.0, order, note)
    best = max(good)
    notes = []
    if best >= bounds.high:
        notes.append(
            f"within the budget up to load.capacity.high ({bounds.describe(bounds.high)}): "
            "the capacity is at least this"
        )
    if tried[best].client_bound:
        notes.append(f"the load generator was the bottleneck at {bounds.describe(best)}: the server may sustain more")
    return Capacity(target.column, best, tried[best].throughput, order, "; ".join(notes) or None)
