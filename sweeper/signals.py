"""Signals while the sweeper runs: SIGTERM and Ctrl-C unwind the sweep like an exception (so
everything it started is stopped on the way out), never halfway through a database write, and
are recorded, so that a failure they cause inside a library is not taken for a trial's.

The command line wraps each command in ``signals_unwind``; the storage wraps its writes in
``signals_deferred``; the study asks ``stop_requested`` before it blames a configuration.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

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


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwound like Ctrl-C so every server and container is stopped on the way out."""


def _raise_terminated(signum: int, frame: object) -> None:
    if request_stop(Terminated):
        raise Terminated()


def _raise_interrupted(signum: int, frame: object) -> None:
    if request_stop(KeyboardInterrupt):
        raise KeyboardInterrupt()


@contextlib.contextmanager
def signals_unwind() -> Iterator[None]:
    """SIGTERM and Ctrl-C raise through the sweep (so everything it started is stopped) and are
    recorded, so that a failure they cause inside a library is not taken for the trial's."""
    clear_stop()
    previous_term = signal.signal(signal.SIGTERM, _raise_terminated)
    ours = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # an ignored SIGINT stays ignored
    previous_int = signal.signal(signal.SIGINT, _raise_interrupted) if ours else None
    previous_hook = sys.unraisablehook
    swallowed: list[type[BaseException]] = []

    def quiet_about_signals(unraisable: sys.UnraisableHookArgs) -> None:
        # A signal raised inside a callback Python cannot raise from (a garbage collector's weakref
        # callback in SQLAlchemy) is printed as "Exception ignored". It needs no traceback: it is
        # raised again 5 ms later, in ordinary code (a model conversion under way stops there,
        # not when it is done); the trial's phase raises it when it ends should that fail too.
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous_hook(unraisable)
            return
        swallowed[:] = [type(unraisable.exc_value)]
        signal.setitimer(signal.ITIMER_REAL, 0.005)

    def raise_swallowed(signum: int, frame: object) -> None:
        if swallowed:  # once per swallowed signal: cleanup that follows is not interrupted again
            raise swallowed.pop()()

    sys.unraisablehook = quiet_about_signals
    previous_alarm = signal.signal(signal.SIGALRM, raise_swallowed)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_alarm)
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous_term)
        if ours:
            signal.signal(signal.SIGINT, previous_int)
