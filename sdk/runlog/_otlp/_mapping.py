"""The ``events`` table as OpenTelemetry spans: pure functions, no I/O, no OTel import.

One trace per root run (ids from :mod:`runlog._propagation`, so the export of a row is
the same every time and agrees with the ``TRACEPARENT`` the running process handed
its children).  For each run:

* a span ``process <role>`` from ``process.started`` to ``process.exited``; a run
  without ``process.exited`` ends at its last event and says so
  (``runlog.run.state``: ``running``, ``lost`` or ``unknown``); its parent is the span
  that started the process (``parent_span_id`` in ``process.started``), else the
  parent run's process span, else the span of an adopted ``TRACEPARENT``;
* a span per runlog span (``<name>.started`` … ``.completed``/``.failed``) and per
  ``@traced_event`` call, under its ``parent_span_id``; ERROR with ``error.type`` on
  failure;
* a CLIENT span per ``llm_call.completed``/``.failed`` in the GenAI semantic
  conventions; token counts runlog estimated are not reported as ``gen_ai.usage.*``
  but as ``runlog.usage.estimated_*`` (the conventions reserve usage for what the
  provider reported);
* every other event is a span event on the span that was current when it was logged
  (its ``span_id``), else on the process span.

:func:`build` returns :class:`SpanData`, which :mod:`runlog._otlp._export` turns into
the SDK's ``ReadableSpan`` and ``--dry-run --json`` prints.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._propagation import parse_traceparent, root_trace_id, span_id
from .._store import Event

AttrValue = str | bool | int | float | list[str] | list[bool] | list[int] | list[float]
Attributes = dict[str, AttrValue]

_SPAN_KEYS = frozenset(
    {"duration_ms", "elapsed_ms", "status", "error_type", "error", "cancelled_by", "function"}
)
"""runlog's own span fields: exported as ``runlog.<key>``."""
_LIFECYCLE = frozenset({"process.started", "process.exited"})
_LLM = frozenset({"llm_call.completed", "llm_call.failed"})
_OPERATIONS = {
    "chat": "chat",
    "responses": "chat",
    "completions": "text_completion",
    "completion": "text_completion",
    "text_completion": "text_completion",
    "embeddings": "embeddings",
}
_LLM_FIELDS = {
    "model_name": "gen_ai.request.model",
    "response_model": "gen_ai.response.model",
    "response_id": "gen_ai.response.id",
    "stream": "gen_ai.request.stream",
    "status_code": "http.response.status_code",
}
_INT64 = 2**63


@dataclass
class SpanEvent:
    """One event of the table placed on a span."""

    name: str
    timestamp: int
    attributes: Attributes


@dataclass
class SpanData:
    """One span, ready to hand to an exporter (or print)."""

    trace_id: int
    span_id: int
    parent_id: int | None
    name: str
    kind: str  # INTERNAL, CLIENT
    start: int
    end: int
    run_id: int
    attributes: Attributes = field(default_factory=dict)
    events: list[SpanEvent] = field(default_factory=list)
    error: str | None = None
    """None: status unset; else status ERROR with this description."""
    final: bool = True
    """Whether the span can no longer change (a follower ships only final spans)."""

    def to_json(self) -> dict[str, Any]:
        """The span as ``--dry-run --json`` prints it (ids in OTLP's hex form)."""
        return {
            "trace_id": f"{self.trace_id:032x}",
            "span_id": f"{self.span_id:016x}",
            "parent_span_id": None if self.parent_id is None else f"{self.parent_id:016x}",
            "name": self.name,
            "kind": self.kind,
            "start_time_unix_nano": self.start,
            "end_time_unix_nano": self.end,
            "status": {"code": "ERROR", "message": self.error} if self.error is not None else None,
            "attributes": self.attributes,
            "events": [
                {"name": e.name, "time_unix_nano": e.timestamp, "attributes": e.attributes}
                for e in self.events
            ],
            "run_id": self.run_id,
        }


# -- attributes ------------------------------------------------------------------------
def flatten(payload: Mapping[str, Any], out: Attributes, prefix: str = "") -> Attributes:
    """Payload fields as OTLP attributes: nested objects dotted, lists kept when they are
    homogeneous scalars (else JSON text), ``null`` dropped."""
    for key, value in payload.items():
        kind = type(value)
        if kind in _SCALARS:
            out[prefix + key] = value
        elif kind is dict or (kind is not list and isinstance(value, Mapping)):
            flatten(value, out, f"{prefix}{key}.")
        else:
            converted = _attr(value)
            if converted is not None:
                out[prefix + key] = converted
    return out


