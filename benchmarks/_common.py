"""Small helpers shared by the benchmark scripts: child runs, medians, tables, ratios.

Benchmarks here run each contender in a fresh child process per repetition and
interleave the contenders (round-robin, rotating the order) so that noise from other
work on the machine falls on all of them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Summary:
    """Median, minimum and maximum of repeated measurements."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("no samples")
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))


def round_robin(names: Sequence[str], repeat: int) -> Iterator[tuple[int, str]]:
    """Yield ``(repetition, name)``: every name once per repetition, order rotated each time."""
    for rep in range(repeat):
        shift = rep % len(names) if names else 0
        for name in [*names[shift:], *names[:shift]]:
            yield rep, name


def run_json(
    cmd: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 600
) -> dict[str, Any]:
    """Run a child that prints one JSON object as its last stdout line; return it."""
    proc = subprocess.run(
        list(cmd),
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"benchmark child {' '.join(cmd[:4])} ... failed (exit {proc.returncode}):\n"
            f"{proc.stderr.strip()[-2000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def us(ns: float) -> str:
    """Nanoseconds as microseconds, for a table cell."""
    return f"{ns / 1000:.2f}"


def rate(per_second: float) -> str:
    """A rate with a thousands separator."""
    return f"{per_second:,.0f}"


def ratio(value: float, target: float | None = None) -> str:
    """``0.42x``, with ``PASS``/``FAIL`` against an upper bound when one is given."""
    text = f"{value:.2f}x"
    if target is None:
        return text
    verdict = "PASS" if value <= target else "FAIL"
    return f"{text}  {verdict} (target <= {target:.2f}x)"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


EVENT = "bench.event"


def payload(i: int) -> dict[str, Any]:
    """The small payload every events contender logs."""
    return {"task_id": i, "queue": "default", "attempt": 1, "ok": True}


def time_runlog(db: str, n: int, *, sync: bool) -> dict[str, Any]:
    """Log ``n`` events through runlog; time the loop and the loop plus the final flush."""
    import runlog

    runlog.init(db=db, sync=sync, role="bench")
    log = runlog.log_event
    t0 = time.perf_counter_ns()
    for i in range(n):
        log(EVENT, payload(i))
    t1 = time.perf_counter_ns()
    if not runlog.flush(timeout=600):
        raise RuntimeError("runlog.flush() timed out")
    t2 = time.perf_counter_ns()
    return {"loop_ns": t1 - t0, "total_ns": t2 - t0}


def child_env() -> dict[str, str]:
    """The environment for benchmark children: this one, without an inherited parent run."""
    env = dict(os.environ)
    env.pop("PARENT_RUN_ID", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def positive(text: str) -> int:
    """argparse type: an int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def discarding_tracer_provider() -> tuple[Any, Any]:
    """An OpenTelemetry SDK ``TracerProvider`` with a ``BatchSpanProcessor`` and an exporter
    that discards: OpenTelemetry's full cost of making and batching spans, none of
    persisting them.  Returns ``(provider, processor)``; ``processor.force_flush()`` is the
    counterpart of ``runlog.flush()``.
    """
    from collections.abc import Sequence as Spans

    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Discard(SpanExporter):
        def export(self, spans: Spans[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    processor = BatchSpanProcessor(Discard())
    provider.add_span_processor(processor)
    return provider, processor


__all__ = [
    "EVENT",
    "Summary",
    "child_env",
    "discarding_tracer_provider",
    "payload",
    "positive",
    "rate",
    "ratio",
    "round_robin",
    "run_json",
    "table",
    "time_runlog",
    "us",
]


SUMMARY_ENV = "RUNLOG_BENCH_SUMMARY"
"""A file to which each benchmark appends its headline rows (``make bench`` sets it;
``summary.py`` prints them as one table at the end)."""


def record(
    row: str,
    value: float,
    target: float | None,
    *,
    unit: str = "x",
    spread: tuple[float, float] | None = None,
) -> None:
    """Append one headline figure (a ratio, or a value in ``unit``) to the summary file."""
    path = os.environ.get(SUMMARY_ENV)
    if not path:
        return
    entry = {"row": row, "value": value, "target": target, "unit": unit, "spread": spread}
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")
