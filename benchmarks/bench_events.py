"""Time N events through runlog, raw sqlite3 and OpenTelemetry, side by side.

Contenders (each in a fresh child process per repetition, with a fresh database file):

* runlog batched        - ``runlog.log_event`` with the default background writer,
                          timed until ``runlog.flush()`` returns (every event in the table);
* runlog sync           - ``runlog.init(sync=True)``: each event committed before return;
* sqlite3 insert+commit - raw ``execute(INSERT)`` + ``commit()`` per event;
* sqlite3 executemany   - raw ``executemany`` + ``commit()`` per batch, same thread;
* otel span             - an OpenTelemetry SDK span per event, BatchSpanProcessor and an
                          exporter that discards, timed until ``force_flush()`` returns.

The raw contenders use runlog's schema and pragmas (WAL, synchronous=NORMAL, busy
timeout) and the same row: ``time.time_ns()``, run_id, parent_run_id, event_type and
``json.dumps`` of the same small dict.  Then N processes log into one file at once and
the table is checked for lost events (exit status 1 if any are missing).

Why child processes rather than ``runlog._runs.reset_for_tests()``: runlog keeps one run
per process (atexit and signal hooks, ``PARENT_RUN_ID`` in the environment, a writer
thread) and OpenTelemetry leaves its export thread behind; a fresh interpreter gives
every repetition of every contender the same start (no leftover threads competing for
the GIL, same heap and GC state) and uses only runlog's public API.  Only the logging
loop and the final flush are timed, not start-up or ``init()``.

Run:  .venv/bin/python benchmarks/bench_events.py [--events N] [--repeat R] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    EVENT,
    Summary,
    child_env,
    payload,
    positive,
    rate,
    ratio,
    record,
    round_robin,
    run_json,
    table,
    time_runlog,
    us,
)

SCRIPT = Path(__file__).resolve()
BATCH = 1000  # rows per executemany in the raw batch contender (runlog's default batch_size)
BUSY_TIMEOUT_S = 2.0  # the busy timeout runlog's SQLite store uses
INSERT = (
    "INSERT INTO events (timestamp, run_id, parent_run_id, event_type, payload)"
    " VALUES (?, ?, ?, ?, ?)"
)

CONTENDERS: dict[str, str] = {
    "runlog batched": "runlog.log_event(); background writer thread, executemany batches; "
    "timed to runlog.flush()",
    "runlog sync": "runlog.init(sync=True); log_event() commits before it returns",
    "sqlite3 insert+commit": "raw sqlite3: execute(INSERT) + commit() per event",
    "sqlite3 executemany": f"raw sqlite3: executemany(INSERT) + commit() per {BATCH} events",
    "otel span": "OpenTelemetry SDK span, payload as attributes; BatchSpanProcessor, "
    "exporter discards; timed to force_flush()",
}
RATIOS: tuple[tuple[str, str, float | None], ...] = (  # (numerator, denominator, bound)
    ("runlog batched", "otel span", 1.0),
    ("runlog sync", "sqlite3 insert+commit", 1.10),  # issue 11's targets
    ("runlog batched", "sqlite3 executemany", 1.10),
)


# -- database helpers ------------------------------------------------------------------
def raw_connect(db: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection with runlog's pragmas and busy timeout."""
    conn = sqlite3.connect(db, timeout=BUSY_TIMEOUT_S)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def create_schema(db: Path) -> None:
    """Create runlog's ``events`` table and indexes (taken from runlog, so they cannot drift)."""
    from runlog._store._sqlite import MIGRATIONS, SCHEMA_VERSION

    conn = raw_connect(db)
    try:
        for statements in MIGRATIONS:
            for sql in statements:
                conn.execute(sql)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.commit()
    finally:
        conn.close()


def count(db: Path, event_type: str) -> int:
    """Rows of ``event_type`` in the table, read with plain sqlite3."""
    conn = sqlite3.connect(db, timeout=BUSY_TIMEOUT_S)
    try:
        sql = "SELECT count(*) FROM events WHERE event_type = ?"
        return int(conn.execute(sql, (event_type,)).fetchone()[0])
    finally:
        conn.close()


# -- workers: run in a child process, time themselves ------------------------------------
def _runlog(db: Path, n: int, *, sync: bool) -> dict[str, Any]:
    return {**time_runlog(str(db), n, sync=sync), "persisted": count(db, EVENT)}


def work_runlog_batched(db: Path, n: int) -> dict[str, Any]:
    return _runlog(db, n, sync=False)


def work_runlog_sync(db: Path, n: int) -> dict[str, Any]:
    return _runlog(db, n, sync=True)


def work_sqlite_commit(db: Path, n: int) -> dict[str, Any]:
    create_schema(db)
    conn = raw_connect(db)
    execute, commit, now, dumps = conn.execute, conn.commit, time.time_ns, json.dumps
    t0 = time.perf_counter_ns()
    for i in range(n):
        execute(INSERT, (now(), 1, None, EVENT, dumps(payload(i))))
        commit()
    t1 = time.perf_counter_ns()
    conn.close()
    return {"loop_ns": t1 - t0, "total_ns": t1 - t0, "persisted": count(db, EVENT)}


