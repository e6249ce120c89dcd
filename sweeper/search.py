"""Which configuration next: the trials a study has taken, and the spec's sampler kept off them
(the climb around the knee wraps this: ``sweeper.climb``).

``UntakenSampler`` wraps the spec's Optuna sampler the way Optuna's own wrappers do
(``PartialFixedSampler``): it asks the sampler again, in memory, while it proposes a
configuration another trial has taken (measured, failed by its configuration, being measured,
or of a precision that cannot serve the model), and after ``REDRAWS`` in a row picks an untaken
one itself, so no trial is spent, or recorded, on a repeat. Everything here reads trial
histories; nothing measures.
"""

from __future__ import annotations

import copy
import itertools
import random
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from sweeper.record import kind_of, marks, proposed_whole
from sweeper.vocabulary import KNOBS, distinct_configurations, serving_key

REDRAWS = 25
"""Proposals of taken configurations in a row before ``UntakenSampler`` picks an untaken one."""
_ENUMERATED = 100_000
"""Spaces up to this size are enumerated to pick an untaken configuration; larger ones drawn."""


class DuplicateProposal(Exception):
    """The sampler proposed a configuration that is measured or being measured already."""


def counted(trials: list[FrozenTrial]) -> int:
    """Trials that count towards ``study.trials``: distinct configurations measured or failed,
    less those that found a precision cannot serve the model (``dropped_precisions``): a fact
    about the model, found once, not a configuration the study got to compare."""
    return len(
        {
            config_key(t.params)
            for t in trials
            if kind_of(t) in ("complete", "failed") and marks(t).dropped_precision is None
        }
    )