_SCALARS = frozenset({str, bool, float})


def _attr(value: Any) -> AttrValue | None:
    kind = type(value)
    if kind in _SCALARS:
        return value  # type: ignore[no-any-return]
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -_INT64 <= value < _INT64 else str(value)
    if isinstance(value, bool | str | float):
        return value
    if isinstance(value, list):
        kinds = {type(v) for v in value}
        if len(kinds) == 1 and kinds <= {str, bool, float} | (
            {int} if all(isinstance(v, int) and -_INT64 <= v < _INT64 for v in value) else set()
        ):
            return list(value)
        if not value:
            return []
    return json.dumps(value, separators=(",", ":"), default=str)


def _span_fields(payload: Mapping[str, Any], out: Attributes) -> Attributes:
    """A runlog span's payload: runlog's fields as ``runlog.*``, the user's as given."""
    user = {}
    for key, value in payload.items():
        if key in ("span_id", "parent_span_id"):
            continue
        if key in _SPAN_KEYS:
            converted = _attr(value)
            if converted is not None:
                out[f"runlog.{key}"] = converted
        else:
            user[key] = value
    flatten(user, out)
    if isinstance(payload.get("error_type"), str):
        out["error.type"] = payload["error_type"]
    return out


def _error(payload: Mapping[str, Any]) -> str | None:
    if payload.get("status") != "error":
        return None
    message = payload.get("error")
    return message if isinstance(message, str) else str(payload.get("error_type") or "error")


# -- runs ------------------------------------------------------------------------------
class Traces:
    """Which trace each run belongs to, from the ``process.started`` rows of the table."""

    def __init__(self, started: Iterable[Event]) -> None:
        self.started: dict[int, Event] = {e.run_id: e for e in started}
        self._trace: dict[int, tuple[int, int | None]] = {}

    def root_of(self, run_id: int) -> int:
        """The root run above ``run_id`` (a run whose parent is not in the table is one)."""
        seen = {run_id}
        while True:
            event = self.started.get(run_id)
            parent = None if event is None else event.parent_run_id
            if parent is None or parent not in self.started or parent in seen:
                return run_id
            seen.add(parent)
            run_id = parent

    def trace(self, run_id: int) -> tuple[int, int | None]:
        """``(trace_id, remote parent span)`` of the run's trace."""
        root = self.root_of(run_id)
        if root not in self._trace:
            event = self.started.get(root)
            adopted = None
            if event is not None and isinstance(event.payload.get("traceparent"), str):
                adopted = parse_traceparent(event.payload["traceparent"])
            if adopted is not None:
                self._trace[root] = adopted
            else:
                started = event.timestamp if event is not None else 0
                self._trace[root] = (root_trace_id(root, started), None)
        return self._trace[root]

    def resource(self, run_id: int, service_name: str) -> Attributes:
        """The resource of a run's spans: who the process was."""
        who = self.started[run_id].payload if run_id in self.started else {}
        out: Attributes = {"service.name": service_name, "runlog.run_id": run_id}
        for key, name in (
            ("instance_id", "service.instance.id"),
            ("version", "service.version"),
            ("pid", "process.pid"),
            ("host", "host.name"),
            ("role", "runlog.role"),
            ("python", "process.runtime.version"),
        ):
            value = _attr(who.get(key))
            if value is not None:
                out[name] = value
        return out


_IDENTITY = frozenset({"role", "instance_id", "version", "pid", "host", "python"})


