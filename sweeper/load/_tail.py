"""How far a measured latency percentile can be trusted: how many samples it needs, the
distribution-free interval of the true percentile from the order statistics of the samples, and
the verdict against a budget that follows from it.

A p99 from n samples is one order statistic; the true p99 lies between the order statistics at
ranks ``Binom^-1(0.025; n, 0.99)`` and ``Binom^-1(0.975; n, 0.99) + 1`` with 95 % confidence,
whatever the latency distribution (the rule Lancet, USENIX ATC 2019, sizes its measurements by).
With too few samples the upper rank is beyond the largest sample: the percentile is not bounded
above, and "within the budget" cannot be said.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

CONFIDENCE = 0.95
BEYOND = 10
"""Samples wanted beyond the percentile (1,000 for p99, 200 for p95): a tail known to about
-7/+10 % on the latencies measured here."""
WITHIN, OVER, UNDECIDED = "within", "over", "undecided"
MORE_SAMPLES = 4
"""An undecided load is measured on until it holds this many times the samples the percentile
needs (then it is decided on its point estimate, and says so)."""


@dataclasses.dataclass(frozen=True)
class Tail:
    """The percentile a capacity search judges a load by, and its budget."""

    percentile: str
    budget_ms: float

    @property
    def needed(self) -> int:
        """Samples that put ``BEYOND`` of them past the percentile."""
        return samples_needed(self.percentile)

    def judge(self, samples_ms: np.ndarray) -> str:
        """The verdict of ``samples_ms`` against the budget (``undecided`` while the interval
        straddles it)."""
        return verdict(*interval(samples_ms, self.percentile), self.budget_ms)

    def settled(self, samples_ms: np.ndarray) -> bool:
        """Whether a load's samples say enough: its verdict is decided, or it holds
        ``MORE_SAMPLES`` times the samples needed."""
        return samples_ms.size >= MORE_SAMPLES * self.needed or self.judge(samples_ms) != UNDECIDED


def quantile_of(percentile: str) -> float:
    """``p99_ms`` -> 0.99."""
    return float(percentile.removeprefix("p").removesuffix("_ms")) / 100


def samples_needed(percentile: str, beyond: int = BEYOND) -> int:
    """The samples that put ``beyond`` of them past ``percentile`` (``p99_ms``: 1,000)."""
    return math.ceil(beyond / (1 - quantile_of(percentile)) - 1e-9)


def _binomial_ranks(n: int, q: float, tails: tuple[float, float]) -> tuple[int, int]:
    """The smallest k with P(B <= k) >= each tail, B ~ Binomial(n, q) (scipy's ``binom.ppf``),
    from the pmf in log space over the ranks that carry any mass (mean +- 12 sd)."""
    spread = 12 * math.sqrt(n * q * (1 - q)) + 2
    first, last = max(0, math.floor(n * q - spread)), min(n, math.ceil(n * q + spread))
    lgamma = np.vectorize(math.lgamma)
    k = np.arange(first, last + 1)
    log_pmf = math.lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1) + k * math.log(q) + (n - k) * math.log1p(-q)
    cdf = np.cumsum(np.exp(log_pmf))
    return tuple(first + int(np.searchsorted(cdf, tail)) for tail in tails)


def interval(samples_ms: np.ndarray, percentile: str, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The ``confidence`` interval of the true ``percentile`` from ``samples_ms``: (low, high),
    ``-inf`` / ``inf`` where the samples are too few to bound that side."""
    ordered = np.sort(np.asarray(samples_ms, dtype=float))
    n = ordered.size
    if n == 0:
        return -math.inf, math.inf
    tail = (1 - confidence) / 2
    lower, upper = _binomial_ranks(n, quantile_of(percentile), (tail, 1 - tail))
    upper += 1  # ranks are 1-based: the true percentile lies between the lower-th and upper-th sample
    low = float(ordered[lower - 1]) if lower >= 1 else -math.inf
    high = float(ordered[upper - 1]) if upper <= n else math.inf
    return low, high


def verdict(low: float, high: float, budget_ms: float) -> str:
    """``within`` when the whole interval holds the budget, ``over`` when none of it does, else
    ``undecided``."""
    if high <= budget_ms:
        return WITHIN
    if low > budget_ms:
        return OVER
    return UNDECIDED
