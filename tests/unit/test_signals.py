"""A signal is never raised halfway through a database write: the command line's handlers record
it, and inside the storage it is raised once the write has finished. Real signals (sent by this
process to itself from inside SQLAlchemy's commit), a real SQLite database."""

from __future__ import annotations

import os
import signal
import time

import optuna
import pytest

from sweeper.signals import Terminated, request_stop, signals_deferred, signals_unwind, stop_requested
from sweeper.storage import open_storage
from tests.conftest import signal_at_first_commit


@pytest.fixture(autouse=True)
def interruptible():
    """Python's own Ctrl-C handler, as a sweeper in a terminal has it: a suite started in the
    background inherits SIGINT ignored, and an ignored SIGINT stays ignored (signals_unwind)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("signum, raised", [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_a_signal_inside_a_write_is_raised_after_it(tmp_path, signum, raised):
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    signal_at_first_commit(storage, signum)
    with signals_unwind():
        with pytest.raises(raised):
            study.set_user_attr("written", True)
        assert stop_requested() is raised
    again = optuna.load_study(study_name="s", storage=open_storage(f"sqlite:///{tmp_path / 'study.db'}"))
    assert again.user_attrs["written"] is True, "the write finished before the signal was raised"
    started = time.perf_counter()
    again.set_user_attr("after", 1)  # no transaction was left open: the database is not locked
    assert time.perf_counter() - started < 2


def test_a_deferred_signal_is_raised_when_the_outermost_block_ends():
    reached = []
    with signals_unwind():
        assert request_stop(KeyboardInterrupt), "outside a block the handler raises at once"
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                assert not request_stop(KeyboardInterrupt), "inside: recorded, not raised"
                with signals_deferred():
                    pass  # an inner block ends: the outer one is still writing
                reached.append(True)
    assert reached == [True]


def test_a_signal_swallowed_in_a_finalizer_is_raised_again_in_ordinary_code(capsys):
    """Python cannot raise from a finalizer (a ``__del__``, a garbage collector's callback): the
    signal is recorded, quietly, and raised again in the code that runs next, once."""

    class SignalledWhileCollected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))  # the handler runs here, inside the finalizer

    def busy(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sum(range(1000))

    with signals_unwind():
        with pytest.raises(Terminated):
            SignalledWhileCollected()  # collected at once
            busy(2.0)
        busy(0.1)  # raised once: what runs after (the cleanup) is not interrupted again
    assert "Exception ignored" not in capsys.readouterr().err
