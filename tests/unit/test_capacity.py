"""The capacity search's logic on latency curves given as numbers: where it grows, where it
bisects, how it reads noise, and the notes it writes (the real servers: tests/integration)."""

from __future__ import annotations

import dataclasses

import pytest

from sweeper.load import (
    CapacityTarget,
    SearchBounds,
    capacity_of,
    held_by_most,
    search_capacity,
    with_retakes,
)
from sweeper.measured import Measurement

TARGET = CapacityTarget("capacity@p99_ms<=10", "p99_ms", 10.0)
CONCURRENCY = SearchBounds(1, 64, 1, integer=True, unit="concurrency")


def _at(load: float, p99: float) -> Measurement:
    return Measurement(
        int(load), p99 / 2, p99, p99, p99, p99 / 2, load * 100, 0, 0, 0, 0, 0, 1, 100, 3, True, 0.1, False, "x"
    )


def _search(curve, bounds=CONCURRENCY):
    return search_capacity(lambda load: _at(load, curve(load)), TARGET, bounds)


def test_it_grows_then_bisects_to_the_resolution():
    capacity = _search(lambda c: c * 0.4)  # p99 = 0.4 ms per request in flight: 10 ms at 25
    assert capacity.load == 25 and capacity.throughput == 2500
    assert capacity.tried == (1, 2, 4, 8, 16, 32, 24, 28, 26, 25)
    assert capacity.note is None


def test_a_budget_broken_at_the_lowest_load_is_capacity_zero_with_the_reason():
    capacity = _search(lambda c: 12.0)
    assert (capacity.load, capacity.throughput, capacity.tried) == (0, 0, (1,))
    assert capacity.note == (
        "p99_ms 12 ms at concurrency 1 (load.capacity.low) is over the budget of 10 ms: no load tried meets it"
    )


def test_a_search_that_reaches_its_upper_bound_says_the_capacity_is_at_least_that():
    capacity = _search(lambda c: 1.0)
    assert capacity.load == 64 and capacity.tried == (1, 2, 4, 8, 16, 32, 64)
    assert "up to load.capacity.high (concurrency 64): the capacity is at least this" in capacity.note


def test_a_load_within_the_budget_above_one_that_broke_it_does_not_count():
    """A long queue delay: slow at light load, fast once batches fill. Traffic passes through the
    light loads, so the capacity is 0; and noise above a broken load is not capacity."""
    tried = {1.0: _at(1, 11), 2.0: _at(2, 4), 4.0: _at(4, 5)}
    assert capacity_of(tried, TARGET, CONCURRENCY).load == 0
    tried = {1.0: _at(1, 2), 2.0: _at(2, 3), 4.0: _at(4, 12), 3.0: _at(3, 9), 8.0: _at(8, 9)}
    assert capacity_of(tried, TARGET, CONCURRENCY).load == 3


def test_request_rates_bisect_on_the_resolutions_grid():
    rates = SearchBounds(10, 5000, 10, integer=False, unit="requests/s")
    capacity = _search(lambda r: r / 100, rates)  # 10 ms at 1000 requests/s
    assert capacity.load == pytest.approx(1000, abs=10)
    assert all(round(load / 10) * 10 == pytest.approx(load) for load in capacity.tried)
    assert "1e+03" not in (capacity.note or "")


def test_a_start_where_comparable_configurations_crossed_brackets_from_there():
    """Capacity 25 (p99 0.4 ms per request in flight): from a start of 24 a quarter step up breaks
    the budget and bisecting finds it in 6 loads, against 10 doubling from 1; a start far above
    (48) bisects down; a start below (8) steps a quarter up, then doubles. Every answer is the
    same, and light load is always measured first."""
    curve = lambda c: c * 0.4  # noqa: E731
    cold = _search(curve)
    for start, loads in ((24, (1, 24, 30, 27, 26, 25)), (48, None), (8, None), (1000, None)):
        warm = search_capacity(
            lambda load: _at(load, curve(load)), dataclasses.replace(TARGET, start=start), CONCURRENCY
        )
        assert warm.load == cold.load == 25 and warm.tried[0] == 1, (start, warm.tried)
        assert len(warm.tried) <= len(cold.tried), (start, warm.tried, cold.tried)
        if loads is not None:
            assert warm.tried == loads
    broken_at_light_load = search_capacity(
        lambda load: _at(load, 12.0), dataclasses.replace(TARGET, start=24), CONCURRENCY
    )
    assert broken_at_light_load.tried == (1,) and broken_at_light_load.load == 0
    rates = SearchBounds(10, 5000, 10, integer=False, unit="requests/s")
    warm = search_capacity(lambda r: _at(r, r / 100), dataclasses.replace(TARGET, start=1234.5), rates)
    assert warm.load == pytest.approx(1000, abs=10) and all(load % 10 == pytest.approx(0) for load in warm.tried)


def _noisy(curve, outliers):
    """``curve`` as measured, but the first measurement of each load in ``outliers`` is the
    outlier given there (p99, throughput); every measurement is logged as (load, why)."""
    log = []

    def measure(load, again=None):
        log.append((load, again))
        if load in outliers and again is None:
            p99, throughput = outliers[load]
            return dataclasses.replace(_at(load, p99), throughput=throughput)
        return _at(load, curve(load))

    return measure, log


