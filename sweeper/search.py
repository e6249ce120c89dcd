"""Which configuration next: the trials a study has taken, the spec's sampler kept off them,
and the climb around the knee.

``UntakenSampler`` wraps the spec's Optuna sampler the way Optuna's own wrappers do
(``PartialFixedSampler``): it asks the sampler again, in memory, while it proposes a
configuration another trial has taken (measured, failed by its configuration, being measured,
or of a precision that cannot serve the model), and after ``REDRAWS`` in a row picks an untaken
one itself, so no trial is spent, or recorded, on a repeat. ``enqueue_neighbour`` is the climb:
the knee's most promising untried neighbour, by the knobs' effects the trials so far show.
Everything here reads trial histories; nothing measures.
"""

from __future__ import annotations

import copy
import itertools
import numbers
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from sweeper.front import ideal_distance, pareto_front, recommend
from sweeper.record import enqueue, kind_of, marks, proposed_whole
from sweeper.vocabulary import BATCHING_OFF, KNOBS, Ranking, distinct_configurations, serving_key

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


def neighbours(space: dict[str, list], params: dict[str, Any]) -> list[dict[str, Any]]:
    """The configurations one knob away from ``params``, the rest kept. A knob of numbers
    (``off`` aside: max_batch_size, the queue delay, instances) moves to a value beside its own in
    the spec's list (max_batch_size [1, 8, 32]: 8 -> 1 and 32); any other knob (protocol,
    precision, a field of words) to each of its other values, since its list is no scale: FP32
    is not nearer INT8 through FP16."""
    found = []
    for name, choices in space.items():
        if params.get(name) not in choices:
            continue
        at = choices.index(params[name])
        steps = (at - 1, at + 1) if _numeric(choices) else range(len(choices))
        found += [{**params, name: choices[i]} for i in steps if 0 <= i < len(choices) and i != at]
    return found


def _numeric(choices: list) -> bool:
    return all(isinstance(c, numbers.Real) and not isinstance(c, bool) for c in choices if c != BATCHING_OFF)


def first_figures(trials: list[FrozenTrial], ranking: Ranking) -> pd.DataFrame:
    """The completed trials (repeats aside) by their first measurement, as Optuna holds them (a
    replayed table has no trial records for ``sweeper.results.tables`` to read): ``number``, the
    parameters, each objective column with its spread of one measurement (``:lo`` = ``:hi``) and
    ``feasible`` (every constraint holds)."""
    rows = []
    for t in trials:
        if t.state != TrialState.COMPLETE or marks(t).repeat_of is not None or t.values is None:
            continue
        figures = dict(zip(ranking.columns, t.values))
        spread = {f"{column}:{end}": value for column, value in figures.items() for end in ("lo", "hi")}
        feasible = all(v <= 0 for v in t.constraints.values())
        rows.append({"number": t.number, **t.params, **figures, **spread, "feasible": feasible})
    return pd.DataFrame(rows)


_EFFECT_RIDGE = 0.1
"""Shrinks a knob value's estimated effect towards none where few trials measured it."""


