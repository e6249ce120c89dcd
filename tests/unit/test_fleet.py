"""Fleet sizing and verify's band as rules on numbers (the real servers: tests/integration/test_fleet.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sweeper.errors import UsageError
from sweeper.fleet import FleetTarget, fleet_of, front_fleets, servers_needed, sizing_capacity
from sweeper.verify import Verdict, band_floor
from sweeper.vocabulary import Objective, Ranking, metric_words, parse_capacity_column

CAPACITY = "capacity@p99_ms<=60"


def _row(number=3, median=400.0, low=300.0, high=500.0, measured=3, load=12.0, memory=120.0, note=None):
    return pd.Series(
        {
            "number": number,
            CAPACITY: median,
            f"{CAPACITY}:lo": low,
            f"{CAPACITY}:hi": high,
            f"{CAPACITY}:load": load,
            f"{CAPACITY}:note": note,
            "measured": measured,
            "server_memory_mb": memory,
        }
    )


@pytest.mark.parametrize(
    "rate, per_server, headroom, servers",
    [
        (1000, 500, 0.0, 2),  # exactly two: a rounding must not make it three
        (1000, 499, 0.0, 3),
        (1000, 500, 0.2, 3),  # each server run to 80 % of 500: 400/s a server
        (1000, 1e6, 0.0, 1),
        (1000 / 3, 1000 / 9, 0.0, 3),
        (10, 0.0, 0.0, None),  # no load within the budget: no count serves
    ],
)
def test_the_count_is_the_rate_over_the_lowest_capacity_less_headroom(rate, per_server, headroom, servers):
    assert servers_needed(rate, per_server, headroom) == servers


def test_a_wide_confirmed_range_is_sized_by_its_lowest_server_not_its_median():
    fleet = fleet_of(_row(median=400, low=150, high=520), CAPACITY, FleetTarget(1000), closed_loop=True)
    assert fleet.servers == math.ceil(1000 / 150) == 7, "the median would say 3"
    assert (fleet.lowest, fleet.median, fleet.highest, fleet.measured) == (150, 400, 520, 3)
    assert fleet.total_memory_mb == 7 * 120
    words = " ".join(fleet.sentences())
    assert words.startswith("7 servers of this configuration serve 1,000/s at p99 <= 60 ms")
    assert "at least 150/s on 3 fresh servers: 150-520/s, median 400" in words and "no headroom" in words
    assert "at most 12 requests in flight" in words, "a closed-loop count says what it assumes"


def test_headroom_and_cost_and_an_unconfirmed_trial_say_so():
    target = FleetTarget(1000, headroom=0.25, cost_per_hour=3.0)
    fleet = fleet_of(_row(median=300, low=300, high=300, measured=1), CAPACITY, target, closed_loop=False)
    assert fleet.servers == math.ceil(1000 / (300 * 0.75)) == 5
    assert fleet.cost_per_million == pytest.approx(5 * 3.0 / (1000 * 3600) * 1e6)
    words = " ".join(fleet.sentences())
    assert "25% of each kept spare" in words and "measured on one server only" in words
    assert "in flight" not in words, "an open-loop capacity assumes no concurrency"
    assert fleet.as_dict()["servers"] == 5 and fleet.as_dict()["rule"] == "ceil(rate / (lowest * (1 - headroom)))"


def test_a_capacity_of_zero_needs_no_count_and_says_why():
    fleet = fleet_of(_row(median=0, low=0, high=0), CAPACITY, FleetTarget(100), closed_loop=True)
    assert fleet.servers is None and fleet.total_memory_mb is None
    assert fleet.sentences()[0].startswith("No number of servers of this configuration serves 100/s")


def test_the_front_table_has_a_row_per_trial():
    trials = pd.DataFrame([_row(number=1, low=100), _row(number=2, low=250, memory=200)])
    table = front_fleets(trials, [1, 2], CAPACITY, FleetTarget(1000, cost_per_hour=1.0), closed_loop=True)
    assert table["servers"].tolist() == [10, 4]
    assert table["fleet memory (MB)"].tolist() == [1200, 800], "the cheaper fleet in memory is not the first"
    assert "cost per million" in table.columns


def test_the_capacity_sized_by_is_the_primary_then_the_first_and_none_is_refused():
    objectives = (
        Objective("capacity@p99_ms<=10", "maximize"),
        Objective("server_memory_mb", "minimize"),
        Objective("capacity@p50_ms<=5", "maximize"),
    )
    assert sizing_capacity(Ranking(objectives)) == "capacity@p99_ms<=10"
    assert sizing_capacity(Ranking(objectives, primary="capacity@p50_ms<=5")) == "capacity@p50_ms<=5"
    assert sizing_capacity(Ranking(objectives, primary="server_memory_mb")) == "capacity@p99_ms<=10"
    with pytest.raises(UsageError, match="ranks by none") as refused:
        sizing_capacity(Ranking((Objective("p50_ms@c1", "minimize"),)))
    assert "metric: capacity" in refused.value.hint


@pytest.mark.parametrize(
    "rate, headroom, cost, words",
    [(0, 0, None, "--target-rate"), (-5, 0, None, "--target-rate"), (100, 1.0, None, "--headroom")]
    + [(100, -0.1, None, "--headroom"), (100, 0, 0.0, "--cost-per-hour"), (math.inf, 0, None, "--target-rate")],
)
def test_a_target_out_of_range_is_refused_naming_the_option(rate, headroom, cost, words):
    with pytest.raises(UsageError, match=words):
        FleetTarget(rate, headroom, cost)


def _verdict(measured, low=300.0, high=400.0, tolerance=0.0):
    return Verdict(CAPACITY, low, high, 350.0, 3, measured, 8, band_floor(low, high, tolerance), tolerance)


def test_verify_holds_within_the_range_or_less_than_the_spread_below_it_and_fails_beyond():
    assert band_floor(300, 400, 0) == 200 and band_floor(300, 400, 0.1) == 170
    assert _verdict(450).holds and "within or above the recorded range" in _verdict(450).line()
    assert _verdict(210).holds and "by less than the band allows" in _verdict(210).line()
    assert not _verdict(199).holds
    assert _verdict(199).line().startswith(f"{CAPACITY}: recorded 300-400/s (median 350, 3 servers)")
    assert "REGRESSED" in _verdict(199).line()
    assert _verdict(199, tolerance=0.1).holds, "--tolerance widens the band"
    once = _verdict(299, low=300, high=300)
    assert not once.holds and "no spread" in Verdict(CAPACITY, 300, 300, 300, 1, 299, 8, 300, 0).line()


def test_columns_in_words_for_axes_and_sentences():
    assert metric_words(CAPACITY) == "capacity at p99 <= 60 ms (inferences/s)"
    assert metric_words("p50_ms@c1") == "p50 latency at concurrency 1 (ms)"
    assert metric_words("throughput@r500") == "throughput at 500 requests/s (inferences/s)"
    assert metric_words("server_memory_mb") == "server memory (MB)"
    assert parse_capacity_column("capacity@p95_ms<=2.5") == ("p95_ms", 2.5)
    with pytest.raises(ValueError):
        parse_capacity_column("p50_ms@c1")