def _executemany_loop(conn: sqlite3.Connection, n: int, run_id: int) -> None:
    now, dumps = time.time_ns, json.dumps
    batch: list[tuple[int, int, None, str, str]] = []
    for i in range(n):
        batch.append((now(), run_id, None, EVENT, dumps(payload(i))))
        if len(batch) >= BATCH:
            conn.executemany(INSERT, batch)
            conn.commit()
            batch = []
    if batch:
        conn.executemany(INSERT, batch)
        conn.commit()


def work_sqlite_executemany(db: Path, n: int) -> dict[str, Any]:
    create_schema(db)
    conn = raw_connect(db)
    t0 = time.perf_counter_ns()
    _executemany_loop(conn, n, 1)
    t1 = time.perf_counter_ns()
    conn.close()
    return {"loop_ns": t1 - t0, "total_ns": t1 - t0, "persisted": count(db, EVENT)}


def work_otel_span(db: Path, n: int) -> dict[str, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Discard(SpanExporter):
        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Any) -> SpanExportResult:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

    exporter = Discard()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    start = provider.get_tracer("bench").start_as_current_span
    t0 = time.perf_counter_ns()
    for i in range(n):
        with start(EVENT, attributes=payload(i)):
            pass
    t1 = time.perf_counter_ns()
    provider.force_flush()
    t2 = time.perf_counter_ns()
    return {"loop_ns": t1 - t0, "total_ns": t2 - t0, "persisted": None, "exported": exporter.spans}


def work_procs_runlog(db: Path, n: int) -> dict[str, Any]:
    import runlog

    runlog.init(db=str(db), role="bench-proc")
    log = runlog.log_event
    start_ns = _await_go()
    for i in range(n):
        log(EVENT, payload(i))
    runlog.flush(timeout=600)
    return {"start_ns": start_ns, "end_ns": time.time_ns()}


def work_procs_sqlite(db: Path, n: int) -> dict[str, Any]:
    conn = raw_connect(db)
    start_ns = _await_go()
    _executemany_loop(conn, n, os.getpid())
    end_ns = time.time_ns()
    conn.close()
    return {"start_ns": start_ns, "end_ns": end_ns}


def _await_go() -> int:
    """Tell the parent this child is ready, wait for its go line, return the start time."""
    print("ready", flush=True)
    sys.stdin.readline()
    return time.time_ns()


WORKERS: dict[str, Callable[[Path, int], dict[str, Any]]] = {
    "runlog batched": work_runlog_batched,
    "runlog sync": work_runlog_sync,
    "sqlite3 insert+commit": work_sqlite_commit,
    "sqlite3 executemany": work_sqlite_executemany,
    "otel span": work_otel_span,
    "procs runlog": work_procs_runlog,
    "procs sqlite3": work_procs_sqlite,
}


# -- parent ------------------------------------------------------------------------------
def worker_cmd(name: str, db: Path, n: int) -> list[str]:
    return [sys.executable, str(SCRIPT), "--worker", name, "--db", str(db), "--events", str(n)]


def run_procs(kind: str, db: Path, procs: int, n: int) -> dict[str, Any]:
    """Start ``procs`` writers, release them at once, wait, then count the table."""
    if kind == "procs sqlite3":
        create_schema(db)
    children = [
        subprocess.Popen(
            worker_cmd(kind, db, n),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for _ in range(procs)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{kind} child failed to start (exit {child.wait()})")
        go_ns = time.time_ns()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=600)[0] for child in children]
        exited_ns = time.time_ns()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    failed = [c.returncode for c in children if c.returncode != 0]
    ends = [json.loads(out.strip().splitlines()[-1])["end_ns"] for out in outputs if out.strip()]
    result = {
        "flushed_ns": max(ends, default=go_ns) - go_ns,
        "exited_ns": exited_ns - go_ns,
        "events": count(db, EVENT),
        "failed": len(failed),
    }
    if kind == "procs runlog":
        result["started"] = count(db, "process.started")
        result["exited"] = count(db, "process.exited")
    return result


def bench_contenders(tmp: Path, n: int, repeat: int) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    for rep, name in round_robin(list(CONTENDERS), repeat):
        db = tmp / f"{name.replace(' ', '_').replace('+', '_')}-{rep}.db"
        results[name].append(run_json(worker_cmd(name, db, n), env=child_env()))
        for suffix in ("", "-wal", "-shm"):  # keep the temp dir small
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    return results


