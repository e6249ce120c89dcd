"""The errors the CLI translates into one line plus a hint (``sweeper.cli`` decides the exit
status: 2 for bad input, ``SpecError`` and ``UsageError``; 1 for the rest)."""

from __future__ import annotations


class SweeperError(Exception):
    """A failure the user can act on; ``hint`` says how."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class SpecError(SweeperError):
    """The spec (or a command-line value) is invalid: nothing was started or written."""


class UsageError(SweeperError):
    """A command was given something it cannot work with (a missing study, no trials, ...)."""


class TrialError(SweeperError):
    """One trial could not be measured; the study records it as failed and goes on."""


class PrecisionError(TrialError):
    """A precision's model could not be built: a fact of the model, not of a configuration, so
    the precision leaves the search space for the rest of the study."""


class GeneratorFailed(TrialError):
    """The load generator failed at a load while the server lived on and kept its connections
    (perf_analyzer's own error): the load is measured by another generator before anything is
    said of the configuration."""


class GeneratorOutOfMemory(GeneratorFailed):
    """The load generator reached its memory limit (``load.client_memory_mb``) and was stopped:
    the instrument's bound, never the configuration's."""


class MeasurementLost(TrialError):
    """A measurement cut off from outside the configuration: the trial is measured again on a
    fresh server, and only a second loss is the configuration's failure."""


class ServerDied(MeasurementLost):
    """The server died while the trial measured it (a crash, a signal)."""


class ConnectionLost(MeasurementLost):
    """The load generator lost its connection while the server lived on (reset, closed)."""


class ModelError(SweeperError):
    """The model itself cannot be served (its baseline does not load, or the first trials all
    fail alike): the sweep stops instead of paying for the same failure trial after trial."""