def planned_params(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's knobs: suggested, or fixed by ``enqueue_trial`` while it waits."""
    return trial.params or marks(trial).fixed_params


def config_key(params: dict[str, Any]) -> tuple:
    """A configuration as a hashable key: configurations that serve alike share one
    (``sweeper.vocabulary.serving_key``)."""
    return serving_key(params)


def taken_configs(trials: list[FrozenTrial], before: int | None = None) -> dict[tuple, int]:
    """Configurations measured, failed by configuration, or being measured (by trials numbered
    below ``before``): key -> the first trial that took it."""
    taken: dict[tuple, int] = {}
    for trial in trials:
        if before is not None and trial.number >= before:
            continue
        if kind_of(trial) in ("complete", "failed", "running") and proposed_whole(trial.params):
            taken.setdefault(config_key(trial.params), trial.number)
    return taken


def dropped_precisions(trials: list[FrozenTrial]) -> dict[str, int]:
    """Precisions that cannot serve the model (their build failed, or their outputs failed the
    accuracy guard), each with the trial that found it: later proposals of them are not measured."""
    found: dict[str, int] = {}
    for trial in trials:
        role = marks(trial)
        if role.dropped_precision and role.repeat_of is None and kind_of(trial) in ("complete", "failed"):
            found.setdefault(role.dropped_precision, trial.number)
    return found


def exhausted(space: dict[str, list], trials: list[FrozenTrial]) -> bool:
    """Whether every configuration of ``space`` is taken, or belongs to a dropped precision."""
    dropped = dropped_precisions(trials)
    kept = [p for p in space["precision"] if p not in dropped]
    by_number = {t.number: t for t in trials}
    taken = [key for key, number in taken_configs(trials).items() if by_number[number].params["precision"] in kept]
    return len(taken) >= (distinct_configurations({**space, "precision": kept}) if kept else 0)


def untaken_configuration(
    space: dict[str, list], trials: list[FrozenTrial], rng: random.Random
) -> dict[str, Any] | None:
    """A configuration of ``space`` no trial has taken and of no dropped precision, chosen by
    ``rng``; None when there is none. A space too large to enumerate gets a random draw."""
    taken, dropped = set(taken_configs(trials)), dropped_precisions(trials)
    if distinct_configurations(space) > _ENUMERATED:
        return {name: rng.choice(choices) for name, choices in space.items()}
    names = list(space)
    configs = (dict(zip(names, values)) for values in itertools.product(*space.values()))
    free = [c for c in configs if config_key(c) not in taken and c["precision"] not in dropped]
    return rng.choice(free) if free else None


class WrappingSampler(optuna.samplers.BaseSampler):
    """A sampler around another (``base``), the way Optuna's ``PartialFixedSampler`` wraps one:
    every call handed on to ``base``; a subclass replaces the calls it changes."""

    def __init__(self, base: optuna.samplers.BaseSampler) -> None:
        self.base = base

    def reseed_rng(self) -> None:
        """The base sampler's (Optuna calls this in each worker process)."""
        self.base.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """The base sampler's."""
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """The base sampler's."""
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        """The base sampler's (a trial with fixed parameters asks, for a parameter it lacks)."""
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """The base sampler's (the grid's visit bookkeeping)."""
        self.base.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        """The base sampler's."""
        self.base.after_trial(study, trial, state, values)


class UntakenSampler(WrappingSampler):
    """The spec's sampler, kept off configurations other trials have taken: each trial's whole
    configuration is drawn at once (the base sampler's relative proposal, its independent one
    for the rest) and drawn again while it is taken; after ``REDRAWS``, or as soon as the
    sampler repeats a draw, an untaken one is picked (seeded). A trial with fixed parameters
    (enqueued: the baseline, a repeat, a neighbour) is left to them."""

    def __init__(self, base: optuna.samplers.BaseSampler, space: dict[str, list], seed: int | None) -> None:
        super().__init__(base)
        # In the order trials suggest them (``sweeper.study.Proposer``): a brute-force sampler's
        # tree is walked in that order.
        order = [*(name for name in space if name not in KNOBS), *KNOBS]
        self._space = {name: CategoricalDistribution(space[name]) for name in order}
        self._choices = space
        self._rng = random.Random(seed)

    def reseed_rng(self) -> None:
        """Reseed the base sampler and the pick (Optuna calls this in each worker process)."""
        super().reseed_rng()
        self._rng = random.Random()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """The whole space, drawn at once; nothing for a trial with fixed parameters."""
        return {} if marks(trial).fixed_params else dict(self._space)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """An untaken configuration: the base sampler's, drawn again while taken, else picked."""
        if not search_space:
            return {}
        trials = study.get_trials(deepcopy=False)
        taken, dropped = taken_configs(trials), dropped_precisions(trials)
        drawn: set[tuple] = set()
        for _ in range(REDRAWS):
            params = self._draw(study, trial)
            key = config_key(params)
            if key not in taken and params.get("precision") not in dropped:
                return params
            if key in drawn:  # a sampler that answers alike each time (GP, a grid) is not asked on
                break
            drawn.add(key)
        return untaken_configuration(self._choices, trials, self._rng) or params

    def _draw(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        """One whole configuration from the base sampler, each parameter asked of it as the
        trial would ask it: on a draft of the trial that holds the parameters drawn before."""
        relative = self.base.infer_relative_search_space(study, trial)
        drawn = dict(self.base.sample_relative(study, trial, relative)) if relative else {}
        drawn.update(trial.params)  # a single-choice knob is set before the sampler is asked
        draft = copy.deepcopy(trial)
        for name, distribution in self._space.items():
            if name not in drawn:
                drawn[name] = self.base.sample_independent(study, draft, name, distribution)
            if name not in draft.params:
                draft.params = {**draft.params, name: drawn[name]}
                draft.distributions = {**draft.distributions, name: distribution}
        return drawn

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        """The base sampler's. A brute-force sampler stops a study whose space it has used up
        with ``study.stop()``, which only ``study.optimize`` allows; the study loop asks and
        tells (``sweeper.ask_tell``) and sees a used-up space itself (``exhausted``)."""
        try:
            super().after_trial(study, trial, state, values)
        except RuntimeError as exc:
            if "Study.stop" not in str(exc):
                raise
