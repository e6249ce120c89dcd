"""The climb around the knee, as a sampler: the last ``study.neighbours`` trials of a study
measure the knee's most promising untried neighbour (one knob moved), by what the knobs do in
the trials so far, instead of the spec's sampler's proposal.

``ClimbingSampler`` wraps the study's sampler (``sweeper.search.UntakenSampler`` around the
spec's TPE, NSGA-II, GP or grid) the way Optuna's own wrappers do (``PartialFixedSampler``):
for a trial it climbs on, it proposes the neighbour (``next_neighbour``) and marks the trial
``neighbour_of`` the front trial it surrounds; for any other trial, or when no front trial has an
untried neighbour, the wrapped sampler proposes. Why: a sampler's path leaves the knee's
surroundings half measured, and studies that measure different halves recommend different
configurations (benchmarks/README.md, front stability and the pick replay). Everything here
reads trial histories; nothing measures.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from sweeper.front import ideal_distance, pareto_front, recommend
from sweeper.record import kind_of, mark_neighbour, marks
from sweeper.search import WrappingSampler, config_key, counted, dropped_precisions, planned_params, taken_configs
from sweeper.vocabulary import BATCHING_OFF, Ranking


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


def next_neighbour(
    trials: list[FrozenTrial], space: dict[str, list], ranking: Ranking
) -> tuple[dict[str, Any], int] | None:
    """The most promising untried neighbour (``neighbours``) of the knee, found by
    ``sweeper.front.recommend`` over the first measurements of ``trials``; when the knee has none
    left, of the front trial next nearest the ideal that has. A knee can be a summit by one-knob
    moves that a front trial climbs past: max_batch_size 1 with no batcher, where neither 8
    without a batcher nor 1 with one batches anything. Untried: not taken, not waiting its turn,
    not of a dropped precision.

    Most promising: a value no feasible trial has yet, then the neighbour whose predicted figures
    (the trial's own, moved by the changed value's ``knob_effects``) come nearest the ideal of the
    measured and the predicted figures (``ideal_distance``). Returns the configuration and the
    front trial it surrounds; None when no front trial has an untried neighbour."""
    figures = first_figures(trials, ranking)
    feasible = figures[figures["feasible"].astype(bool)] if not figures.empty else figures
    if feasible.empty:
        return None
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
        if untried:
            moved_from = {**rows.loc[origin, columns].to_dict(), **params}
            return _most_promising(untried, moved_from, feasible, effects, ranking), origin
    return None


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


class ClimbingSampler(WrappingSampler):
    """``base``, but for the trials that climb: once ``climb_from`` trials are counted or
    running (``study.trials`` less ``study.neighbour_trials``), a trial the study's sampler
    would propose gets the knee's most promising untried neighbour instead (``next_neighbour``),
    marked ``neighbour_of``. A trial with fixed parameters (the baseline, a repeat, a re-run) is
    left to them."""

    def __init__(self, base: optuna.samplers.BaseSampler, space: dict[str, list], ranking: Ranking, climb_from: int):
        super().__init__(base)
        self._space = space
        self._ranking = ranking
        self._climb_from = climb_from

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """The neighbour, where this trial climbs and one is left; else the base sampler's."""
        if search_space:
            trials = study.get_trials(deepcopy=False)
            others = sum(kind_of(t) == "running" and t.number != trial.number for t in trials)
            found = (
                next_neighbour(trials, self._space, self._ranking)
                if counted(trials) + others >= self._climb_from
                else None
            )
            if found is not None:
                params, origin = found
                mark_neighbour(study, trial, origin)
                return {name: params[name] for name in search_space}
        return super().sample_relative(study, trial, search_space)