def report_contenders(results: dict[str, list[dict[str, Any]]], n: int) -> bool:
    """Print the table and the target ratios; return False if an event was lost."""
    rows, complete = [], True
    for name, samples in results.items():
        total = Summary.of([s["total_ns"] / n for s in samples])
        loop = Summary.of([s["loop_ns"] / n for s in samples])
        persisted = [s["persisted"] for s in samples]
        if persisted[0] is None:
            kept = f"0 (exported {min(s.get('exported', 0) for s in samples):,})"
        else:
            kept = f"{min(persisted):,}"
            complete &= all(p == n for p in persisted)
        rows.append(
            [
                name,
                us(total.median),
                us(total.low),
                us(total.high),
                rate(1e9 / total.median),
                us(loop.median),
                kept,
            ]
        )
    headers = ["contender", "us/event", "min", "max", "events/s", "caller us/ev", "persisted"]
    for name, what in CONTENDERS.items():
        print(f"  {name:<22} {what}")
    print()
    print(table(headers, rows))
    print("\n(us/event: median wall time per event, final flush included; min/max over the")
    print(" repetitions; caller us/ev: the logging loop alone, before the final flush)")
    print("\nratios of us/event (median of the per-repetition ratios, [range]):")
    for num, den, bound in RATIOS:
        paired = [
            a["total_ns"] / b["total_ns"] for a, b in zip(results[num], results[den], strict=True)
        ]
        print(
            f"  {num + ' / ' + den:<45} {ratio(Summary.of(paired).median, bound)}"
            f"   [{min(paired):.2f}-{max(paired):.2f}]"
        )
        record(
            f"log_event: {num} / {den}",
            Summary.of(paired).median,
            bound,
            spread=(min(paired), max(paired)),
        )
    return complete


def bench_procs(tmp: Path, procs: int, n: int, repeat: int) -> bool:
    """The concurrent part; return False if runlog or raw sqlite3 lost an event."""
    kinds = ["procs runlog", "procs sqlite3"]
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for rep, kind in round_robin(kinds, repeat):
        results[kind].append(run_procs(kind, tmp / f"{kind.replace(' ', '_')}-{rep}.db", procs, n))
    total, rows, complete = procs * n, [], True
    for kind, samples in results.items():
        flushed = Summary.of([s["flushed_ns"] for s in samples])
        exited = Summary.of([s["exited_ns"] for s in samples])
        ok = all(s["events"] == total and not s["failed"] for s in samples)
        if kind == "procs runlog":
            ok &= all(s["started"] == procs and s["exited"] == procs for s in samples)
            extra = f" + {min(s['started'] for s in samples)} started"
            extra += f" + {min(s['exited'] for s in samples)} exited"
        else:
            extra = ""
        complete &= ok
        rows.append(
            [
                kind.replace("procs ", ""),
                f"{flushed.median / 1e6:.0f}",
                f"{exited.median / 1e6:.0f}",
                rate(total / (flushed.median / 1e9)),
                f"{min(s['events'] for s in samples):,}{extra}",
                "PASS" if ok else "FAIL (lost)",
            ]
        )
    headers = ["writer", "wall ms", "to exit ms", "events/s", "rows found", "nothing lost"]
    print(f"\n{procs} processes x {n:,} events into one file (median of {repeat}):")
    print(table(headers, rows))
    print("\n(wall: from releasing the ready processes until the last one has flushed;")
    print(
        " runlog: batched log_event; sqlite3: executemany + commit per "
        f"{BATCH} rows, busy timeout {BUSY_TIMEOUT_S:g}s)"
    )
    return complete


def header(n: int, repeat: int, tmp: Path) -> None:
    import runlog

    try:
        from opentelemetry.sdk.version import __version__ as otel
    except ImportError:
        otel = "missing"
    overrides = {k: v for k, v in os.environ.items() if k.startswith("RUNLOG_")}
    print(
        f"runlog {runlog.__version__}, opentelemetry-sdk {otel}, SQLite {sqlite3.sqlite_version},"
        f" Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print(f"{n:,} events x {repeat} repetitions per contender, interleaved; databases in {tmp}")
    if overrides:
        print(f"RUNLOG_* settings in effect: {overrides}")
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=positive, help="events per contender (default 20000)")
    parser.add_argument("--repeat", type=positive, help="repetitions per contender (default 5)")
    parser.add_argument("--procs", type=positive, default=8, help="concurrent writer processes")
    parser.add_argument("--proc-events", type=positive, help="events per process (default 5000)")
    parser.add_argument("--quick", action="store_true", help="tiny run: a smoke test")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.db is None or args.events is None:
            parser.error("--worker needs --db and --events")
        print(json.dumps(WORKERS[args.worker](args.db, args.events)), flush=True)
        return 0
    n = args.events or (300 if args.quick else 20_000)
    repeat = args.repeat or (1 if args.quick else 5)
    proc_events = args.proc_events or (200 if args.quick else 5_000)
    with tempfile.TemporaryDirectory(prefix="runlog-bench-") as tmp:
        header(n, repeat, Path(tmp))
        complete = report_contenders(bench_contenders(Path(tmp), n, repeat), n)
        complete &= bench_procs(Path(tmp), args.procs, proc_events, repeat)
    if not complete:
        print("\nEVENTS LOST: see the tables above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