def _process_span(traces: Traces, run_id: int, events: list[Event], state: str | None) -> SpanData:
    trace, remote = traces.trace(run_id)
    started = traces.started.get(run_id)
    who = started.payload if started is not None else {}
    exited = next((e for e in reversed(events) if e.event_type == "process.exited"), None)
    parent: int | None = remote
    parent_run = None if started is None else started.parent_run_id
    if parent_run is not None and parent_run in traces.started:
        pspan = who.get("parent_span_id")
        parent = span_id(trace, parent_run, pspan if isinstance(pspan, int) else 0)
    attributes: Attributes = {"runlog.run_id": run_id}
    if parent_run is not None:
        attributes["runlog.parent_run_id"] = parent_run
    extras = {k: v for k, v in who.items() if k not in _IDENTITY and k != "argv"}
    flatten(extras, attributes, "runlog.process.")
    argv = _attr(who.get("argv"))
    if argv is not None:
        attributes["process.command_args"] = argv
    error = None
    if exited is not None:
        info = exited.payload
        for key, name in (
            ("reason", "runlog.exit.reason"),
            ("exit_code", "process.exit.code"),
            ("signal", "runlog.exit.signal"),
            ("events_dropped", "runlog.events_dropped"),
        ):
            value = _attr(info.get(key))
            if value is not None:
                attributes[name] = value
        if info.get("reason") == "exception":
            attributes["error.type"] = str(info.get("error_type") or "exception")
            error = str(info.get("error") or info.get("error_type") or "exception")
        end = exited.timestamp
    else:
        attributes["runlog.run.state"] = state or "unknown"
        attributes["runlog.run.open"] = True
        if state == "lost":
            attributes["error.type"] = "lost"
            error = "the process ended without logging process.exited"
        end = max(e.timestamp for e in events) if events else 0
    start = started.timestamp if started is not None else min(e.timestamp for e in events)
    return SpanData(
        trace_id=trace,
        span_id=span_id(trace, run_id, 0),
        parent_id=parent,
        name=f"process {who.get('role') or 'unknown'}",
        kind="INTERNAL",
        start=start,
        end=max(start, end),
        run_id=run_id,
        attributes=attributes,
        error=error,
        final=exited is not None or state == "lost",  # another host's run may still log
    )


# -- LLM calls ---------------------------------------------------------------------------
def _tokens(payload: Mapping[str, Any], out: Attributes) -> None:
    source = payload.get("token_source")
    counted = payload.get("counted")
    for key in ("input_tokens", "output_tokens"):
        value = payload.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        estimated = source == "tiktoken" and (not isinstance(counted, list) or key in counted)
        if estimated:
            out[f"runlog.usage.estimated_{key}"] = value
        elif source in ("usage", "tiktoken"):
            out[f"gen_ai.usage.{key}"] = value


def _cost(payload: Mapping[str, Any], out: Attributes) -> None:
    """The call's cost where backends read it: ``gen_ai.usage.cost`` (Langfuse) and
    ``operation.cost`` (Logfire), in USD; a cost from estimated tokens stays runlog's."""
    usd = payload.get("cost_usd")
    if not isinstance(usd, int | float) or isinstance(usd, bool):
        return
    if payload.get("cost_estimated"):
        out["runlog.usage.estimated_cost"] = float(usd)
    else:
        out["gen_ai.usage.cost"] = out["operation.cost"] = float(usd)


def _llm_span(event: Event, trace: int, parent: int) -> SpanData:
    payload = event.payload
    operation = str(payload.get("operation") or "chat")
    model = str(payload.get("model_name") or "unknown")
    attributes: Attributes = {
        "gen_ai.operation.name": _OPERATIONS.get(operation, operation),
        "gen_ai.provider.name": str(payload.get("provider") or "openai"),
    }
    rest: dict[str, Any] = {}
    for key, value in payload.items():
        if key in _LLM_FIELDS:
            converted = _attr(value)
            if converted is not None:
                attributes[_LLM_FIELDS[key]] = converted
        elif key == "finish_reason" and value is not None:
            attributes["gen_ai.response.finish_reasons"] = [str(value)]
        elif key == "time_to_first_token_ms" and isinstance(value, int | float):
            attributes["gen_ai.response.time_to_first_chunk"] = value / 1000
        elif key == "error_type" and value is not None:
            attributes["error.type"] = str(value)
        elif key not in ("span_id", "parent_span_id", "input_tokens", "output_tokens"):
            rest[key] = value
    _tokens(payload, attributes)
    _cost(payload, attributes)
    flatten({f"runlog.{k}": v for k, v in rest.items() if k not in ("provider",)}, attributes)
    latency = payload.get("latency_ms")
    duration = int(latency * 1e6) if isinstance(latency, int | float) and latency > 0 else 0
    error = None
    if event.event_type == "llm_call.failed" or payload.get("status") == "error":
        error = str(payload.get("error") or payload.get("error_type") or "failed")
        attributes.setdefault("error.type", str(payload.get("error_type") or "error"))
    return SpanData(
        trace_id=trace,
        span_id=span_id(trace, event.run_id, payload["span_id"]),
        parent_id=parent,
        name=f"{attributes['gen_ai.operation.name']} {model}",
        kind="CLIENT",
        start=event.timestamp - duration,
        end=event.timestamp,
        run_id=event.run_id,
        attributes=attributes,
        error=error,
    )


