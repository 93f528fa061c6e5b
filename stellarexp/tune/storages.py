"""Optuna storages of the sweeps and the lock that serialises count-then-ask between workers.

Storages: a journal file (default ``$STELLAREXP_HOME/mlruns/optuna/journal.log``, or a path) or
a database URL. The ask lock is a file lock for journal files and SQLite and an advisory lock in
PostgreSQL; other server databases have none (concurrent workers may overshoot ``n_trials`` by
at most ``n_jobs`` per extra worker).
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import sqlalchemy as sa
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.pool import NullPool

from stellarexp.io_utils import file_lock
from stellarexp.tune.journal import repair_journal
from stellarexp.tune.studies import default_journal

log = logging.getLogger("stellarexp.sweep")


def _journal_path(spec: str | None) -> Path | None:
    if not spec:
        return default_journal()
    if "://" in str(spec):
        return None
    return Path(str(spec)).expanduser().resolve()


def describe_storage(spec: str | None) -> str:
    """The storage as a user passes it to ``optuna-dashboard`` (path, or URL without password).

    This text goes to logs, MLflow tags and the (versioned) results files: never a password.
    """
    path = _journal_path(spec)
    if path is not None:
        return str(path)
    return re.sub(r"(://[^:/@]+:)[^/]*@", r"\1***@", str(spec))


def open_storage(spec: str | None):
    """Open an Optuna storage: a journal file (default or a path) or a database URL."""
    path = _journal_path(spec)
    if path is None:
        kwargs = {"connect_args": {"timeout": 60}} if str(spec).startswith("sqlite") else None
        return RDBStorage(str(spec), engine_kwargs=kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = repair_journal(path)  # a torn write must not stop every study in the file
    if report:
        log.warning(report)
    return JournalStorage(JournalFileBackend(str(path)))


# PostgreSQL advisory lock id of the sweeper (any fixed 64-bit number; one per database)
_PG_LOCK_KEY = 0x5354454C4C4152


@contextlib.contextmanager
def _pg_lock(url: str):
    """Hold a PostgreSQL advisory lock: workers on other hosts see it too; released at exit."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
    finally:
        engine.dispose()


def has_ask_lock(spec: str | None) -> bool:
    """True when :func:`ask_lock` really serialises workers on this storage."""
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return str(spec).startswith("postgresql")
    return _journal_path(spec) is not None or str(spec).startswith(("sqlite:///", "postgresql"))


@contextlib.contextmanager
def ask_lock(spec: str | None):
    """Serialise count-then-ask between workers (journal files, SQLite and PostgreSQL)."""
    path = _journal_path(spec)
    if path is None and str(spec).startswith("postgresql"):
        with _pg_lock(str(spec)):
            yield
        return
    if path is None and str(spec).startswith("sqlite:///"):
        path = Path(str(spec)[len("sqlite:///"):])
    if path is None:
        yield
        return
    # without flock on this platform the block runs unserialised: counting may overshoot
    with file_lock(f"{path}.sweeper-lock"):
        yield


