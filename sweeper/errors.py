"""The errors the CLI translates into one line plus a hint (exit status 2 or 1)."""

from __future__ import annotations


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


_stop: list[type[BaseException]] = []


def request_stop(exception: type[BaseException]) -> None:
    """Record that a signal asked the sweeper to stop (the command line's handlers call this)."""
    _stop[:] = [exception]


def stop_requested() -> type[BaseException] | None:
    """The exception a signal is unwinding the sweeper with, or None. A library interrupted
    halfway can raise something else in its place (an import cut short reads as ImportError):
    a failure seen after a signal is the signal's, not the configuration's."""
    return _stop[0] if _stop else None


def clear_stop() -> None:
    """Forget an earlier signal (each command starts without one)."""
    _stop.clear()
