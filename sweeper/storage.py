"""Where studies are kept: Optuna storages, opened with heartbeats, errors in one line.

A SQLite study is run by one sweeper at a time (``exclusive_run``, a lock beside the
database); a shared storage (PostgreSQL) detects dead workers by Optuna's heartbeats.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.exc

from sweeper.errors import SweeperError, UsageError
from sweeper.signals import signals_deferred


class SignalSafeStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose every call finishes before a signal unwinds the sweeper
    (``signals_deferred``): a SIGTERM raised inside SQLAlchemy's commit left the SQLite database
    locked, and the interrupted trial could not even be marked failed."""


def _deferred(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with signals_deferred():
            return method(*args, **kwargs)

    return call


for _name, _method in list(vars(optuna.storages.RDBStorage).items()):
    if inspect.isfunction(_method) and not _name.startswith("_"):
        setattr(SignalSafeStorage, _name, _deferred(_method))


def default_storage(directory: Path) -> str:
    """The SQLite database in a study folder."""
    return f"sqlite:///{directory / 'study.db'}"


def masked(url: str) -> str:
    """``url`` with whatever stands between the user name and the host hidden, whether or not
    it parses as a URL (``postgresql://u:***@host/db``): no message prints a password."""
    head, at, host = url.rpartition("@")
    slashes = head.find("//")
    prefix, credentials = (head[: slashes + 2], head[slashes + 2 :]) if slashes >= 0 else ("", head)
    if not at or ":" not in credentials:
        return url[:200]
    return f"{prefix}{credentials.split(':', 1)[0]}:***@{host}"[:200]


def storage_label(url: str) -> str:
    """The storage URL with its password hidden; UsageError when it is not a database URL or
    names a database kind SQLAlchemy does not know."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
        shown = parsed.render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:  # ValueError: a port that is no number
        reason = "its port is not a number" if isinstance(exc, ValueError) else "not a database URL"
        raise UsageError(
            f"--storage / study.storage: {reason}: {masked(url)!r}",
            hint="e.g. sqlite:///path/study.db or postgresql://user@host:5432/db",
        ) from None
    try:
        parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise UsageError(
            f"--storage / study.storage: unknown database kind '{parsed.drivername}' in {shown}",
            hint="use sqlite:///path/study.db or postgresql://user@host/db",
        ) from None
    except ImportError:
        pass  # a known kind whose driver is missing: open_storage says which
    return shown


_CREATION_ATTEMPTS = 5
_CREATION_RACE = ("already exists", "unique constraint", "duplicate key", "database is locked")


def _lost_creation_race(exc: sqlalchemy.exc.SQLAlchemyError) -> bool:
    """Whether another process created the same storage's tables at the same moment (two
    workers, or a report, opening a new database together): opening it again then succeeds."""
    return any(words in str(exc).lower() for words in _CREATION_RACE)


def open_storage(url: str, heartbeat_s: int | None = None) -> optuna.storages.RDBStorage:
    """Optuna's storage for ``url``, with heartbeats (a worker silent for three heartbeats is
    dead); its errors become one line (password hidden) and a hint."""
    shown = storage_label(url)
    options = {} if heartbeat_s is None else {"heartbeat_interval": heartbeat_s, "grace_period": 3 * heartbeat_s}
    try:
        for attempt in range(_CREATION_ATTEMPTS):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return SignalSafeStorage(url, **options)
            except sqlalchemy.exc.SQLAlchemyError as exc:
                if attempt + 1 == _CREATION_ATTEMPTS or not _lost_creation_race(exc):
                    raise
                time.sleep(0.2 * (attempt + 1))
    except ImportError:
        raise SweeperError(
            f"storage {shown}: the database driver is not installed",
            hint="pip install 'psycopg[binary]' for postgresql://, or name the driver: postgresql+psycopg2://",
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise SweeperError(
            f"storage {shown}: {str(exc.orig if getattr(exc, 'orig', None) else exc).splitlines()[0][:300]}",
            hint="check that the database server runs, is reachable and the database exists",
        ) from None


def open_stored_study(directory: Path, storage: str | None = None) -> optuna.Study:
    """The study kept in a results folder (its study.db), for report and export."""
    directory = Path(directory)
    if storage is None:
        if not (directory / "study.db").is_file():
            what = "no study.db in" if directory.is_dir() else "no such study folder:"
            raise UsageError(f"{what} {directory}", hint="give RESULTS_DIR/STUDY as written by 'sweeper run'")
        storage = default_storage(directory)
    opened = open_storage(storage)
    names = optuna.get_all_study_names(opened)
    name = directory.name if directory.name in names or len(names) != 1 else names[0]
    try:
        return optuna.load_study(study_name=name, storage=opened)
    except KeyError:
        raise UsageError(
            f"no study '{name}' in {storage_label(storage)}", hint=f"studies there: {', '.join(names) or 'none'}"
        ) from None


def existing_study(url: str, name: str) -> optuna.Study | None:
    """The stored study ``name`` if the storage holds one; creates nothing (a SQLite database
    that does not exist yet is not made)."""
    if url.startswith("sqlite"):
        database = sqlalchemy.engine.make_url(url).database
        if not database or not Path(database).is_file():
            return None
    opened = open_storage(url)
    if name not in optuna.get_all_study_names(opened):
        return None
    return optuna.load_study(study_name=name, storage=opened)


@contextlib.contextmanager
def exclusive_run(url: str, name: str) -> Iterator[None]:
    """For a SQLite storage: hold a lock beside the database for the run, so a second sweeper
    of the same study is refused instead of failing the first one's live trial."""
    database = sqlalchemy.engine.make_url(url).database if url.startswith("sqlite") else None
    if not database:
        yield
        return
    lock_path = Path(f"{database}.lock")
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "another process"
            raise UsageError(
                f"study '{name}' is being run by another sweeper ({owner}) on {database}",
                hint="wait for it, or share the study between workers with a PostgreSQL storage (--storage)",
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
