"""``runlog stats``: per model, how the LLM calls went.

From ``llm_call.completed`` and ``llm_call.failed``, grouped by ``model_name``: calls
and failures; latency p50/p95/max and tokens over completed calls; time to first token
(p50) over completed streams; and where the token numbers came from (``usage``: the
provider's; ``tiktoken``: counted here, "partly" when one of the two was counted;
``unavailable``: none).  Percentiles are nearest-rank: always a latency that occurred.

Cost per model and in total: each completed call's current cost (``runlog reprice``
may have updated it, see :mod:`runlog._spend`), with the calls that could not be
priced counted apart, never as zero.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table
from rich.text import Text

from .. import _spend
from .._store import Event, Reader
from ._args import Command
from ._output import Output, duration
from ._runs import LLM_TYPES

_COLUMNS = (
    "model",
    "calls",
    "failed",
    "p50",
    "p95",
    "max",
    "TTFT p50 (streams)",
    "in",
    "out",
    "cost",
)


@dataclass
class ModelStats:
    """The calls of one model."""

    model: str
    calls: int = 0
    failures: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_max_ms: float | None = None
    streams: int = 0
    ttft_p50_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    token_sources: dict[str, int] = field(default_factory=dict)
    partly_counted: int = 0
    """Completed calls whose usage gave one number and tiktoken the other."""
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    """USD over the priced completed calls (None: none was priced)."""
    unpriced: int = 0
    """Completed calls without a cost."""
    cost_estimated: int = 0
    """Priced calls whose tokens were counted with tiktoken."""


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of ``values`` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _number(payload: dict[str, Any], key: str) -> float | None:
    value = payload.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def model_stats(events: list[Event]) -> list[ModelStats]:
    """One :class:`ModelStats` per model, by model name (``llm_call.repriced`` applied)."""
    current = {event.id: payload for event, payload in _spend.current(events)}
    by_model: dict[str, list[tuple[Event, dict[str, Any]]]] = {}
    for event in events:
        if event.event_type == _spend.REPRICED:
            continue
        payload = current.get(event.id, event.payload)
        by_model.setdefault(str(payload.get("model_name") or "?"), []).append((event, payload))
    return [_one(model, by_model[model]) for model in sorted(by_model)]


def total_cost(rows: list[ModelStats]) -> _spend.Cost:
    """The cost over every model."""
    cost = _spend.Cost()
    for row in rows:
        done = row.calls - row.failures
        cost += _spend.Cost(row.cost_usd or 0.0, done, row.unpriced, row.cost_estimated)
    return cost


def _one(model: str, events: list[tuple[Event, dict[str, Any]]]) -> ModelStats:
    done = [p for e, p in events if e.event_type == "llm_call.completed"]
    cost = _spend.Cost()
    for payload in done:
        cost.add(payload)
    latencies = [v for v in (_number(p, "latency_ms") for p in done) if v is not None]
    streams = [p for p in done if p.get("stream")]
    ttfts = [v for v in (_number(p, "time_to_first_token_ms") for p in streams) if v is not None]
    return ModelStats(
        model=model,
        calls=len(events),
        failures=len(events) - len(done),
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        latency_max_ms=max(latencies, default=None),
        streams=len(streams),
        ttft_p50_ms=percentile(ttfts, 50),
        input_tokens=int(sum(_number(p, "input_tokens") or 0 for p in done)),
        output_tokens=int(sum(_number(p, "output_tokens") or 0 for p in done)),
        token_sources=dict(Counter(str(p.get("token_source", "?")) for p in done)),
        partly_counted=sum(1 for p in done if p.get("counted")),
        cached_input_tokens=_sum(done, "cached_input_tokens"),
        cache_write_input_tokens=_sum(done, "cache_write_input_tokens"),
        reasoning_tokens=_sum(done, "reasoning_tokens"),
        cost_usd=cost.usd if cost.priced else None,
        unpriced=cost.unpriced,
        cost_estimated=cost.estimated,
    )


def _sum(payloads: list[dict[str, Any]], key: str) -> int:
    return int(sum(_number(p, key) or 0 for p in payloads))


def cost_text(usd: float | None, unpriced: int, estimated: int) -> str:
    """``$0.0123``, with ``(2 unpriced)`` / ``(1 estimated)`` when some calls are."""
    text = _spend.usd(usd)
    notes = [f"{unpriced} unpriced"] * bool(unpriced) + [f"{estimated} estimated"] * bool(estimated)
    return text + (f" ({', '.join(notes)})" if notes else "")


def _sources(stats: ModelStats) -> str:
    parts = [f"{name} {n}" for name, n in sorted(stats.token_sources.items())]
    if stats.partly_counted:
        parts.append(f"({stats.partly_counted} partly)")
    return " ".join(parts) or "-"


def _table(rows: list[ModelStats]) -> Table:
    table = Table(
        title="LLM calls per model (tokens and cost of completed calls)",
        header_style="bold",
        show_footer=len(rows) > 1,
    )
    for name in _COLUMNS:
        table.add_column(name, justify="left" if name == "model" else "right", no_wrap=True)
    table.add_column("token source")
    for s in rows:
        table.add_row(
            Text(s.model, style="bold"),
            str(s.calls),
            Text(str(s.failures), style="bold red" if s.failures else "dim"),
            duration(s.latency_p50_ms),
            duration(s.latency_p95_ms),
            duration(s.latency_max_ms),
            duration(s.ttft_p50_ms) + (f" ({s.streams})" if s.ttft_p50_ms is not None else ""),
            f"{s.input_tokens:,}",
            f"{s.output_tokens:,}",
            cost_text(s.cost_usd, s.unpriced, s.cost_estimated),
            _sources(s),
        )
    if len(rows) > 1:
        total = total_cost(rows)
        table.columns[0].footer = "total"
        table.columns[1].footer = str(sum(s.calls for s in rows))
        table.columns[-2].footer = cost_text(
            total.usd if total.priced else None, total.unpriced, total.estimated
        )
    return table


def _arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options beyond --db and --json


def _run(reader: Reader, args: argparse.Namespace, out: Output) -> int:
    rows = model_stats(reader.events(event_type=(*LLM_TYPES, _spend.REPRICED)))
    if out.json_mode:
        out.json([asdict(row) for row in rows])
    elif not rows:
        out.note(f"no LLM calls in {reader.store.url}")
    else:
        out.show(_table(rows))
    return 0


COMMAND = Command(
    name="stats",
    help="per model: calls, failures, latency p50/p95/max, time to first token, tokens, cost",
    description=(
        "Per model, from llm_call.completed and llm_call.failed: calls and failures; latency "
        "p50/p95/max and tokens over completed calls; time to first token (p50) over "
        "completed streams; the token source of the counts (usage: the provider's, "
        "tiktoken: counted, unavailable); and the cost per model and in total (as repriced "
        "by `runlog reprice`; unpriced calls counted apart). Percentiles are nearest-rank."
    ),
    arguments=_arguments,
    run=_run,
)

__all__ = ["COMMAND", "ModelStats", "cost_text", "model_stats", "percentile", "total_cost"]
