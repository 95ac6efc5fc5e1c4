"""What each page shows, read through the one query layer: the SDK's :class:`Reader`,
the CLI's run summaries (``_cli._runs``) and LLM statistics (``_cli._stats``), and
``runlog.state``'s definitions of the derived state.  No SQL of its own.

Pages stay fast on big tables by reading only what they show: the runs page counts
the events of one page of process trees, a run page reads the events of its own
subtree, the LLM page works on a window of the newest matching calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import state
from .._cli._liveness import liveness
from .._cli._output import exit_failed
from .._cli._runs import LLM_TYPES, RunIndex, RunSummary, summarize
from .._cli._stats import ModelStats, model_stats
from .._store import Event, Reader
from . import _charts, _waterfall

ROOTS_PER_PAGE = 20
EVENTS_PER_PAGE = 500
RUN_EVENTS_MAX = 5000
"""Events read per process for a run page's waterfall and list."""
RUN_PROCESSES_MAX = 60
"""Processes drawn on a run page's waterfall (the first, depth first); the table lists all."""
LLM_WINDOW = 5000
LLM_PER_PAGE = 100
TAIL_ROWS = 200
STATUSES = ("running", "exited", "failed", "lost", "unknown")


class BadRequest(Exception):
    """A filter the page cannot use (shown to the user, HTTP 400)."""


def parse_time(text: str | None) -> int | None:
    """A ``datetime-local`` value (local time) as Unix ns; empty is None."""
    if not text:
        return None
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1e9)
    except ValueError:
        raise BadRequest(f"not a time: {text!r} (use YYYY-MM-DDTHH:MM)") from None


def parse_field(text: str | None) -> dict[str, str]:
    """``task_id=7`` as a payload filter; empty is no filter."""
    if not text:
        return {}
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not (key.isascii() and key.replace("_", "").isalnum()):
        raise BadRequest(f"a payload filter is field=value with a plain field name, got {text!r}")
    return {key: value.strip()}


def parse_int(text: str | None, what: str, default: int | None = None) -> int | None:
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{what} must be a number, got {text!r}") from None


# -- runs -------------------------------------------------------------------------
@dataclass
class Row:
    """A run in the runs table: its summary, depth in its tree, whether it matched."""

    run: RunSummary
    depth: int
    matched: bool


@dataclass
class SupervisorState:
    run_id: int
    instance_id: str | None
    worker_instance_seq: int
    promoted: Any


@dataclass
class RunsPage:
    rows: list[Row]
    roots: int
    page: int
    pages: int
    roles: list[str]
    current_good_rev: Any
    supervisors: list[SupervisorState]


def quick_status(index: RunIndex, rid: int) -> str:
    """A run's status from the index alone (no counting): for the filters."""
    exited = index.exits.get(rid)
    if exited is not None:
        return "failed" if exit_failed(exited.payload) else "exited"
    started = index.starts.get(rid)
    if started is None:
        return "unknown"
    who = started.payload
    return liveness(who.get("host"), who.get("pid"), started.timestamp)[0]


