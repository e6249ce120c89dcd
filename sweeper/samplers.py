"""The samplers a spec may name: one table from name to Optuna sampler factory.

Adding a sampler is one entry. Every factory takes the spec's seed (None = unseeded) and the
size of the search space.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna

SamplerFactory = Callable[[int | None, int], optuna.samplers.BaseSampler]


def _tpe(seed: int | None, space_size: int) -> optuna.samplers.BaseSampler:
    # On small categorical spaces the default 10 random start-up trials spend most of a short
    # budget at random (benchmarks/search_efficiency.py): start modelling after a few.
    startup = max(3, min(10, space_size // 20))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True)


def _gp(seed: int | None, space_size: int) -> optuna.samplers.BaseSampler:
    import scipy  # noqa: F401  (GPSampler needs scipy and torch; checked when the spec loads)
    import torch  # noqa: F401

    return optuna.samplers.GPSampler(seed=seed)


SAMPLERS: dict[str, SamplerFactory] = {
    "tpe": _tpe,
    "nsga2": lambda seed, size: optuna.samplers.NSGAIISampler(seed=seed),
    "gp": _gp,
    "random": lambda seed, size: optuna.samplers.RandomSampler(seed=seed),
    # Every combination once; unlike GridSampler it counts the enqueued baseline as visited.
    "grid": lambda seed, size: optuna.samplers.BruteForceSampler(seed=seed),
}
DEFAULT_SAMPLER = "tpe"


def make_sampler(name: str, seed: int | None, space_size: int) -> optuna.samplers.BaseSampler:
    """The named sampler (Optuna's experimental warnings silenced: the choice is the user's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[name](seed, space_size)


def missing_requirement(name: str) -> str | None:
    """The package a sampler needs and lacks, or None."""
    if name != "gp":
        return None
    for package in ("scipy", "torch"):
        try:
            __import__(package)
        except ImportError:
            return package
    return None
