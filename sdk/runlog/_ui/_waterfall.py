"""The waterfall of a run: its process and every descendant's on one time axis.

Layout only — positions in SVG user units, classes and labels — so the template draws
it and the arithmetic can be tested without a browser.  One *block* per process (in
the tree's depth-first order): a process bar, then one lane per span depth.  What
becomes a bar:

* a timed event: one with a ``span_id`` and a ``duration_ms`` (a span's end, a
  ``@traced_event`` call) or a ``latency_ms`` (an LLM call), drawn from
  ``timestamp - duration`` to ``timestamp``, one lane below its ``parent_span_id``;
* a span that started and never ended (its process died in it): from its
  ``.started`` to the end of the process, marked unfinished;
* LLM calls in their own colour, with a tick at the time to first token.

Every other event is a tick on its process's bar.  Failures are red.  Bars link to
their event (the page opens its payload), process bars to their run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .._cli._output import duration, is_failure
from .._cli._runs import RunSummary
from .._store import Event

WIDTH = 1200.0
LABEL_W = 210.0
PLOT_W = WIDTH - LABEL_W - 16
ROW_H = 18.0
BAR_H = 13.0
AXIS_H = 26.0
MAX_DEPTH = 6
MAX_ITEMS = 4000
DECLUTTER_FROM = 1500
"""Bars and ticks drawn at most; the page says how many were left out."""


@dataclass
class Item:
    """One bar or tick."""

    x: float
    y: float
    w: float
    kind: str  # process, span, llm, traced, tick, unfinished
    failed: bool
    label: str
    title: str
    href: str
    ttft_x: float | None = None


@dataclass
class Block:
    """One process: its label and the rows it takes."""

    run: RunSummary
    depth: int
    y: float
    height: float


@dataclass
class Waterfall:
    """Everything the template needs to draw the SVG."""

    height: float
    blocks: list[Block] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    ticks: list[tuple[float, str]] = field(default_factory=list)
    left_out: int = 0
    width: float = WIDTH
    label_w: float = LABEL_W


def _number(payload: dict[str, Any], key: str) -> float | None:
    value = payload.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _run_end(run: RunSummary, events: list[Event]) -> int:
    last = events[-1].timestamp if events else run.started or 0
    if run.started is not None and run.duration_ms is not None:
        return max(last, run.started + int(run.duration_ms * 1e6))
    return last


class _Scale:
    def __init__(self, t0: int, t1: int) -> None:
        self.t0 = t0
        self.span = max(t1 - t0, 1)

    def x(self, t: float) -> float:
        return LABEL_W + max(0.0, min(1.0, (t - self.t0) / self.span)) * PLOT_W

    def w(self, ns: float) -> float:
        return max(1.5, ns / self.span * PLOT_W)


def build(runs: list[tuple[RunSummary, int]], events: dict[int, list[Event]]) -> Waterfall:
    """The waterfall of ``runs`` (summary, depth in the tree) given each run's events."""
    starts = [r.started for r, _ in runs if r.started is not None]
    starts += [e[0].timestamp for e in events.values() if e]
    if not starts:
        return Waterfall(height=AXIS_H)
    t0 = min(starts)
    t1 = max(_run_end(r, events.get(r.run_id, [])) for r, _ in runs)
    scale = _Scale(t0, t1)
    out = Waterfall(height=0.0)
    y = AXIS_H
    for run, depth in runs:
        lanes = _layout_run(run, events.get(run.run_id, []), scale, y, out)
        height = ROW_H * (1 + lanes)
        out.blocks.append(Block(run, depth, y, height))
        y += height + 6
    out.height = y
    out.ticks = _axis(t0, t1, scale)
    kept = _declutter(out.items)
    out.left_out = len(out.items) - len(kept)
    out.items = kept
    return out


def _declutter(items: list[Item]) -> list[Item]:
    """On a crowded waterfall (more than :data:`DECLUTTER_FROM` items), leave out a narrow
    bar or tick that would start under the one drawn before it in its lane (sub-pixel
    calls at this zoom); wide bars and failures always stay; at most :data:`MAX_ITEMS`."""
    if len(items) <= DECLUTTER_FROM:
        return items
    kept: list[Item] = []
    ends: dict[float, float] = {}  # lane (y) -> where its last kept bar ends
    for item in sorted(items, key=lambda i: (i.y, i.x)):
        wide = item.w > 3.0 or item.kind == "process"
        if wide or item.failed or item.x >= ends.get(item.y, -1.0):
            kept.append(item)
            ends[item.y] = max(ends.get(item.y, -1.0), item.x + min(item.w, 2.0))
    return kept[:MAX_ITEMS]