# -- one run ---------------------------------------------------------------------------
def _is_span_event(payload: Mapping[str, Any]) -> bool:
    """Written by a runlog span (both ids present), as opposed to an event inside one."""
    sid = payload.get("span_id")
    return isinstance(sid, int) and not isinstance(sid, bool) and "parent_span_id" in payload


def run_spans(
    traces: Traces, run_id: int, events: list[Event], state: str | None
) -> list[SpanData]:
    """Every span of one run, from all of its events (in id order)."""
    process = _process_span(traces, run_id, events, state)
    trace = process.trace_id
    spans: dict[int, SpanData] = {}
    opened: dict[int, Event] = {}
    loose: list[tuple[int | None, Event]] = []

    def parent_of(payload: Mapping[str, Any]) -> int:
        pid = payload.get("parent_span_id")
        return span_id(trace, run_id, pid) if isinstance(pid, int) else process.span_id

    for event in events:
        payload = event.payload
        if event.event_type in _LIFECYCLE and event.run_id == run_id:
            continue
        if not _is_span_event(payload):
            sid = payload.get("span_id")
            loose.append((sid if isinstance(sid, int) else None, event))
            continue
        sid = payload["span_id"]
        if event.event_type in _LLM:
            spans[sid] = _llm_span(event, trace, parent_of(payload))
        elif event.event_type.endswith(".started") and "status" not in payload:
            opened[sid] = event
        else:
            begun = opened.pop(sid, None)
            spans[sid] = _span(event, begun, trace, parent_of(payload))
    for sid, begun in opened.items():  # never ended: up to the run's end, marked
        span = _span(begun, begun, trace, parent_of(begun.payload))
        span.end = max(span.start, process.end)
        span.attributes["runlog.span.open"] = True
        span.final = process.final
        spans[sid] = span
    for sid, event in loose:
        target = spans.get(sid) if sid is not None else None
        if target is None:
            target = process
        attributes = flatten({k: v for k, v in event.payload.items() if k != "span_id"}, {})
        target.events.append(SpanEvent(event.event_type, event.timestamp, attributes))
    return [process, *spans.values()]


def _span(end: Event, begun: Event | None, trace: int, parent: int) -> SpanData:
    """A runlog span (``begun`` is its ``.started`` event) or a ``@traced_event`` call."""
    payload = end.payload
    if begun is not None:
        name = begun.event_type[: -len(".started")]
        start = begun.timestamp
    else:
        name = end.event_type
        took = payload.get("elapsed_ms", payload.get("duration_ms"))
        start = end.timestamp - (int(took * 1e6) if isinstance(took, int | float) else 0)
    attributes = {} if begun is None else _span_fields(begun.payload, {})
    _span_fields(payload, attributes)
    return SpanData(
        trace_id=trace,
        span_id=span_id(trace, end.run_id, payload["span_id"]),
        parent_id=parent,
        name=name,
        kind="INTERNAL",
        start=start,
        end=max(start, end.timestamp),
        run_id=end.run_id,
        attributes=attributes,
        error=_error(payload),
    )


def build(
    traces: Traces, events: Iterable[Event], states: Mapping[int, str] | None = None
) -> list[SpanData]:
    """The spans of every run that has events in ``events`` (all of each run's events)."""
    by_run: dict[int, list[Event]] = {}
    for event in events:
        by_run.setdefault(event.run_id, []).append(event)
    out: list[SpanData] = []
    for run_id in sorted(by_run):
        out += run_spans(traces, run_id, by_run[run_id], (states or {}).get(run_id))
    return out


__all__ = ["Attributes", "SpanData", "SpanEvent", "Traces", "build", "flatten", "run_spans"]
