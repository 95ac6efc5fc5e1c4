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
"""

from __future__ import annotations

from typing import Any

from ._errors import StoreUnavailableError
from ._log import flush
from ._runs import current_run_id, get_runtime
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
    return int(_read("the workers' count", lambda r: worker_seq_of(r, parent)))


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


__all__ = [
    "children",
    "count_events",
    "current_good_rev",
    "events",
    "latest_event",
    "latest_payload",
    "worker_instance_seq",
]
