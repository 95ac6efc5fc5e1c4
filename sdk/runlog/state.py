"""State derived from the ``events`` table: what a supervisor needs, asked of its history.

runlog keeps no key-value table: a fact such as "how many workers has this supervisor
started" is a query over the events that recorded it, so it can never disagree with
them.  Every read first flushes this process's queue, so it sees every event the
process logged before the call.

The plan this SDK was built for counts "``worker.started`` events" to number workers.
A worker's own ``process.started`` (with ``role: "worker"``) is exactly that event — the
first thing a worker logs, with the supervisor's run as its parent — so runlog logs no
second, redundant ``worker.started``, and :func:`worker_instance_seq` counts
``process.started`` rows with role worker under the supervisor's run.

Two counts number workers.  :func:`worker_instance_seq` is the plan's: the workers
whose own ``process.started`` is in the table.  A worker spawned a moment ago is not
counted until it has started, so ``worker_instance_seq() + 1`` would give two workers
spawned back to back the same number.  :func:`next_worker_instance_seq` adds what this
supervisor has spawned and not yet seen start — the ``worker_instance_seq`` of its own
latest ``worker.spawned`` event — and is the number to give the next worker::

    seq = runlog.state.next_worker_instance_seq()    # number for the next worker
    runlog.log_event("worker.spawned", {"worker_instance_seq": seq, ...})
    rev = runlog.state.current_good_rev()            # None before the first promotion
    spent = runlog.state.cost(subtree=True).usd      # USD of this run and all below it

Cost queries sum each completed call's current cost (as ``runlog reprice`` last set
it) into a :class:`Cost`, which keeps the calls that could not be priced apart.

Reads never start a run: in a process that has not logged anything they open the
configured database read-only (``RUNLOG_DB``, else ``runlog.db``) and write nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import _forksafe, _spend
from ._config import resolve
from ._errors import ConfigurationError, StoreUnavailableError
from ._log import flush
from ._runs import _state, started_run
from ._spend import Cost
from ._store import Event, Reader, Store, StoreBusy, StoreFault, open_store

_PayloadValue = str | int | float | bool


class _ReadOnly:
    """The read-only store of a process that has no runtime (opened once per setting)."""

    def __init__(self) -> None:
        self.lock = _forksafe.lock()
        self.db: str | None = None
        self.store: Store | None = None

    def get(self) -> Store:
        db = resolve({}).db
        with self.lock:
            if self.store is None or self.db != db:
                store = open_store(db, readonly=True)
                store.create()  # read-only: checks the database exists, creates nothing
                self.store, self.db = store, db
            return self.store


_read_only = _ReadOnly()


def _reader() -> Reader:
    runtime = _state.runtime
    if runtime is None:
        return Reader(_read_only.get())
    flush()
    return Reader(runtime.store)


def _read(what: str, query: Any) -> Any:
    """Run ``query(reader)``; a database that cannot answer is a clear error."""
    try:
        return query(_reader())
    except (StoreBusy, StoreFault, ConfigurationError) as exc:
        raise StoreUnavailableError(f"runlog could not read {what}: {exc}") from None


def _this_run() -> int | None:
    run = started_run()
    return None if run is None else run.run_id


def worker_instance_seq(supervisor_run_id: int | None = None) -> int:
    """How many workers the supervisor run has started (default: the current run).

    The COUNT of ``process.started`` events with ``role: "worker"`` whose
    ``parent_run_id`` is the supervisor's run_id.  0 for a process whose run has not
    started (it has started nothing).
    """
    parent = _this_run() if supervisor_run_id is None else supervisor_run_id
    if parent is None:
        return 0
    return int(_read("the workers' count", lambda r: worker_seq_of(r, parent)))


def next_worker_instance_seq(supervisor_run_id: int | None = None) -> int:
    """The number for the next worker, counting workers spawned but not yet started.

    ``1 + max(worker_instance_seq(), the worker_instance_seq of the supervisor's latest
    worker.spawned event)``: race-free for a supervisor that logs ``worker.spawned``
    (with ``worker_instance_seq``) for each worker it starts, since its own events
    are read back before the count.
    """
    parent = _this_run() if supervisor_run_id is None else supervisor_run_id
    if parent is None:
        return 1
    started = worker_instance_seq(parent)
    spawned = latest_payload("worker.spawned", run_id=parent)
    seq = spawned.get("worker_instance_seq") if spawned else None
    highest = seq if isinstance(seq, int) and not isinstance(seq, bool) else 0
    return max(started, highest) + 1


def current_good_rev() -> Any | None:
    """The ``revision`` of the most recent ``revision.promoted`` event, or None."""
    return _read("the latest revision.promoted", good_rev_of)


# The definitions themselves, over any reader: `runlog ui` shows the same derived state.
def worker_seq_of(reader: Reader, supervisor_run_id: int) -> int:
    """:func:`worker_instance_seq` of ``supervisor_run_id``, read through ``reader``."""
    return reader.count(
        event_type="process.started", parent_run_id=supervisor_run_id, payload={"role": "worker"}
    )


def good_rev_of(reader: Reader, run_id: int | None = None) -> Any | None:
    """:func:`current_good_rev` through ``reader`` (only ``run_id``'s promotions if given)."""
    event = reader.latest("revision.promoted", run_id=run_id)
    return None if event is None else event.payload.get("revision")


def count_events(
    event_type: str | None = None,
    *,
    run_id: int | None = None,
    parent_run_id: int | None = None,
    **payload: _PayloadValue,
) -> int:
    """Count events by type, run, parent run and payload fields (compared as text)."""
    return int(
        _read(
            f"the count of {event_type or 'events'}",
            lambda r: r.count(
                event_type=event_type, run_id=run_id, parent_run_id=parent_run_id, payload=payload
            ),
        )
    )


def latest_payload(
    event_type: str,
    *,
    run_id: int | None = None,
    parent_run_id: int | None = None,
    **payload: _PayloadValue,
) -> dict[str, Any] | None:
    """The payload of the most recent matching event, or None if there is none."""
    event = latest_event(event_type, run_id=run_id, parent_run_id=parent_run_id, **payload)
    return None if event is None else event.payload


def latest_event(
    event_type: str,
    *,
    run_id: int | None = None,
    parent_run_id: int | None = None,
    **payload: _PayloadValue,
) -> Event | None:
    """The most recent matching event, or None."""
    found: Event | None = _read(
        f"the latest {event_type}",
        lambda r: r.latest(event_type, run_id=run_id, parent_run_id=parent_run_id, payload=payload),
    )
    return found


def children(run_id: int | None = None, **payload: _PayloadValue) -> list[Event]:
    """The ``process.started`` events of the runs started by ``run_id`` (default: this run)."""
    parent = _this_run() if run_id is None else run_id
    if parent is None:
        return []
    found: list[Event] = _read(
        f"the children of run {parent}",
        lambda r: r.events(event_type="process.started", parent_run_id=parent, payload=payload),
    )
    return found


def events(
    event_type: str | None = None,
    *,
    run_id: int | None = None,
    parent_run_id: int | None = None,
    limit: int | None = None,
    **payload: _PayloadValue,
) -> list[Event]:
    """Matching events in the order they were written."""
    found: list[Event] = _read(
        f"{event_type or 'events'}",
        lambda r: r.events(
            event_type=event_type,
            run_id=run_id,
            parent_run_id=parent_run_id,
            payload=payload,
            limit=limit,
        ),
    )
    return found


# -- cost ------------------------------------------------------------------------------
Moment = datetime | float
"""A point in time: a ``datetime`` (naive means local time) or Unix seconds (``time.time()``)."""


def cost(
    run_id: int | None = None,
    *,
    subtree: bool = False,
    model: str | None = None,
    since: Moment | None = None,
    until: Moment | None = None,
) -> Cost:
    """What the completed LLM calls cost, as a :class:`Cost` (``.usd``, ``.unpriced``, ...).

    ``run_id``: only that run's calls (None: every run's; with ``subtree=True``, None
    means the current run); ``subtree``: also the calls of every run below it;
    ``model``: only calls of that ``model_name``; ``since``/``until``: only calls that
    ended in ``[since, until)``.
    """
    found = _costed(run_id, subtree, since, until)
    if model is not None:
        found = [(event, payload) for event, payload in found if payload.get("model_name") == model]
    total = Cost()
    for _, payload in found:
        total.add(payload)
    return total


def cost_by_model(
    run_id: int | None = None,
    *,
    subtree: bool = False,
    since: Moment | None = None,
    until: Moment | None = None,
) -> dict[str, Cost]:
    """:func:`cost` per ``model_name``, for the same choice of runs and time range."""
    out: dict[str, Cost] = {}
    for _, payload in _costed(run_id, subtree, since, until):
        out.setdefault(str(payload.get("model_name") or "?"), Cost()).add(payload)
    return out


def _costed(
    run_id: int | None, subtree: bool, since: Moment | None, until: Moment | None
) -> list[tuple[Event, dict[str, Any]]]:
    types = (_spend.COMPLETED, _spend.REPRICED)
    if subtree and run_id is None:
        run_id = _this_run()
        if run_id is None:
            return []  # no run started yet: nothing of this process's to sum

    def query(reader: Reader) -> list[Event]:
        if run_id is None:
            return reader.events(event_type=types)
        if not subtree:
            return reader.events(event_type=types, run_id=run_id)
        return reader.events_of_runs(_below(reader, run_id), event_type=types)

    events: list[Event] = _read("the cost of LLM calls", query)
    low, high = _ns(since), _ns(until)
    return [
        (event, payload)
        for event, payload in _spend.current(events)
        if (low is None or event.timestamp >= low) and (high is None or event.timestamp < high)
    ]


def _below(reader: Reader, run_id: int) -> set[int]:
    """``run_id`` and every run below it, from the ``process.started`` rows."""
    kids: dict[int, list[int]] = {}
    for started in reader.events(event_type="process.started"):
        if started.parent_run_id is not None:
            kids.setdefault(started.parent_run_id, []).append(started.run_id)
    found, todo = {run_id}, [run_id]
    while todo:
        for kid in kids.get(todo.pop(), ()):
            if kid not in found:  # explicit-form parent ids can make a cycle
                found.add(kid)
                todo.append(kid)
    return found


def _ns(moment: Moment | None) -> int | None:
    if moment is None:
        return None
    if isinstance(moment, datetime):
        return int(moment.timestamp() * 1e9)
    if isinstance(moment, (int, float)) and not isinstance(moment, bool):
        return int(moment * 1e9)
    raise TypeError(f"runlog.state: since/until take a datetime or Unix seconds, got {moment!r}")


__all__ = [
    "Cost",
    "children",
    "cost",
    "cost_by_model",
    "count_events",
    "current_good_rev",
    "events",
    "latest_event",
    "latest_payload",
    "next_worker_instance_seq",
    "worker_instance_seq",
]
