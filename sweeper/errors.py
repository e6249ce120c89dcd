"""The errors the CLI translates into one line plus a hint (exit status 2 or 1), and the record
of a signal that is stopping the sweeper."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class SweeperError(Exception):
    """A failure the user can act on; ``hint`` says how."""

    exit_status = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class SpecError(SweeperError):
    """The spec (or a command-line value) is invalid: nothing was started or written."""

    exit_status = 2


class UsageError(SweeperError):
    """A command was given something it cannot work with (a missing study, no trials, ...)."""

    exit_status = 2


class TrialError(SweeperError):
    """One trial could not be measured; the study records it as failed and goes on."""


class PrecisionError(TrialError):
    """A precision's model could not be built: a fact of the model, not of a configuration, so
    the precision leaves the search space for the rest of the study."""


class ServerDied(TrialError):
    """The server died while the trial measured it (a crash, a signal): the trial is measured
    again on a fresh server, and only a second death is the configuration's failure."""


class ModelError(SweeperError):
    """The model itself cannot be served (its baseline does not load, or the first trials all
    fail alike): the sweep stops instead of paying for the same failure trial after trial."""


_stop: list[type[BaseException]] = []
_pending: list[type[BaseException]] = []
_deferring = [0]  # how deep the main thread is in blocks that a signal must not cut


def request_stop(exception: type[BaseException]) -> bool:
    """Record that a signal asked the sweeper to stop (the command line's handlers call this).
    Returns whether the handler may raise now; inside ``signals_deferred`` the exception is
    raised when the block ends."""
    _stop[:] = [exception]
    if _deferring[0]:
        _pending[:] = [exception]
        return False
    return True


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """A block a signal must not cut halfway (a database write: SQLite keeps its write lock for a
    transaction that an exception left open, and every later write fails 'database is locked').
    A signal inside it is raised when it ends. Signals reach only the main thread: elsewhere
    this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferring[0] += 1
    try:
        yield
    finally:
        _deferring[0] -= 1
    if not _deferring[0] and _pending:
        raise _pending.pop()()


def stop_requested() -> type[BaseException] | None:
    """The exception a signal is unwinding the sweeper with, or None. A library interrupted
    halfway can raise something else in its place (an import cut short reads as ImportError):
    a failure seen after a signal is the signal's, not the configuration's."""
    return _stop[0] if _stop else None


def clear_stop() -> None:
    """Forget an earlier signal (each command starts without one)."""
    _stop.clear()
    _pending.clear()
