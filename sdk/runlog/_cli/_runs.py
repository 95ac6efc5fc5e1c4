"""Run summaries: the process tree that ``tree`` draws and ``show`` heads its table with.

Everything comes from a handful of queries, whatever the size of the table: the run ids,
the ``process.started`` and ``process.exited`` rows (the :class:`RunIndex`: enough to
draw, filter and page the tree), then for the runs shown only, the count of events per
run and type (one ``GROUP BY``), the failures (``status: "error"``) per run and type,
and the sums of the tokens of their LLM calls.  ``runlog tree`` and ``runlog ui`` read
runs through here.

* A run's parent is its ``process.started`` row's ``parent_run_id``.  A run whose
  parent is not in the database (started by a process that logs elsewhere) is drawn as
  a root, with a note; so is a run written only through the explicit
  ``log_event(..., run_id=...)`` form, which has no ``process.started``.
* spans: ``<name>.started`` events; span failures: ``<name>.failed`` events and any
  other event whose payload says ``status: "error"`` (a ``@traced_event`` call that
  raised; a span's own ``.started``/``.completed`` events are not read for it); a
  ``cancelled`` span is not a failure.
* LLM calls: ``llm_call.completed`` and ``llm_call.failed``; tokens are the sums over
  completed calls, and so is cost (as ``llm_call.repriced`` last set it), for the run
  itself and summed over its subtree (the run and every run below it).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import _spend
from .._store import Event, Reader
from ._db import CLIError
from ._liveness import liveness
from ._output import exit_failed

LLM_TYPES = ("llm_call.completed", "llm_call.failed")


@dataclass
class RunSummary:
    """One run (one process) as ``tree`` and ``show`` report it."""

    run_id: int
    parent_run_id: int | None
    role: str | None
    instance_id: str | None
    pid: int | None
    host: str | None
    version: str | None
    started: int | None
    """``process.started``'s timestamp (Unix ns), None if the run has no such row."""
    status: str
    """``exited``, ``running``, ``lost`` or ``unknown`` (see ``_liveness``)."""
    exit: dict[str, Any] | None
    """The ``process.exited`` payload: reason, exit_code, signal, error_type, error."""
    duration_ms: float | None
    """To the exit; while running, to now; lost or unknown, to the last event."""
    events: int
    spans: int
    span_failures: int
    llm_calls: int
    llm_failures: int
    input_tokens: int
    output_tokens: int
    cost: _spend.Cost = field(default_factory=_spend.Cost)
    """The run's own completed calls."""
    subtree_cost: _spend.Cost = field(default_factory=_spend.Cost)
    """The run's and every run's below it (in the drawing)."""
    notes: list[str] = field(default_factory=list)
    children: list[RunSummary] = field(default_factory=list)

    @property
    def exit_failed(self) -> bool:
        """Exited by an exception, a signal or with a non-zero code; or lost."""
        if self.status == "lost":
            return True
        return self.exit is not None and exit_failed(self.exit)

    @property
    def failed(self) -> bool:
        """Anything in this run failed: its exit, a span or an LLM call."""
        return self.exit_failed or bool(self.span_failures or self.llm_failures)

    def to_json(self) -> dict[str, Any]:
        """The summary and its children as plain JSON, with ``failed`` spelled out."""
        data = asdict(self)
        data["cost"], data["subtree_cost"] = self.cost.as_dict(), self.subtree_cost.as_dict()
        data["failed"] = self.failed
        data["children"] = [child.to_json() for child in self.children]
        return data


