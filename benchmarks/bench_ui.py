"""How long ``runlog ui`` takes to render its pages on a table of a million events.

The table is generated the way a long-lived supervisor/worker system fills it: about
200 supervisor runs, each starting 5 workers; a worker logs 1,000 events (249 tasks of
a traced claim, a ``task`` span around an LLM call, and its own start and exit), one
worker in 50 crashes half-way, one in 100 is lost (no ``process.exited``).  The
database is made once with runlog's own schema (its migrations), then each page is
fetched through the ASGI app (``starlette.testclient``, in this process, no sockets)
20 times and the median wall time reported: the runs page, the run page of a worker
with 1,000 events, the LLM calls page, the events page.  Target: under 300 ms.

    .venv/bin/python benchmarks/bench_ui.py [--events 1000000] [--repeat 20] [--db PATH]

``--db PATH`` keeps the generated file (reused when it exists) for a look with
``runlog ui --db PATH``.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import positive, table

from runlog._store import open_store

WORKERS = 5
TASKS = 249  # 4 events each; with start, 2 notes and exit a worker logs exactly 1,000
TARGET_MS = 300.0
MODELS = ("gpt-4o-mini", "gpt-4o", "o3-mini")


class _Writer:
    """Rows with consecutive ids and a clock that moves forward (ns)."""

    def __init__(self, conn: sqlite3.Connection, start_ns: int) -> None:
        self.conn = conn
        self.next_id = 1
        self.clock = start_ns
        self.rows: list[tuple[int, int, int, int | None, str, str]] = []

    def add(
        self, run: int | None, parent: int | None, kind: str, payload: dict[str, object]
    ) -> int:
        row_id = self.next_id
        self.next_id += 1
        self.rows.append((row_id, self.clock, run or row_id, parent, kind, json.dumps(payload)))
        if len(self.rows) >= 50_000:
            self.flush()
        return row_id

    def tick(self, ms: float) -> None:
        self.clock += int(ms * 1e6)

    def flush(self) -> None:
        self.conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", self.rows)
        self.rows.clear()


def _worker(w: _Writer, sup: int, n: int, rng: random.Random, fate: str) -> None:
    run = w.add(None, sup, "process.started", _identity("worker", f"worker-{n}"))
    w.tick(5)
    w.add(run, sup, "worker.ready", {"instance_id": f"worker-{n}"})
    crash_at = TASKS // 2 if fate == "crash" else None
    span = 0
    for task in range(TASKS):
        claim_ms = rng.uniform(0.2, 3)
        w.tick(claim_ms)
        w.add(run, sup, "task.claimed", {"task_id": task, "duration_ms": claim_ms, "status": "ok"})
        span += 1
        w.add(run, sup, "task.started", {"span_id": span, "parent_span_id": None, "task_id": task})
        latency = rng.lognormvariate(6, 0.5)
        stream = task % 2 == 1
        w.tick(latency)
        call: dict[str, object] = {
            "model_name": MODELS[task % 3],
            "latency_ms": round(latency, 3),
            "input_tokens": rng.randint(30, 900),
            "output_tokens": rng.randint(10, 300),
            "token_source": "usage",
            "operation": "chat",
            "stream": stream,
            "finish_reason": "stop",
            "span_id": span + 1,
            "parent_span_id": span,
        }
        if stream:
            call["time_to_first_token_ms"] = round(latency * 0.3, 3)
        w.add(run, sup, "llm_call.completed", call)
        span += 1
        w.tick(1)
        if task == crash_at:
            error = {"error_type": "SimulatedCrash", "error": f"worker-{n} crashed"}
            w.add(run, sup, "task.failed", {"span_id": span - 1, "task_id": task, **error})
            w.add(run, sup, "process.exited", {"reason": "exception", "exit_code": 1, **error})
            return
        w.add(run, sup, "task.completed", {"span_id": span - 1, "task_id": task, "duration_ms": 1})
    w.add(run, sup, "worker.done", {"tasks": TASKS})
    if fate != "lost":
        w.add(run, sup, "process.exited", {"reason": "normal", "exit_code": 0})


def _identity(role: str, instance_id: str) -> dict[str, object]:
    # pid 0 and another host: a run without process.exited reads as "unknown", and the
    # page never asks the operating system about made-up processes.
    return {"role": role, "instance_id": instance_id, "pid": 0, "host": "bench-host"}


def fill(path: Path, total: int, seed: int = 7) -> None:
    """Write about ``total`` events into a new runlog database at ``path``."""
    store = open_store(str(path))
    store.create()  # runlog's schema, every migration applied
    store.close()
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    w = _Writer(conn, time.time_ns() - total * 1_000_000)
    workers = 0
    while w.next_id < total:
        sup = w.add(None, None, "process.started", _identity("supervisor", "sup-1"))
        w.add(sup, None, "batch.started", {"span_id": 1, "parent_span_id": None})
        for n in range(1, WORKERS + 1):
            workers += 1
            fate = "crash" if workers % 50 == 0 else "lost" if workers % 100 == 1 else "ok"
            w.add(sup, None, "worker.spawned", {"instance_id": f"worker-{n}", "seq": n})
            _worker(w, sup, n, rng, fate)
        w.add(sup, None, "revision.promoted", {"revision": sup})
        w.add(sup, None, "batch.completed", {"span_id": 1, "duration_ms": 1})
        w.add(sup, None, "process.exited", {"reason": "normal", "exit_code": 0})
        w.tick(60_000)
    w.flush()
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def _median_ms(client: object, url: str, repeat: int) -> tuple[float, int]:
    samples = []
    size = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        response = client.get(url)  # type: ignore[attr-defined]
        samples.append((time.perf_counter() - t0) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {response.status_code}")
        size = len(response.content)
    return statistics.median(samples), size


def main() -> int:
    """Generate (or reuse) the database, fetch each page ``--repeat`` times, print medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=positive, default=1_000_000)
    parser.add_argument("--repeat", type=positive, default=20)
    parser.add_argument("--db", type=Path, help="keep the generated database here")
    args = parser.parse_args()
    from starlette.testclient import TestClient

    from runlog._cli._db import open_reader
    from runlog._ui._app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "ui.db"
        if not path.exists():
            t0 = time.perf_counter()
            fill(path, args.events)
            print(f"generated {path} in {time.perf_counter() - t0:.1f} s")
        conn = sqlite3.connect(path)
        ((events,),) = conn.execute("SELECT COUNT(*) FROM events").fetchall()
        ((worker, supervisor),) = conn.execute(
            "SELECT run_id, parent_run_id FROM events WHERE event_type = 'worker.done'"
            " ORDER BY id DESC LIMIT 1"
        ).fetchall()
        conn.close()
        pages = {
            "runs page": "/",
            f"run page (worker #{worker}, 1,000 events)": f"/run/{worker}",
            f"run page (supervisor #{supervisor}, 5 workers)": f"/run/{supervisor}",
            "LLM calls page": "/llm",
            "events page": "/events",
            "events page, payload filter": "/events?field=task_id%3D7",
        }
        rows = []
        reader = open_reader(str(path), "--db")
        with TestClient(create_app(reader)) as client:
            for name, url in pages.items():
                client.get(url)  # warm: the first request opens the database
                ms, size = _median_ms(client, url, args.repeat)
                verdict = "PASS" if ms < TARGET_MS else "FAIL"
                rows.append([name, url, f"{ms:.1f}", f"{size / 1024:.0f}", verdict])
    print(f"runlog ui on {events:,} events (SQLite), median of {args.repeat}")
    print(table(["page", "url", "median ms", "KiB", f"< {TARGET_MS:.0f} ms"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
