"""Opening the database for reading: the one way every command gets its :class:`Reader`.

The command reads only.  It opens the store read-only and calls ``create()``, which in
that mode checks and never creates: a missing file, a file that is not a runlog
database or a bad URL is a :class:`~runlog.ConfigurationError` with a clear message,
never a new empty database or a migration of someone else's file.
"""

from __future__ import annotations

import os

from .._config import DEFAULT_DB
from .._errors import ConfigurationError
from .._store import Reader, open_store


class CLIError(Exception):
    """A problem the user can fix (an unknown run, say): printed, exit status 1."""


def resolve_db(given: str | None) -> tuple[str, str]:
    """The database to read and where that choice came from, as the SDK chooses it.

    ``--db`` wins, then ``RUNLOG_DB`` (empty counts as unset), then ``runlog.db``.
    """
    if given:
        return given, "--db"
    from_env = os.environ.get("RUNLOG_DB")
    if from_env:
        return from_env, "RUNLOG_DB"
    return DEFAULT_DB, "default"


def open_reader(db: str, source: str) -> Reader:
    """A reader of ``db``, checked to be a runlog database; the message says where ``db``
    came from, since "no database at runlog.db" puzzles someone who set nothing."""
    try:
        store = open_store(db, readonly=True)
        store.create()
    except ConfigurationError as exc:
        hint = {
            "default": " (the default database: give --db or set RUNLOG_DB)",
            "RUNLOG_DB": " (from RUNLOG_DB)",
        }.get(source, "")
        raise CLIError(f"{exc}{hint}") from None
    return Reader(store)


def require_run(reader: Reader, run_id: int) -> None:
    """Raise :class:`CLIError` unless some event belongs to ``run_id``."""
    if not reader.count(run_id=run_id):
        raise CLIError(f"no run {run_id} in {reader.store.url}")


__all__ = ["CLIError", "open_reader", "require_run", "resolve_db"]