@dataclass
class RunIndex:
    """Every run's identity, exit and parent, from the queries that stay cheap on a big
    table (the distinct run ids, the ``process.started`` and ``process.exited`` rows):
    enough to draw, filter and page the tree before counting anything per run."""

    starts: dict[int, Event]
    exits: dict[int, Event]
    parents: dict[int, int | None]
    kids: dict[int, list[int]]

    @classmethod
    def load(cls, reader: Reader) -> RunIndex:
        starts: dict[int, Event] = {}
        for event in reader.events(event_type="process.started"):
            starts.setdefault(event.run_id, event)
        exits = {e.run_id: e for e in reader.events(event_type="process.exited")}
        parents = {rid: _parent(reader, rid, starts) for rid in reader.run_ids()}
        kids: dict[int, list[int]] = {}
        for rid in sorted(parents):
            up = parents[rid]
            if up is not None:
                kids.setdefault(up, []).append(rid)
        return cls(starts, exits, parents, kids)

    def roots(self) -> list[int]:
        """The runs drawn at the top: no parent, or a parent not in the database."""
        return [rid for rid in sorted(self.parents) if self.parents[rid] not in self.parents]

    def walk(self, tops: list[int]) -> list[tuple[int, int | None]]:
        """(run, parent in the drawing) depth first from ``tops``, each run once."""
        return _walk(tops, self.kids)


@dataclass
class _Facts:
    """What the summaries need beyond identity and exit, for the runs shown."""

    counts: dict[int, dict[str, int]]
    errors: dict[int, dict[str, int]]
    tokens: dict[int, dict[str, float]]
    llm: dict[int, list[Event]]

    @classmethod
    def load(cls, reader: Reader, run_ids: Collection[int] | None) -> _Facts:
        counts = reader.tally_runs(run_ids)
        # Only event types that can be a failure by their payload alone: a span's own
        # start and end are judged by its ``.failed`` event, so their payloads are not read.
        judged = {t for types in counts.values() for t in types if _judged_by_payload(t)}
        errors = reader.tally_runs(run_ids, payload={"status": "error"}, event_type=sorted(judged))
        tokens = reader.sums(_TOKENS, run_ids, event_type="llm_call.completed")
        llm: dict[int, list[Event]] = {}  # for cost: completed calls and their reprices
        for event in reader.events_of_runs(run_ids, event_type=(_spend.COMPLETED, _spend.REPRICED)):
            llm.setdefault(event.run_id, []).append(event)
        return cls(counts, errors, tokens, llm)


_TOKENS = ("input_tokens", "output_tokens")


def _judged_by_payload(event_type: str) -> bool:
    if event_type in LLM_TYPES or event_type.startswith("process."):
        return False
    return not event_type.endswith((".started", ".completed", ".failed"))


def load_tree(reader: Reader, root: int | None = None, last: int | None = None) -> list[RunSummary]:
    """The tree under run ``root``, or under every root run (only the ``last`` N if given)."""
    index = RunIndex.load(reader)
    if root is not None and root not in index.parents:
        raise CLIError(f"no run {root} in {reader.store.url}")
    return summarize(reader, index, [root] if root is not None else _tops(index.parents, last))


def summarize(reader: Reader, index: RunIndex, tops: list[int]) -> list[RunSummary]:
    """The summaries of the trees under ``tops``, each run once: the roots, children inside."""
    walk = index.walk(tops)
    shown = None if len(walk) == len(index.parents) else [rid for rid, _ in walk]
    facts = _Facts.load(reader, shown)
    nodes = {rid: _summary(reader, rid, index, facts) for rid, _ in walk}
    for rid, up in walk:
        parent = index.parents[rid]
        if up is not None:
            nodes[up].children.append(nodes[rid])
        elif parent is not None and parent not in index.parents:
            nodes[rid].notes.append(f"parent run {parent} is not in this database")
    roots = [nodes[rid] for rid, up in walk if up is None]
    for top in roots:
        _sum_subtree(top)
    return roots


def _sum_subtree(run: RunSummary) -> _spend.Cost:
    """Fill in ``subtree_cost`` of ``run`` and the runs below it (iteratively: deep trees)."""
    order: list[RunSummary] = []
    stack = [run]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    for node in reversed(order):  # children before their parents
        node.subtree_cost = _spend.Cost()
        node.subtree_cost += node.cost
        for child in node.children:
            node.subtree_cost += child.subtree_cost
    return run.subtree_cost


