"""The cost of ``@traced_event`` and ``span()`` against a bare call and OpenTelemetry.

Contenders (each in a fresh child process per repetition, taking turns round-robin):

* runlog traced_event - a function decorated with ``@runlog.traced_event``;
* runlog span         - an empty ``with runlog.span("bench"):`` block (two events);
* otel decorator      - a function decorated with ``@tracer.start_as_current_span``;
* otel span           - an empty ``with tracer.start_as_current_span("bench"):`` block.

runlog writes with its default background writer into a fresh SQLite file and is
timed until ``runlog.flush()`` returns, so every event is in the table.  OpenTelemetry
uses the SDK's ``TracerProvider`` and ``BatchSpanProcessor`` (queue large enough that
no span is dropped) with an exporter that discards, timed until ``force_flush()``
returns.  Each child first times the same number of bare calls of the same function;
the overhead of a contender is its time per call minus the bare time per call.  Target:
runlog's overhead (persisting included) no more than OpenTelemetry's (persisting
nothing).

A second table shows what thread propagation costs: ``Thread.start()+join()`` and
``ThreadPoolExecutor.submit().result()`` outside and inside a span, with runlog's
patches installed and not.

``--profile`` runs the ``traced_event`` loop once under cProfile and prints where the
time goes.

Run:  .venv/bin/python benchmarks/bench_tracing.py [--calls N] [--repeat R] [--quick]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import Summary, child_env, ratio, record, round_robin, run_json, table, us

SCRIPT = Path(__file__).resolve()
WARM_UP = 500

CONTENDERS: dict[str, str] = {
    "runlog traced_event": "@runlog.traced_event on a no-op function; timed to runlog.flush()",
    "runlog span": "empty `with runlog.span(...)` (started + completed events)",
    "otel decorator": "@tracer.start_as_current_span on a no-op function; to force_flush()",
    "otel span": "empty `with tracer.start_as_current_span(...)`; to force_flush()",
}
RATIOS = (  # (numerator, denominator, bound) on overhead per call: issue 11's targets
    ("runlog traced_event", "otel decorator", 0.5),
    ("runlog span", "otel span", 0.5),
)


def noop() -> None:
    """The function every contender calls."""


def timed(loop: Callable[[int], None], n: int, flush: Callable[[], object]) -> int:
    """Nanoseconds for ``loop(n)`` and the flush after it."""
    loop(WARM_UP)
    flush()
    gc.collect()
    t0 = time.perf_counter_ns()
    loop(n)
    flush()
    return time.perf_counter_ns() - t0


def call_loop(func: Callable[[], None]) -> Callable[[int], None]:
    def loop(n: int) -> None:
        for _ in range(n):
            func()

    return loop


def with_loop(make: Callable[[], Any]) -> Callable[[int], None]:
    def loop(n: int) -> None:
        for _ in range(n):
            with make():
                pass

    return loop


def count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        sql = "SELECT count(*) FROM events WHERE event_type LIKE 'bench%'"
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


# -- workers (child processes) -------------------------------------------------------
def _runlog_loop(name: str) -> Callable[[int], None]:
    from runlog._tracing import span, traced_event

    if name == "runlog traced_event":
        return call_loop(traced_event("bench.call")(noop))
    return with_loop(lambda: span("bench"))


def work_runlog(name: str, db: Path, n: int) -> dict[str, Any]:
    import runlog

    runlog.init(db=str(db), role="bench")
    bare = timed(call_loop(noop), n, lambda: None)
    total = timed(_runlog_loop(name), n, runlog.flush)
    per_call = 1 if name == "runlog traced_event" else 2
    return {
        "bare_ns": bare,
        "total_ns": total,
        "persisted": count(db),
        "expected": per_call * (n + WARM_UP),
    }


def _otel_tracer() -> tuple[Any, Callable[[], object], Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Any) -> SpanExportResult:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

    exporter = Discard()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 22))
    return provider.get_tracer("bench"), provider.force_flush, exporter


def work_otel(name: str, db: Path, n: int) -> dict[str, Any]:
    tracer, flush, exporter = _otel_tracer()
    if name == "otel decorator":
        loop = call_loop(tracer.start_as_current_span("bench.call")(noop))
    else:
        loop = with_loop(lambda: tracer.start_as_current_span("bench"))
    bare = timed(call_loop(noop), n, lambda: None)
    total = timed(loop, n, flush)
    return {
        "bare_ns": bare,
        "total_ns": total,
        "persisted": exporter.spans,
        "expected": n + WARM_UP,
    }


def work_threads(name: str, db: Path, n: int) -> dict[str, Any]:
    """Thread start/join and pool submit/result, outside and inside a span, patches off
    and on in alternating rounds in this one process; per-operation medians."""
    import runlog
    from runlog import _context
    from runlog._tracing import span

    runlog.init(db=str(db), role="bench")
    with span("bench.warm"):  # applies the runtime's setting, as in real use
        pass
    samples: dict[str, list[int]] = {}
    with ThreadPoolExecutor(1) as pool:
        submit = lambda: pool.submit(noop).result()  # noqa: E731
        for _ in range(10):
            for mode in ("off", "on"):
                _context.install() if mode == "on" else _context.uninstall()
                for where in ("outside", "inside"):
                    with span("bench.threads") if where == "inside" else _Nothing():
                        _time_each(samples, f"thread {where} {mode}", _thread_once, n // 10)
                        _time_each(samples, f"submit {where} {mode}", submit, n)
    return {key: statistics.median(values) for key, values in samples.items()}


class _Nothing:
    def __enter__(self) -> None: ...

    def __exit__(self, *exc: object) -> None: ...


def _thread_once() -> None:
    thread = threading.Thread(target=noop)
    thread.start()
    thread.join()


def _time_each(samples: dict[str, list[int]], key: str, func: Callable[[], object], n: int) -> None:
    """Time ``n`` single calls (a median per call resists the outliers of thread start)."""
    out = samples.setdefault(key, [])
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        func()
        out.append(clock() - t0)


WORKERS: dict[str, Callable[[str, Path, int], dict[str, Any]]] = {
    "runlog traced_event": work_runlog,
    "runlog span": work_runlog,
    "otel decorator": work_otel,
    "otel span": work_otel,
    "threads": work_threads,
}


# -- parent --------------------------------------------------------------------------
def worker_cmd(name: str, db: Path, n: int) -> list[str]:
    return [sys.executable, str(SCRIPT), "--worker", name, "--db", str(db), "--calls", str(n)]


def collect(names: list[str], tmp: Path, n: int, repeat: int) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for rep, name in round_robin(names, repeat):
        db = tmp / f"{name.replace(' ', '_')}-{rep}.db"
        results[name].append(run_json(worker_cmd(name, db, n), env=child_env()))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    return results


def overhead(sample: dict[str, Any], n: int) -> float:
    return (sample["total_ns"] - sample["bare_ns"]) / n


def report_calls(results: dict[str, list[dict[str, Any]]], n: int) -> bool:
    rows, complete = [], True
    for name, samples in results.items():
        total = Summary.of([s["total_ns"] / n for s in samples])
        bare = Summary.of([s["bare_ns"] / n for s in samples])
        extra = Summary.of([overhead(s, n) for s in samples])
        kept = min(s["persisted"] for s in samples)
        complete &= all(s["persisted"] == s["expected"] for s in samples)
        verb = "persisted" if name.startswith("runlog") else "exported"
        rows.append(
            [
                name,
                us(total.median),
                us(bare.median),
                us(extra.median),
                us(extra.low),
                us(extra.high),
                f"{kept:,} {verb}",
            ]
        )
    for name, what in CONTENDERS.items():
        print(f"  {name:<20} {what}")
    print()
    print(table(["contender", "us/call", "bare", "overhead", "min", "max", "kept"], rows))
    print("\n(medians over repetitions; overhead = us/call - bare us/call, flush included)")
    print("\nratios of overhead per call (median of per-repetition ratios, [range]):")
    for num, den, bound in RATIOS:
        paired = [
            overhead(a, n) / overhead(b, n) for a, b in zip(results[num], results[den], strict=True)
        ]
        spread = f"[{min(paired):.2f}-{max(paired):.2f}]"
        print(f"  {num + ' / ' + den:<40} {ratio(Summary.of(paired).median, bound)}   {spread}")
        record(
            f"{num} / {den} (persisted to SQLite / exported nowhere)",
            Summary.of(paired).median,
            bound,
            spread=(min(paired), max(paired)),
        )
    return complete


def report_threads(results: list[dict[str, Any]]) -> None:
    rows = []
    for key in ["thread outside", "thread inside", "submit outside", "submit inside"]:
        off = Summary.of([s[f"{key} off"] for s in results])
        on = Summary.of([s[f"{key} on"] for s in results])
        rows.append([key, us(off.median), us(on.median), f"{(on.median - off.median) / 1000:+.2f}"])
    print("\nthread propagation (us per Thread.start()+join() / pool.submit().result(),")
    print("median per call, patches off and on alternating in the same processes):")
    print(table(["operation", "patches off", "patches on", "difference"], rows))


def profile(n: int) -> None:
    """Where the time of a traced call goes (caller side, then the flush)."""
    import runlog

    with tempfile.TemporaryDirectory() as tmp:
        runlog.init(db=str(Path(tmp) / "profile.db"), role="bench")
        loop = _runlog_loop("runlog traced_event")
        loop(WARM_UP)
        runlog.flush()
        profiler = cProfile.Profile()
        profiler.enable()
        loop(n)
        runlog.flush()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per contender")
    parser.add_argument("--repeat", type=int, default=7, help="repetitions")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    parser.add_argument("--profile", action="store_true", help="cProfile the traced_event loop")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.worker, args.db, args.calls)))
        return 0
    if args.profile:
        profile(args.calls)
        return 0
    n, repeat = (1_000, 2) if args.quick else (args.calls, args.repeat)
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs; ", end="")
    print(f"{n:,} calls x {repeat} repetitions\n")
    with tempfile.TemporaryDirectory() as tmp:
        complete = report_calls(collect(list(CONTENDERS), Path(tmp), n, repeat), n)
        threads = collect(["threads"], Path(tmp), max(n // 20, 20), repeat)["threads"]
    report_threads(threads)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
