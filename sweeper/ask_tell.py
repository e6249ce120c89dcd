"""One trial, asked and told: Optuna's ask-and-tell interface, with the measuring outside it.

The study's sampler is asked for a configuration (``study.ask``), the objective measures it
(building, serving and loading a server: nothing Optuna runs), and the result is told
(``study.tell``). While it measures, a heartbeat thread keeps the trial alive in a storage that
has heartbeats (PostgreSQL, MySQL: ``RDBStorage(heartbeat_interval=...)``), as
``study.optimize`` would, so a worker that dies is found by the others
(``optuna.storages.fail_stale_trials``).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeper.errors import TrialError
from sweeper.search import DuplicateProposal

TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


def _heartbeat_interval(storage: optuna.storages.BaseStorage) -> int | None:
    """Seconds between a trial's heartbeats; None where the storage keeps none (in memory)."""
    interval = getattr(storage, "get_heartbeat_interval", None)
    return interval() if interval is not None else None


@contextlib.contextmanager
def _heartbeat(storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat every interval until the block ends (nothing where the
    storage keeps no heartbeats)."""
    interval = _heartbeat_interval(storage)
    if interval is None:
        yield
        return
    stop = threading.Event()
    trial_id = trial._trial_id  # Optuna names a trial to its storage by this id; there is no public one

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_trial(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    objective: Callable[[optuna.Trial], Any],
    on_trial_end: TrialCallback | None = None,
) -> FrozenTrial:
    """Ask, measure with ``objective``, tell; then ``on_trial_end``. A TrialError (the
    configuration failed: the objective recorded why) or a DuplicateProposal (another worker
    took the configuration in the same instant) is told as FAIL; anything else (a signal, a lost
    engine, a full disk) is told as FAIL too, where the storage still answers, and raised: the
    objective marked the trial interrupted, to be run again."""
    with warnings.catch_warnings():
        # ask() warns that heartbeats are optimize()'s: here _heartbeat beats for the trial.
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if _heartbeat_interval(storage) is not None:  # as optimize does: dead workers' trials first
            optuna.storages.fail_stale_trials(study)
        trial = study.ask()
    try:
        with _heartbeat(storage, trial):
            values = objective(trial)
    except (TrialError, DuplicateProposal):
        told = study.tell(trial, state=TrialState.FAIL)
    except BaseException:
        with contextlib.suppress(Exception):
            study.tell(trial, state=TrialState.FAIL)
        raise
    else:
        told = study.tell(trial, values)
    if on_trial_end is not None:
        on_trial_end(study, told)
    return told
