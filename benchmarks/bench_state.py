"""How long runlog.state's derived-state queries take on a table of a million events.

The table is filled the way a long-lived system fills it: supervisor runs that each
start workers, workers that log tasks, spans and LLM calls, and now and then a
``revision.promoted``.  Then, in one process, each query is timed through
``runlog.state`` (a read includes flushing the process's queue, empty here) and the
same SQL through raw ``sqlite3`` for comparison.  Target: each well under 1 ms.

    .venv/bin/python benchmarks/bench_state.py [--events 1000000] [--calls 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table

import runlog
from runlog import state
from runlog._store._sqlite import MIGRATIONS

WORKERS_PER_SUPERVISOR = 20


def fill(path: Path, total: int) -> tuple[int, int]:
    """Write ``total`` events; return (a supervisor run in the middle, its worker count)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    for statements in MIGRATIONS:
        for sql in statements:
            conn.execute(sql)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    rows: list[tuple[int, int, int, int | None, str, str]] = []
    next_id, ts, target_sup = 1, time.time_ns(), 0
    while next_id <= total:
        sup = next_id
        rows.append((sup, ts, sup, None, "process.started", '{"role":"supervisor"}'))
        next_id += 1
        for w in range(WORKERS_PER_SUPERVISOR):
            run = next_id
            started = json.dumps({"role": "worker", "instance_id": f"worker-{w + 1}"})
            rows.append((run, ts, run, sup, "process.started", started))
            next_id += 1
            for i in range(250):
                kind = ("task.claimed", "task.started", "task.completed", "llm_call.completed")[
                    i % 4
                ]
                rows.append((next_id, ts + i, run, sup, kind, f'{{"task_id":{i}}}'))
                next_id += 1
        rev = json.dumps({"revision": f"rev-{sup}"})
        rows.append((next_id, ts, sup, None, "revision.promoted", rev))
        next_id += 1
        if not target_sup and next_id > total // 2:
            target_sup = sup
        if len(rows) > 100_000:
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
            rows.clear()
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    return target_sup, WORKERS_PER_SUPERVISOR


def median_us(fn: Callable[[], object], calls: int) -> float:
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.db"
        t0 = time.perf_counter()
        sup, workers = fill(path, args.events)
        print(f"filled {path.name}: {args.events:,} events in {time.perf_counter() - t0:.1f} s")
        os.environ["RUNLOG_DB"] = str(path)
        runlog.init(role="bench")
        raw = sqlite3.connect(path)
        seq_sql = (
            "SELECT COUNT(*) FROM events WHERE event_type = 'process.started'"
            f" AND parent_run_id = {sup} AND json_extract(payload, '$.role') = 'worker'"
        )
        rev_sql = (
            "SELECT payload FROM events WHERE event_type = 'revision.promoted'"
            " ORDER BY id DESC LIMIT 1"
        )
        assert state.worker_instance_seq(sup) == workers
        assert state.current_good_rev() is not None
        cases = [
            ("worker_instance_seq(sup)", lambda: state.worker_instance_seq(sup), seq_sql),
            ("current_good_rev()", state.current_good_rev, rev_sql),
            (
                "count_events(type, run)",
                lambda: state.count_events("task.claimed", run_id=sup + 1),
                f"SELECT COUNT(*) FROM events WHERE event_type = 'task.claimed'"
                f" AND run_id = {sup + 1}",
            ),
            (
                "children(sup)",
                lambda: state.children(sup),
                "SELECT * FROM events WHERE event_type = 'process.started'"
                f" AND parent_run_id = {sup}",
            ),
        ]
        out = []
        for name, call, sql in cases:
            ours = median_us(call, args.calls)
            theirs = median_us(lambda sql=sql: raw.execute(sql).fetchall(), args.calls)
            verdict = "PASS" if ours < 1000 else "FAIL"
            out.append([name, f"{ours:.1f}", f"{theirs:.1f}", f"{ours / theirs:.2f}x", verdict])
        print(f"\nmedian of {args.calls} calls on {args.events:,} events (us per call):")
        print(table(["query", "runlog.state", "raw sqlite3", "ratio", "< 1 ms"], out))
        return 0 if all(row[-1] == "PASS" for row in out) else 1


if __name__ == "__main__":
    raise SystemExit(main())
