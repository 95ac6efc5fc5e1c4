"""Reading the ``events`` table the same way on every backend.

Backends differ in two small things, their placeholder (``?`` or ``%s``) and how SQL
reads a payload field (``json_extract`` or ``->>``); a :class:`Reader` writes each
query once and asks the store for those two.  ``runlog.state``, ``runlog.testing``
and the ``runlog`` command read through it; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from .._payload import clean_text
from ._base import Event, Store

_COLUMNS = "id, timestamp, run_id, parent_run_id, event_type, payload"
Filter = Mapping[str, Any]
_CHUNK = 500  # run ids per IN (...) list: well under every driver's parameter limit


class Reader:
    """Queries over one store's ``events`` table (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._p = store.placeholder

    def _where(
        self,
        *,
        event_type: str | Sequence[str] | None = None,
        run_id: int | None = None,
        parent_run_id: int | None = None,
        payload: Filter | None = None,
        after_id: int = 0,
        since: int | None = None,
        until: int | None = None,
        before_id: int | None = None,
    ) -> tuple[str, list[Any]]:
        p = self._p
        clauses: list[str] = []
        params: list[Any] = []
        for bound, value in ((">=", since), ("<", until)):
            if value is not None:
                clauses.append(f"timestamp {bound} {p}")
                params.append(value)
        if after_id:  # only when asked: "id > 0" can steer SQLite away from an index
            clauses.append(f"id > {p}")
            params.append(after_id)
        if before_id is not None:
            clauses.append(f"id < {p}")
            params.append(before_id)
        if isinstance(event_type, str):
            clauses.append(f"event_type = {p}")
            params.append(event_type)
        elif event_type is not None:
            types = list(event_type)
            clauses.append(f"event_type IN ({', '.join([p] * len(types))})" if types else "0=1")
            params.extend(types)
        for column, value in (("run_id", run_id), ("parent_run_id", parent_run_id)):
            if value is not None:
                clauses.append(f"{column} = {p}")
                params.append(value)
        for key, value in (payload or {}).items():
            _check_key(key)
            clauses.append(f"{self.store.json_text(key)} = {p}")
            params.append(clean_text(str(value)))  # as the encoder stored it
        return " AND ".join(clauses) or "1=1", params

    def events(
        self,
        *,
        event_type: str | Sequence[str] | None = None,
        run_id: int | None = None,
        parent_run_id: int | None = None,
        payload: Filter | None = None,
        after_id: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
        since: int | None = None,
        until: int | None = None,
        before_id: int | None = None,
    ) -> list[Event]:
        """Events matching every filter given, in ``id`` order (or newest first).

        ``since`` and ``until`` bound ``timestamp`` (Unix ns, ``since <= t < until``);
        ``after_id`` and ``before_id`` bound ``id`` (a page of a long list).
        """
        where, params = self._where(
            event_type=event_type,
            run_id=run_id,
            parent_run_id=parent_run_id,
            payload=payload,
            after_id=after_id,
            since=since,
            until=until,
            before_id=before_id,
        )
        sql = f"SELECT {_COLUMNS} FROM events WHERE {where} ORDER BY id"
        if newest_first:
            sql += " DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Event.from_row(row) for row in self.store.query(sql, params)]

    def count(
        self,
        *,
        event_type: str | Sequence[str] | None = None,
        run_id: int | None = None,
        parent_run_id: int | None = None,
        payload: Filter | None = None,
        since: int | None = None,
        until: int | None = None,
    ) -> int:
        """How many events match every filter given (payload values compare as text)."""
        where, params = self._where(
            event_type=event_type,
            run_id=run_id,
            parent_run_id=parent_run_id,
            payload=payload,
            since=since,
            until=until,
        )
        ((n,),) = self.store.query(f"SELECT COUNT(*) FROM events WHERE {where}", params)
        return int(n)

    def latest(
        self,
        event_type: str,
        *,
        run_id: int | None = None,
        parent_run_id: int | None = None,
        payload: Filter | None = None,
    ) -> Event | None:
        """The most recent event of ``event_type`` matching the filters, or None."""
        found = self.events(
            event_type=event_type,
            run_id=run_id,
            parent_run_id=parent_run_id,
            payload=payload,
            limit=1,
            newest_first=True,
        )
        return found[0] if found else None

    def tally(self) -> dict[int, dict[str, int]]:
        """Events per run and type: ``{run_id: {event_type: count}}``."""
        rows = self.store.query(
            "SELECT run_id, event_type, COUNT(*) FROM events GROUP BY run_id, event_type"
        )
        out: dict[int, dict[str, int]] = {}
        for run_id, event_type, n in rows:
            out.setdefault(int(run_id), {})[str(event_type)] = int(n)
        return out

    def last_id(self) -> int:
        """The highest ``id`` in the table (0 when empty)."""
        ((n,),) = self.store.query("SELECT COALESCE(MAX(id), 0) FROM events")
        return int(n)

    # -- for the ``runlog`` command: a few runs at once, and following new rows ----------
    def _runs_in(self, run_ids: Collection[int] | None) -> Iterator[tuple[str, list[Any]]]:
        """``run_id IN (...)`` clauses covering ``run_ids`` in chunks (``1=1`` for None)."""
        if run_ids is None:
            yield "1=1", []
            return
        ids = sorted(run_ids)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            yield f"run_id IN ({', '.join([self._p] * len(chunk))})", list(chunk)

    def tally_runs(
        self,
        run_ids: Collection[int] | None = None,
        *,
        payload: Filter | None = None,
        event_type: str | Sequence[str] | None = None,
    ) -> dict[int, dict[str, int]]:
        """Like :meth:`tally`, for some runs only (None: all), matching the filters."""
        where, params = self._where(payload=payload, event_type=event_type)
        out: dict[int, dict[str, int]] = {}
        for runs, run_params in self._runs_in(run_ids):
            rows = self.store.query(
                f"SELECT run_id, event_type, COUNT(*) FROM events WHERE {where} AND {runs}"
                " GROUP BY run_id, event_type",
                [*params, *run_params],
            )
            for run_id, event_type, n in rows:
                out.setdefault(int(run_id), {})[str(event_type)] = int(n)
        return out

    def events_of_runs(
        self,
        run_ids: Collection[int] | None,
        *,
        event_type: str | Sequence[str] | None = None,
    ) -> list[Event]:
        """Events of several runs (None: of every run), in ``id`` order."""
        where, params = self._where(event_type=event_type)
        found: list[Event] = []
        for runs, run_params in self._runs_in(run_ids):
            sql = f"SELECT {_COLUMNS} FROM events WHERE {where} AND {runs} ORDER BY id"
            found += [Event.from_row(row) for row in self.store.query(sql, [*params, *run_params])]
        return sorted(found, key=lambda event: event.id) if run_ids else found

    def run_ids(self) -> list[int]:
        """Every run id in the table, ascending (from the ``run_id`` index alone)."""
        return sorted(int(row[0]) for row in self.store.query("SELECT DISTINCT run_id FROM events"))

    def sums(
        self,
        keys: Sequence[str],
        run_ids: Collection[int] | None,
        *,
        event_type: str | Sequence[str] | None = None,
    ) -> dict[int, dict[str, float]]:
        """Per run, the sums of payload fields ``keys`` where they are JSON numbers.

        Computed by the database, so that a page of runs with thousands of LLM calls
        does not decode every payload to add up its tokens.
        """
        for key in keys:
            _check_key(key)
        where, params = self._where(event_type=event_type)
        columns = ", ".join(f"SUM({self.store.json_number(key)})" for key in keys)
        out: dict[int, dict[str, float]] = {}
        for runs, run_params in self._runs_in(run_ids):
            rows = self.store.query(
                f"SELECT run_id, {columns} FROM events WHERE {where} AND {runs} GROUP BY run_id",
                [*params, *run_params],
            )
            for run_id, *totals in rows:
                out[int(run_id)] = {k: float(v or 0) for k, v in zip(keys, totals, strict=True)}
        return out

    def ids_after(self, after_id: int) -> list[int]:
        """Every ``id`` above ``after_id``, ascending: cheap, from the primary key alone.

        A follower (``runlog tail -f``) uses it to notice an id that commits late: on
        PostgreSQL ids are taken before the commit, so they need not appear in order.
        """
        rows = self.store.query(
            f"SELECT id FROM events WHERE id > {self._p} ORDER BY id", [after_id]
        )
        return [int(row[0]) for row in rows]


def _check_key(key: str) -> None:
    """A payload field name goes into SQL text: only plain names are accepted."""
    if not (key.isascii() and key.replace("_", "").isalnum()):
        raise ValueError(f"payload filters take plain field names, got {key!r}")


__all__ = ["Reader"]