def _layout_run(
    run: RunSummary, events: list[Event], scale: _Scale, y: float, out: Waterfall
) -> int:
    """Add the run's process bar, bars and ticks; return the number of span lanes used."""
    start = run.started if run.started is not None else (events[0].timestamp if events else 0)
    end = _run_end(run, events)
    name = run.instance_id or run.role or "?"
    out.items.append(
        Item(
            x=scale.x(start),
            y=y,
            w=scale.w(end - start),
            kind="process",
            failed=run.exit_failed,
            label=f"#{run.run_id} {name}",
            title=f"run #{run.run_id} {name}: {run.status}, {duration(run.duration_ms)}",
            href=f"/run/{run.run_id}",
        )
    )
    depths: dict[Any, int] = {}
    ended = {
        e.payload.get("span_id")
        for e in events
        if _duration_ns(e) is not None and "span_id" in e.payload
    }
    lanes = 0
    for event in events:
        depth = _depth(event, depths)
        timed = _duration_ns(event)
        if timed is not None:
            lanes = max(lanes, depth)
            out.items.append(_bar(event, timed, depth, scale, y))
        elif _is_open_span(event, ended):
            lanes = max(lanes, depth)
            out.items.append(_open(event, end, depth, scale, y))
        elif not event.event_type.endswith(".started") or event.event_type == "process.started":
            out.items.append(_tick(event, scale, y))
    return lanes


def _depth(event: Event, depths: dict[Any, int]) -> int:
    """1 + the depth of the event's parent span (lanes below the process bar)."""
    span_id = event.payload.get("span_id")
    if span_id is None:
        return 0
    if span_id not in depths:
        parent = event.payload.get("parent_span_id")
        depths[span_id] = min(MAX_DEPTH, depths.get(parent, 0) + 1)
    return depths[span_id]


def _duration_ns(event: Event) -> float | None:
    if "span_id" not in event.payload or event.event_type.endswith(".started"):
        return None
    ms = _number(event.payload, "latency_ms")
    if ms is None:
        ms = _number(event.payload, "duration_ms")
    return None if ms is None else ms * 1e6


def _is_open_span(event: Event, ended: set[Any]) -> bool:
    if not event.event_type.endswith(".started") or event.event_type == "process.started":
        return False
    return event.payload.get("span_id") is not None and event.payload["span_id"] not in ended


def _bar(event: Event, ns: float, depth: int, scale: _Scale, y: float) -> Item:
    llm = event.event_type.startswith("llm_call.")
    name = str(event.payload.get("model_name")) if llm else _span_name(event.event_type)
    ttft = _number(event.payload, "time_to_first_token_ms") if llm else None
    words = f"{event.event_type}: {duration(ns / 1e6)}"
    if ttft is not None:
        words += f", first token {duration(ttft)}"
    item = Item(
        x=scale.x(event.timestamp - ns),
        y=y + depth * ROW_H,
        w=scale.w(ns),
        kind="llm" if llm else "span" if _is_span_end(event.event_type) else "traced",
        failed=is_failure(event),
        label=name,
        title=words,
        href=f"/event/{event.id}",
    )
    if ttft is not None:
        item.ttft_x = scale.x(event.timestamp - ns + ttft * 1e6)
    return item


def _is_span_end(event_type: str) -> bool:
    """A span's end is ``<name>.completed``/``.failed``; anything else timed is a traced call."""
    return event_type.endswith((".completed", ".failed"))


def _span_name(event_type: str) -> str:
    for end in (".completed", ".failed"):
        if event_type.endswith(end):
            return event_type[: -len(end)]
    return event_type


def _open(event: Event, end: int, depth: int, scale: _Scale, y: float) -> Item:
    name = _span_name(event.event_type.removesuffix(".started"))
    return Item(
        x=scale.x(event.timestamp),
        y=y + depth * ROW_H,
        w=scale.w(end - event.timestamp),
        kind="unfinished",
        failed=True,
        label=f"{name} (never ended)",
        title=f"{event.event_type} with no end: the process ended inside it",
        href=f"/event/{event.id}",
    )


def _tick(event: Event, scale: _Scale, y: float) -> Item:
    return Item(
        x=scale.x(event.timestamp),
        y=y,
        w=2.0,
        kind="tick",
        failed=is_failure(event),
        label="",
        title=event.event_type,
        href=f"/event/{event.id}",
    )


def _axis(t0: int, t1: int, scale: _Scale) -> list[tuple[float, str]]:
    """Gridlines at a round step: (x, label relative to the start, or the clock)."""
    span_s = max((t1 - t0) / 1e9, 1e-6)
    raw = span_s / 8
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    ticks = [(scale.x(t0), datetime.fromtimestamp(t0 / 1e9).strftime("%H:%M:%S"))]
    k = 1
    while k * step < span_s * 0.999:
        at = k * step
        text = f"+{at:g} s" if at < 120 else f"+{at / 60:g} min"
        ticks.append((scale.x(t0 + at * 1e9), text))
        k += 1
    return ticks


__all__ = ["Block", "Item", "Waterfall", "build"]
