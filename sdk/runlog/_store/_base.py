"""The contract every backend of the ``events`` table fulfils.

A backend knows SQL and its driver, nothing else: batching, retries and drop counting
live in the writer, run identity in ``_runs``.  Backends translate their driver's
exceptions into the two kinds the writer acts on — :class:`StoreBusy` (another writer
holds the lock or the server is briefly away: wait and retry) and :class:`StoreFault`
(anything else: the batch cannot be written now).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Row = tuple[int, int, "int | None", str, str]
"""One event ready for the table: (timestamp, run_id, parent_run_id, event_type, payload)."""


class StoreBusy(Exception):
    """Transient: the database is locked by another writer (or briefly unreachable)."""


class StoreUnreachable(StoreBusy):
    """Transient: the server cannot be reached (down, restarting, connection lost).

    The background writer waits such an outage out with the batch in hand, however
    long it lasts, while new events queue up to the queue's bound.
    """


class StoreFault(Exception):
    """The write failed for a reason waiting will not fix soon (read-only, full, gone)."""


class ForeignDatabase(StoreFault):
    """The database holds another application's ``events`` table: runlog must not touch it."""


COLUMNS = ("id", "timestamp", "run_id", "parent_run_id", "event_type", "payload")
"""The columns of runlog's ``events`` table, in order."""


@dataclass(frozen=True)
class Event:
    """One row of the ``events`` table, with its payload decoded."""

    id: int
    timestamp: int
    run_id: int
    parent_run_id: int | None
    event_type: str
    payload: dict[str, Any]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Event:
        raw = row[5]
        if raw is None:
            payload: dict[str, Any] = {}
        elif isinstance(raw, str):
            payload = json.loads(raw)
        else:  # a driver that decodes JSON itself
            payload = dict(raw)
        return cls(int(row[0]), int(row[1]), int(row[2]), row[3], row[4], payload)


class Store(Protocol):
    """A connection to one ``events`` table; safe to call from several threads."""

    url: str

    def create(self) -> None:
        """Create the database and schema if needed; raise ConfigurationError if unusable.

        A store opened read-only (the ``runlog`` command) creates nothing: it checks
        that the database exists and holds an ``events`` table.
        """
        ...

    def start_run(self, timestamp: int, parent_run_id: int | None, payload: str) -> int:
        """Insert a ``process.started`` row whose ``run_id`` equals its own ``id``; return it."""
        ...

    def write(self, rows: Sequence[Row]) -> None:
        """Insert ``rows`` in one transaction: all of them or, on error, none."""
        ...

    placeholder: str
    """The driver's parameter placeholder: ``?`` or ``%s``."""

    def json_text(self, key: str) -> str:
        """SQL for the payload's top-level field ``key`` as text (for ``Reader``)."""
        ...

    def json_number(self, key: str) -> str:
        """SQL for the payload's field ``key`` when it is a JSON number, else NULL."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query (with ``placeholder`` parameters); return all rows."""
        ...

    lost: int
    """Rows that were committed and then lost with their file (SQLite: deleted file)."""

    def verify(self) -> None:
        """Check now that committed rows are still where readers look (``flush()``)."""
        ...

    def close(self) -> None:
        """Close connections; the store can reopen them on next use."""
        ...

    def abandon(self) -> None:
        """Forget connections without closing them (in a forked child: they are the parent's)."""
        ...


__all__ = [
    "COLUMNS",
    "Event",
    "ForeignDatabase",
    "Row",
    "Store",
    "StoreBusy",
    "StoreFault",
    "StoreUnreachable",
]