def test_an_outlier_that_breaks_the_budget_is_measured_again_before_it_caps_the_search():
    """The MobileNet case: p99 within the budget up to concurrency 25, but one window at 16
    stalls (p99 3x, throughput 700/s): once 15 held at 1,500/s, 16 is measured again and the
    search goes on past it."""
    measure, log = _noisy(lambda c: c * 0.4, {16: (30.0, 700.0)})
    capacity = search_capacity(measure, TARGET, CONCURRENCY)
    assert capacity.load == 25, capacity.tried
    again = [why for load, why in log if why is not None]
    assert len(again) == 1 and "fell 15% or more below that of concurrency 15 (1500/s)" in again[0]
    assert [load for load, _ in log].count(16) == 2, "measured twice, no more"


def test_an_outlier_is_measured_again_as_soon_as_a_lower_load_shows_it():
    """From a start of 8 (a comparable configuration's crossing) the search steps to 10, then
    doubles: 20 breaks with half 10's throughput, is measured again at once, holds, and the
    search goes on to 25."""
    measure, log = _noisy(lambda c: c * 0.4, {20: (30.0, 500.0)})
    capacity = search_capacity(measure, dataclasses.replace(TARGET, start=8), CONCURRENCY)
    assert capacity.load == 25, capacity.tried
    assert [load for load, why in log if why] == [20]
    assert log[log.index((20, None)) + 1][0] == 20, "measured again before the search moved on"


def test_a_load_that_breaks_the_budget_again_caps_the_search():
    """Measured again and still over: the capacity is below it, as before."""
    measure, log = _noisy(lambda c: 5.0 if c < 16 else 30.0, {16: (30.0, 100.0)})
    capacity = search_capacity(measure, TARGET, CONCURRENCY)
    assert capacity.load < 16 and [load for load, _ in log].count(16) == 2


def test_a_verdict_comes_from_the_interval_where_it_decides_and_says_when_it_does_not():
    from sweeper.load import load_verdict

    within = dataclasses.replace(_at(4, 9.0), intervals={"p99_ms": [8.5, 9.6]})
    over = dataclasses.replace(_at(4, 11.0), intervals={"p99_ms": [10.2, 12.0]})
    open_ = dataclasses.replace(_at(4, 9.5), intervals={"p99_ms": [8.0, None]})
    assert load_verdict(within, TARGET) == "within" and load_verdict(over, TARGET) == "over"
    assert load_verdict(open_, TARGET) == "within by its point estimate"
    assert load_verdict(_at(4, 10.5), TARGET) == "over by its point estimate", "no samples: no interval"


def test_the_figure_is_the_median_throughput_of_the_load_and_its_retakes():
    """One dip of the host during one measurement moves the figure no more than the others let
    it; a retake over the budget is said, and the search's verdict stands."""
    found = _search(lambda c: c * 0.4)  # concurrency 25, 2,500/s
    takes = [
        _at(25, 9),
        dataclasses.replace(_at(25, 9), throughput=1600),
        dataclasses.replace(_at(25, 9), throughput=2400),
    ]
    figured = with_retakes(found, takes, TARGET, CONCURRENCY)
    assert (figured.load, figured.throughput, figured.tried, figured.note) == (25, 2400, found.tried, None)
    dipped = [takes[1], takes[0], _at(25, 14)]  # the search's own take was the dip; one retake broke the budget
    figured = with_retakes(found, dipped, TARGET, CONCURRENCY)
    assert figured.throughput == 2500 and figured.load == 25
    assert figured.note == "1 of 2 retakes at concurrency 25 were over the budget (measurements.csv, column retake)"


def test_a_load_most_of_whose_measurements_broke_the_budget_is_no_capacity():
    """The search's one measurement at concurrency 25 held (10 ms, a lucky one) and both its
    retakes broke the budget: it counts as over the budget and the search goes on below it: 24
    is outvoted the same way, then the search bisects again from the highest load held below
    (16) to 23, whose retakes hold; the note says why. Where the lowest load is outvoted too,
    the capacity is 0, said why."""
    retaken = []

    def retake(load):
        takes = [_at(load, 12 if load >= 24 else 9)] * 2
        retaken.extend((load, m.p99_ms) for m in takes)
        return takes

    found = search_capacity(lambda c: _at(c, c * 0.4), TARGET, CONCURRENCY, retake)
    assert retaken == [(25, 12), (25, 12), (24, 12), (24, 12), (23, 9), (23, 9)]
    assert (found.load, found.throughput) == (23, 2300)
    assert found.tried == (1, 2, 4, 8, 16, 32, 24, 28, 26, 25, 20, 22, 23)
    assert found.note == (
        "concurrency 24 held the budget on the search's measurement but broke it in 2 of 3 (measurements.csv, "
        "column retake): the capacity is read below it; concurrency 25 held the budget on the search's "
        "measurement but broke it in 2 of 3 (measurements.csv, column retake): the capacity is read below it"
    )
    takes = [_at(4, 9), _at(4, 12), _at(4, 11)]
    assert not held_by_most(takes, TARGET) and held_by_most([*takes[:2], _at(4, 8)], TARGET)
    lowest = search_capacity(lambda c: _at(c, 9 if c == 1 else 30), TARGET, CONCURRENCY, lambda c: [_at(c, 12)] * 2)
    assert (lowest.load, lowest.throughput) == (0, 0) and lowest.note == (
        "concurrency 1 held the budget on the search's measurement but broke it in 2 of 3 (measurements.csv, "
        "column retake): the capacity is read below it"
    )