def _parent(reader: Reader, run_id: int, starts: dict[int, Event]) -> int | None:
    if run_id in starts:
        return starts[run_id].parent_run_id
    first = reader.events(run_id=run_id, limit=1)  # a run written by the explicit form
    return first[0].parent_run_id if first else None


def _tops(parents: dict[int, int | None], last: int | None) -> list[int]:
    """Where the drawing starts: the root runs (no parent, or a parent not in the
    database), only the ``last`` N if asked; else followed by every run, so that runs
    whose explicit parent ids form a cycle are drawn too (the walk skips the others)."""
    roots = [rid for rid in sorted(parents) if parents[rid] not in parents]
    return roots[-last:] if last else roots + sorted(parents)


def _walk(tops: list[int], kids: dict[int, list[int]]) -> list[tuple[int, int | None]]:
    """(run, parent in the drawing) depth first from ``tops``, each run once."""
    seen: set[int] = set()
    out: list[tuple[int, int | None]] = []
    stack: list[tuple[int, int | None]] = [(top, None) for top in reversed(tops)]
    while stack:
        rid, up = stack.pop()
        if rid in seen:
            continue  # an explicit-form parent_run_id can make a cycle
        seen.add(rid)
        out.append((rid, up))
        stack.extend((kid, rid) for kid in reversed(kids.get(rid, [])))
    return out


def _summary(reader: Reader, rid: int, index: RunIndex, facts: _Facts) -> RunSummary:
    started = index.starts.get(rid)
    identity = started.payload if started else {}
    exited = index.exits.get(rid)
    types = facts.counts.get(rid, {})
    tokens = facts.tokens.get(rid, {})
    summary = RunSummary(
        run_id=rid,
        parent_run_id=index.parents[rid],
        role=identity.get("role"),
        instance_id=identity.get("instance_id"),
        pid=identity.get("pid"),
        host=identity.get("host"),
        version=identity.get("version"),
        started=started.timestamp if started else None,
        status="exited" if exited else "unknown",
        exit=exited.payload if exited else None,
        duration_ms=None,
        events=sum(types.values()),
        spans=sum(n for t, n in types.items() if t.endswith(".started") and t != "process.started"),
        span_failures=_span_failures(types, facts.errors.get(rid, {})),
        llm_calls=sum(types.get(t, 0) for t in LLM_TYPES),
        llm_failures=types.get("llm_call.failed", 0),
        input_tokens=int(tokens.get("input_tokens", 0)),
        output_tokens=int(tokens.get("output_tokens", 0)),
        cost=_spend.total(facts.llm.get(rid, [])),
    )
    if started is None:
        summary.notes.append("no process.started: written with an explicit run_id")
    else:
        _set_end(reader, summary, started, exited)
    return summary


def _set_end(reader: Reader, summary: RunSummary, started: Event, exited: Event | None) -> None:
    """Status and duration of a run that has a ``process.started`` row."""
    if exited is not None:
        end = exited.timestamp
    else:
        summary.status, note = liveness(summary.host, summary.pid, started.timestamp)
        summary.notes += [note] if note else []
        if summary.status == "running":
            end = time.time_ns()
        else:
            end = reader.events(run_id=summary.run_id, limit=1, newest_first=True)[0].timestamp
    summary.duration_ms = round((end - started.timestamp) / 1e6, 3)


def _span_failures(types: dict[str, int], errors: dict[str, int]) -> int:
    """``*.failed`` events plus other events saying ``status: "error"``, LLM calls aside."""
    return sum(
        n if t.endswith(".failed") else errors.get(t, 0)
        for t, n in types.items()
        if t not in LLM_TYPES and not t.startswith("process.")
    )


__all__ = ["LLM_TYPES", "RunIndex", "RunSummary", "load_tree", "summarize"]
