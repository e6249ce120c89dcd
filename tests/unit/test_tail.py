"""How far a percentile can be trusted: samples needed, the distribution-free interval (checked
against scipy's binomial quantiles) and the verdict against a budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from sweeper.load._tail import MORE_SAMPLES, Tail, interval, samples_needed, verdict


@pytest.mark.parametrize("n", [1, 50, 299, 300, 600, 1000, 4000, 100_000])
@pytest.mark.parametrize("percentile", ["p50_ms", "p95_ms", "p99_ms"])
def test_the_interval_is_between_the_order_statistics_the_binomial_names(n, percentile):
    q = float(percentile[1:3]) / 100
    samples = np.random.default_rng(n).lognormal(0, 1, n)
    ordered = np.sort(samples)
    lower, upper = int(binom.ppf(0.025, n, q)), int(binom.ppf(0.975, n, q)) + 1
    expected = (ordered[lower - 1] if lower >= 1 else -math.inf, ordered[upper - 1] if upper <= n else math.inf)
    assert interval(samples, percentile) == expected


def test_too_few_samples_leave_a_p99_unbounded_above_and_a_thousand_bound_it():
    rng = np.random.default_rng(0)
    assert interval(rng.exponential(1, 300), "p99_ms")[1] == math.inf
    low, high = interval(rng.exponential(1, 1000), "p99_ms")
    assert low < np.log(100) < high, "the true p99 of Exp(1) is ln 100"
    assert samples_needed("p99_ms") == 1000 and samples_needed("p95_ms") == 200 and samples_needed("p50_ms") == 20


def test_the_verdict_is_decided_only_by_a_whole_interval():
    assert verdict(8.0, 9.9, 10.0) == "within" and verdict(10.1, 14.0, 10.0) == "over"
    assert verdict(9.0, 11.0, 10.0) == "undecided" and verdict(9.0, math.inf, 10.0) == "undecided"
    tail = Tail("p99_ms", 10.0)
    rng = np.random.default_rng(1)
    near = rng.normal(9.9, 0.5, 2000)  # the p99 is about 11: over, but 2,000 samples do not settle it
    assert tail.judge(near) in ("over", "undecided")
    assert tail.settled(rng.normal(5, 0.5, 1000)), "far within: settled"
    assert tail.settled(rng.normal(10, 0.5, MORE_SAMPLES * 1000)), "the most samples a load gets: settled"