def runs_page(
    reader: Reader,
    *,
    role: str | None = None,
    status: str | None = None,
    since: int | None = None,
    until: int | None = None,
    page: int = 1,
) -> RunsPage:
    """The process trees newest first, a page of roots at a time; runs that do not
    match the filters are shown dimmed inside trees that have one that does."""
    if status and status not in STATUSES:
        raise BadRequest(f"status is one of {', '.join(STATUSES)}, got {status!r}")
    index = RunIndex.load(reader)
    filtered = bool(role or status or since or until)

    def matches(rid: int) -> bool:
        started = index.starts.get(rid)
        at = started.timestamp if started else None
        if role and (started is None or started.payload.get("role") != role):
            return False
        if since is not None and (at is None or at < since):
            return False
        if until is not None and (at is None or at >= until):
            return False
        return not status or quick_status(index, rid) == status

    matched = {rid for rid in index.parents if matches(rid)} if filtered else set(index.parents)
    roots = sorted(index.roots(), reverse=True)
    if filtered:
        roots = [r for r in roots if any(rid in matched for rid, _ in index.walk([r]))]
    pages = max(1, -(-len(roots) // ROOTS_PER_PAGE))
    page = max(1, min(page, pages))
    shown = roots[(page - 1) * ROOTS_PER_PAGE : page * ROOTS_PER_PAGE]
    rows: list[Row] = []
    for tree in summarize(reader, index, shown):
        _flatten(tree, 0, matched, rows)
    supervisors = [
        SupervisorState(
            r.run.run_id,
            r.run.instance_id,
            state.worker_seq_of(reader, r.run.run_id),
            state.good_rev_of(reader, r.run.run_id),
        )
        for r in rows
        if r.run.role == "supervisor"
    ]
    roles = sorted({str(e.payload.get("role")) for e in index.starts.values()})
    return RunsPage(rows, len(roots), page, pages, roles, state.good_rev_of(reader), supervisors)


def _flatten(run: RunSummary, depth: int, matched: set[int], out: list[Row]) -> None:
    out.append(Row(run, depth, run.run_id in matched))
    for child in run.children:
        _flatten(child, depth + 1, matched, out)


# -- one run ----------------------------------------------------------------------
@dataclass
class RunPage:
    run: RunSummary
    rows: list[Row]
    ancestors: list[tuple[int, str]]
    identity: dict[str, Any]
    waterfall: _waterfall.Waterfall
    events: list[Event]
    names: dict[int, str]
    page: int
    pages: int
    total: int
    truncated: list[int] = field(default_factory=list)
    not_drawn: int = 0


def run_page(reader: Reader, run_id: int, page: int = 1) -> RunPage | None:
    """A run and its descendants: the waterfall and their events, or None if unknown."""
    index = RunIndex.load(reader)
    if run_id not in index.parents:
        return None
    (run,) = summarize(reader, index, [run_id])
    rows: list[Row] = []
    _flatten(run, 0, set(index.parents), rows)
    events: dict[int, list[Event]] = {}
    truncated = []
    drawn = rows[:RUN_PROCESSES_MAX]
    for row in drawn:
        rid = row.run.run_id
        events[rid] = reader.events(run_id=rid, limit=RUN_EVENTS_MAX)
        if len(events[rid]) == RUN_EVENTS_MAX and row.run.events > RUN_EVENTS_MAX:
            truncated.append(rid)
    merged = sorted((e for evs in events.values() for e in evs), key=lambda e: e.id)
    pages = max(1, -(-len(merged) // EVENTS_PER_PAGE))
    page = max(1, min(page, pages))
    started = index.starts.get(run_id)
    return RunPage(
        run=run,
        rows=rows,
        ancestors=_ancestors(index, run_id),
        identity=started.payload if started else {},
        waterfall=_waterfall.build([(r.run, r.depth) for r in drawn], events),
        events=merged[(page - 1) * EVENTS_PER_PAGE : page * EVENTS_PER_PAGE],
        names={r.run.run_id: _name(r.run) for r in rows},
        page=page,
        pages=pages,
        total=len(merged),
        truncated=truncated,
        not_drawn=len(rows) - len(drawn),
    )


def _name(run: RunSummary) -> str:
    return f"#{run.run_id} {run.instance_id or run.role or '?'}"


def _ancestors(index: RunIndex, run_id: int) -> list[tuple[int, str]]:
    """The runs above ``run_id``, root first (stopping at a cycle or a missing parent)."""
    out: list[tuple[int, str]] = []
    seen = {run_id}
    up = index.parents.get(run_id)
    while up is not None and up in index.parents and up not in seen:
        seen.add(up)
        who = index.starts[up].payload if up in index.starts else {}
        out.append((up, f"#{up} {who.get('instance_id') or who.get('role') or '?'}"))
        up = index.parents[up]
    return out[::-1]


# -- LLM calls ---------------------------------------------------------------------
SORTS = {
    "time": lambda e: e.id,
    "latency": lambda e: _num(e.payload.get("latency_ms")),
    "ttft": lambda e: _num(e.payload.get("time_to_first_token_ms")),
    "input": lambda e: _num(e.payload.get("input_tokens")),
    "output": lambda e: _num(e.payload.get("output_tokens")),
}


def _num(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return -1.0


@dataclass
class ModelView:
    stats: ModelStats
    histogram: _charts.Chart


@dataclass
class LLMPage:
    calls: list[Event]
    window: int
    total: int
    models: list[ModelView]
    tokens: _charts.Chart
    page: int
    pages: int
    names: dict[int, str]


def llm_page(
    reader: Reader,
    *,
    model: str | None = None,
    operation: str | None = None,
    status: str | None = None,
    run_id: int | None = None,
    since: int | None = None,
    until: int | None = None,
    sort: str = "time",
    ascending: bool = False,
    page: int = 1,
) -> LLMPage:
    """The newest :data:`LLM_WINDOW` matching calls: sorted, paged, summarised per model."""
    if sort not in SORTS:
        raise BadRequest(f"sort is one of {', '.join(SORTS)}, got {sort!r}")
    types = {"completed": "llm_call.completed", "failed": "llm_call.failed"}
    if status and status not in types:
        raise BadRequest(f"status is completed or failed, got {status!r}")
    payload = {k: v for k, v in (("model_name", model), ("operation", operation)) if v}
    where: dict[str, Any] = {
        "event_type": types[status] if status else LLM_TYPES,
        "run_id": run_id,
        "payload": payload,
        "since": since,
        "until": until,
    }
    window = reader.events(**where, limit=LLM_WINDOW, newest_first=True)
    total = len(window) if len(window) < LLM_WINDOW else reader.count(**where)
    views = []
    for stats in model_stats(window):
        latencies = [
            _num(e.payload.get("latency_ms"))
            for e in window
            if e.event_type == "llm_call.completed"
            and str(e.payload.get("model_name") or "?") == stats.model
        ]
        views.append(ModelView(stats, _charts.histogram([v for v in latencies if v >= 0])))
    tokens = _charts.tokens_over_time(
        [
            (
                e.timestamp,
                max(_num(e.payload.get("input_tokens")), 0.0),
                max(_num(e.payload.get("output_tokens")), 0.0),
            )
            for e in window
            if e.event_type == "llm_call.completed"
        ]
    )
    ordered = sorted(window, key=SORTS[sort], reverse=not ascending)
    pages = max(1, -(-len(ordered) // LLM_PER_PAGE))
    page = max(1, min(page, pages))
    calls = ordered[(page - 1) * LLM_PER_PAGE : page * LLM_PER_PAGE]
    return LLMPage(calls, len(window), total, views, tokens, page, pages, run_names(reader, calls))


def run_names(reader: Reader, events: list[Event]) -> dict[int, str]:
    """``#3 worker-1`` for each run of ``events`` (their ``process.started`` rows)."""
    ids = {e.run_id for e in events}
    found = reader.events_of_runs(ids, event_type="process.started") if ids else []
    names = {rid: f"#{rid}" for rid in ids}
    for event in found:
        who = event.payload
        names[event.run_id] = f"#{event.run_id} {who.get('instance_id') or who.get('role') or '?'}"
    return names


# -- events -------------------------------------------------------------------------
@dataclass
class EventFilter:
    """The events page's filters, as the Reader takes them."""

    event_type: list[str] | None
    run_id: int | None
    payload: dict[str, str]

    @classmethod
    def parse(cls, types: str | None, run: str | None, field_: str | None) -> EventFilter:
        names = [t.strip() for t in (types or "").split(",") if t.strip()]
        return cls(names or None, parse_int(run, "run"), parse_field(field_))

    def events(self, reader: Reader, **more: Any) -> list[Event]:
        return reader.events(
            event_type=self.event_type, run_id=self.run_id, payload=self.payload, **more
        )


def tail(reader: Reader, where: EventFilter, before: int | None = None) -> tuple[list[Event], int]:
    """The newest :data:`TAIL_ROWS` matching events (below id ``before`` if given),
    newest first, and the id to follow from (taken first: whatever is written
    meanwhile is the live tail's)."""
    start = reader.last_id()
    found = where.events(reader, limit=TAIL_ROWS, newest_first=True, before_id=before)
    return [e for e in found if e.id <= start], start


def event(reader: Reader, event_id: int) -> Event | None:
    """The event with ``event_id``, or None."""
    found = reader.events(after_id=event_id - 1, limit=1) if event_id > 0 else []
    return found[0] if found and found[0].id == event_id else None


__all__ = [
    "BadRequest",
    "EventFilter",
    "LLMPage",
    "RunPage",
    "RunsPage",
    "event",
    "llm_page",
    "run_names",
    "run_page",
    "runs_page",
    "tail",
]