def knob_effects(frame: pd.DataFrame, space: dict[str, list], columns: list[str]) -> dict[str, dict[tuple, float]]:
    """What each knob value does to each objective with the other knobs held, as ``frame``'s
    trials tell it: a ridge fit of the objective's log on one indicator per (knob, value), so an
    effect is a ratio (x2 instances: 0.8x the throughput) and a value's trials that also waited
    5 ms in the queue do not make the value look slow. ``{column: {(knob, value): log effect}}``."""
    names = [(knob, value) for knob, values in space.items() for value in values]
    indicators = np.column_stack([np.ones(len(frame))] + [(frame[k] == v).to_numpy(float) for k, v in names])
    penalty = _EFFECT_RIDGE * np.eye(indicators.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    effects = {}
    for column in columns:
        logs = np.log(frame[column].astype(float).clip(lower=1e-12).to_numpy())
        fitted = np.linalg.solve(indicators.T @ indicators + penalty, indicators.T @ logs)
        effects[column] = dict(zip(names, fitted[1:]))
    return effects


def _predicted_figures(
    origin: dict[str, Any], feasible: pd.DataFrame, effects: dict[str, dict[tuple, float]], config: dict[str, Any]
) -> dict[str, float] | None:
    """The figures of ``config``, one knob from ``origin`` (its parameters and figures), as
    ``effects`` predict them; None for a value no feasible trial has (nothing to predict from)."""
    name = next(n for n in config if config[n] != origin.get(n))
    if not (feasible[name] == config[name]).any():
        return None
    return {
        column: float(origin[column]) * np.exp(change[(name, config[name])] - change[(name, origin[name])])
        for column, change in effects.items()
    }


def enqueue_neighbour(study: optuna.Study, trials: list[FrozenTrial], space: dict[str, list], ranking: Ranking) -> bool:
    """Enqueue the most promising untried neighbour (``neighbours``) of the knee, found by
    ``sweeper.front.recommend`` over the first measurements of ``trials`` (the study's, as
    read); when the knee has none left, of the front trial next nearest the ideal that has. A
    knee can be a summit by one-knob moves that a front trial climbs past: max_batch_size 1 with
    no batcher, where neither 8 without a batcher nor 1 with one batches anything.

    Most promising: a value no feasible trial has yet, then the neighbour whose predicted figures
    (the trial's own, moved by the changed value's ``knob_effects``) come nearest the ideal of the
    measured and the predicted figures (``ideal_distance``). A sampler's path leaves the knee's
    surroundings half measured, and studies that measure different halves recommend different
    configurations. Returns whether one was enqueued."""
    figures = first_figures(trials, ranking)
    feasible = figures[figures["feasible"].astype(bool)] if not figures.empty else figures
    if feasible.empty:
        return False
    columns, directions = ranking.columns, ranking.directions
    knee_number = recommend(feasible, columns, directions, ranking.primary).knee
    front = pareto_front(feasible, columns, directions)
    by_distance = front.assign(distance=ideal_distance(front, columns, directions)).sort_values("distance")
    origins = [knee_number, *(int(n) for n in by_distance["number"] if n != knee_number)]
    busy = set(taken_configs(trials)) | {config_key(planned_params(t)) for t in trials if t.state == TrialState.WAITING}
    dropped = dropped_precisions(trials)
    effects = knob_effects(feasible, space, columns)
    rows = feasible.set_index("number")
    for origin in origins:
        params = next(t.params for t in trials if t.number == origin)
        untried = [
            config
            for config in neighbours(space, params)
            if config_key(config) not in busy and config["precision"] not in dropped
        ]
        if not untried:
            continue
        moved_from = {**rows.loc[origin, columns].to_dict(), **params}
        enqueue(study, _most_promising(untried, moved_from, feasible, effects, ranking), neighbour_of=origin)
        return True
    return False


def _most_promising(
    untried: list[dict[str, Any]],
    origin: dict[str, Any],
    feasible: pd.DataFrame,
    effects: dict[str, dict[tuple, float]],
    ranking: Ranking,
) -> dict[str, Any]:
    """Of ``origin``'s untried neighbours: one with a value no feasible trial has (the most to
    learn), else the one whose predicted figures come nearest the ideal."""
    predicted = [_predicted_figures(origin, feasible, effects, config) for config in untried]
    unknown = [config for config, figures in zip(untried, predicted) if figures is None]
    if unknown:
        return unknown[0]
    columns = ranking.columns
    frame = pd.concat([feasible[columns], pd.DataFrame(predicted)], ignore_index=True)
    distances = ideal_distance(frame, columns, ranking.directions).iloc[len(feasible) :]
    return untried[int(np.argmin(distances.to_numpy()))]


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


class UntakenSampler(optuna.samplers.BaseSampler):
    """The spec's sampler, kept off configurations other trials have taken: each trial's whole
    configuration is drawn at once (the base sampler's relative proposal, its independent one
    for the rest) and drawn again while it is taken; after ``REDRAWS``, or as soon as the
    sampler repeats a draw, an untaken one is picked (seeded). A trial with fixed parameters
    (enqueued: the baseline, a repeat, a neighbour) is left to them."""

    def __init__(self, base: optuna.samplers.BaseSampler, space: dict[str, list], seed: int | None) -> None:
        self.base = base
        # In the order trials suggest them (``sweeper.study.Proposer``): a brute-force sampler's
        # tree is walked in that order.
        order = [*(name for name in space if name not in KNOBS), *KNOBS]
        self._space = {name: CategoricalDistribution(space[name]) for name in order}
        self._choices = space
        self._rng = random.Random(seed)

    def reseed_rng(self) -> None:
        """Reseed the base sampler and the pick (Optuna calls this in each worker process)."""
        self.base.reseed_rng()
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

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        """The base sampler's (only a trial with fixed parameters asks, for a parameter it lacks)."""
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """The base sampler's (the grid's visit bookkeeping)."""
        self.base.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        """The base sampler's (a brute-force sampler stops the study when its space is used up)."""
        self.base.after_trial(study, trial, state, values)
