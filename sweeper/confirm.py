"""Confirmation: the front's candidates measured again on fresh servers, a round at a time, and
the baseline measured again through the study (anchors), as trials enqueued with their role
(``repeat_of``, ``anchor``) and run by the same runner as the search's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeper.ask_tell import TrialCallback, run_trial
from sweeper.record import enqueue, kind_of, marks, read_study
from sweeper.results import confirmation_candidates, still_racing
from sweeper.search import counted
from sweeper.signals import stop_requested
from sweeper.spec import LoadedSpec


def repeats_of(trials: list[FrozenTrial]) -> dict[int, list[FrozenTrial]]:
    """Confirmation repeats and anchors that were measured, are being measured or wait, by the
    trial they repeat (an interrupted one is planned again)."""
    found: dict[int, list[FrozenTrial]] = {}
    for trial in trials:
        original = marks(trial).repeat_of
        if original is not None and kind_of(trial) in ("complete", "failed", "running", "waiting"):
            found.setdefault(original, []).append(trial)
    return found


def baseline_trial(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The completed baseline trial (not a repeat of it), or None."""
    for trial in trials:
        role = marks(trial)
        if role.baseline and role.repeat_of is None and kind_of(trial) == "complete":
            return trial
    return None


def enqueue_anchor(study: optuna.Study, every: int) -> bool:
    """After every ``every`` counted trials the baseline is measured again on a fresh server (an
    anchor: drift over the study shows against it). Returns whether one was enqueued."""
    if every <= 0:
        return False
    trials = study.get_trials(deepcopy=False)
    baseline = baseline_trial(trials)
    if baseline is None:
        return False
    anchors = sum(marks(t).anchor for t in repeats_of(trials).get(baseline.number, []))
    if anchors >= counted(trials) // every:
        return False
    enqueue(study, baseline.params, repeat_of=baseline.number, anchor=True)
    return True


def enqueue_repeats(study: optuna.Study, candidates: list[int], repeats: int) -> int:
    """Enqueue the repeats the candidates still lack, interleaved (A B C A B C: drift spreads
    over every candidate rather than landing on one); returns how many."""
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    have = {number: sum(not marks(t).anchor for t in found) for number, found in repeats_of(trials).items()}
    enqueued = 0
    for round_ in range(1, repeats + 1):
        for number in candidates:
            if have.get(number, 0) < round_:
                enqueue(study, by_number[number].params, repeat_of=number)
                have[number] = have.get(number, 0) + 1
                enqueued += 1
    return enqueued


def waiting_repeats(study: optuna.Study) -> int:
    """Repeats enqueued and not yet started."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return sum(marks(t).repeat_of is not None for t in waiting)


def confirm_study(
    study: optuna.Study,
    loaded: LoadedSpec,
    runner: Callable[[optuna.Trial], Any],
    storage: optuna.storages.RDBStorage,
    *,
    on_trial_end: TrialCallback | None = None,
) -> list[int]:
    """After the search: the front's candidates (``sweeper.results.confirmation_candidates``)
    measured up to ``study.confirm_repeats`` more times on fresh servers, a round at a time,
    interleaved; after each round a candidate beaten beyond both spreads on every objective
    leaves the race (``sweeper.results.still_racing``). Then every anchor still waiting.
    Resumable (what is measured stays, what is missing is enqueued again). Returns the
    candidates."""
    repeats = loaded.spec.study.confirm_repeats
    candidates = []
    if repeats > 0:
        margin = loaded.spec.load.settings.confirmation_margin
        cap = loaded.spec.study.confirm_candidates
        candidates = confirmation_candidates(read_study(study), loaded.ranking, margin, cap)
        for round_ in range(1, repeats + 1):
            # A round measures each candidate still in the race once more, interleaved.
            racing = candidates if round_ == 1 else still_racing(read_study(study), loaded.ranking, candidates)
            enqueue_repeats(study, racing, round_)
            _run_waiting(study, storage, runner, on_trial_end)
    _run_waiting(study, storage, runner, on_trial_end)  # anchors still waiting
    return candidates


def _run_waiting(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    runner: Callable[[optuna.Trial], Any],
    on_trial_end: TrialCallback | None,
) -> None:
    while waiting_repeats(study):
        stop = stop_requested()
        if stop is not None:
            raise stop()
        # A waiting trial that is no repeat (one a resume enqueued) may propose a taken configuration.
        run_trial(study, storage, runner, on_trial_end)
