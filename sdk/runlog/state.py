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

::

    seq = runlog.state.worker_instance_seq() + 1     # number for the next worker
    rev = runlog.state.current_good_rev()            # None before the first promotion
    spent = runlog.state.cost(subtree=True).usd      # USD of this run and all below it

Cost queries sum each completed call's current cost (as ``runlog reprice`` last set
it) into a :class:`Cost`, which keeps the calls that could not be priced apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import _spend
from ._errors import StoreUnavailableError
from ._log import flush
from ._runs import current_run_id, get_runtime
from ._spend import Cost
from ._store import Event, Reader, StoreBusy, StoreFault

_PayloadValue = str | int | float | bool


def _reader() -> Reader:
    runtime = get_runtime()
    flush()
    return Reader(runtime.store)


def _read(what: str, query: Any) -> Any:
    """Run ``query(reader)``; a database that cannot answer is a clear error."""
    try:
        return query(_reader())
    except (StoreBusy, StoreFault) as exc:
        raise StoreUnavailableError(f"runlog could not read {what}: {exc}") from None


def worker_instance_seq(supervisor_run_id: int | None = None) -> int:
    """How many workers the supervisor run has started (default: the current run).

    The COUNT of ``process.started`` events with ``role: "worker"`` whose
    ``parent_run_id`` is the supervisor's run_id.
    """
    parent = current_run_id() if supervisor_run_id is None else supervisor_run_id
    return count_events("process.started", parent_run_id=parent, role="worker")


def current_good_rev() -> Any | None:
    """The ``revision`` of the most recent ``revision.promoted`` event, or None."""
    payload = latest_payload("revision.promoted")
    return None if payload is None else payload.get("revision")


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
    parent = current_run_id() if run_id is None else run_id
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
        run_id = current_run_id()

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
    "worker_instance_seq",
]
