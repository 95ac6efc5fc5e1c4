"""Time N events into PostgreSQL through runlog and through raw psycopg, SQLite alongside.

Contenders (each in a fresh child process per repetition, with a fresh database):

* runlog batched pg     - ``runlog.log_event`` with the background writer (each batch takes
                          its ids from the sequence, then one COPY in a transaction), timed
                          until ``runlog.flush()`` returns;
* psycopg executemany   - raw ``executemany(INSERT)`` + commit per batch, same thread;
* psycopg copy          - raw ``COPY`` per batch (autocommit: each its own transaction);
* runlog batched sqlite - the same runlog code on an SQLite file;
* sqlite3 executemany   - raw ``executemany`` + commit per batch;
* runlog sync pg        - ``init(sync=True)``: each event committed before ``log_event``
                          returns (two round trips: its id, then the INSERT);
* psycopg insert        - raw autocommit ``INSERT`` per event (one round trip);
* runlog sync sqlite / sqlite3 insert+commit - the same two on SQLite.

Raw contenders use runlog's schema (taken from runlog's migrations) and the same rows:
``time.time_ns()``, run_id, parent_run_id, event_type and ``json.dumps`` of the same
small dict.  Batches are 1,000 rows, runlog's default.  The server is the one ``--url``
names (its user must be allowed to CREATE DATABASE: one scratch database is made per
repetition and dropped), or else a throwaway local server started like the test
suite's (tests/pg_server.py: needs the PostgreSQL server binaries).

Run:  .venv/bin/python benchmarks/bench_postgres.py [--events N] [--repeat R] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import (
    EVENT,
    Summary,
    child_env,
    payload,
    rate,
    ratio,
    round_robin,
    run_json,
    table,
    time_runlog,
    us,
)

SCRIPT = Path(__file__).resolve()
BATCH = 1000
COLUMNS = "timestamp, run_id, parent_run_id, event_type, payload"
PG_INSERT = f"INSERT INTO events ({COLUMNS}) VALUES (%s, %s, %s, %s, %s)"
PG_COPY = f"COPY events ({COLUMNS}) FROM STDIN"
SQLITE_INSERT = f"INSERT INTO events ({COLUMNS}) VALUES (?, ?, ?, ?, ?)"

BATCHED = (
    "runlog batched pg",
    "psycopg executemany",
    "psycopg copy",
    "runlog batched sqlite",
    "sqlite3 executemany",
)
SYNC = ("runlog sync pg", "psycopg insert", "runlog sync sqlite", "sqlite3 insert+commit")
TARGETS = (  # (numerator, denominator, upper bound or None)
    ("runlog batched pg", "psycopg executemany", 1.2),
    ("runlog batched pg", "psycopg copy", 1.2),
    ("runlog batched sqlite", "sqlite3 executemany", None),
    ("runlog sync pg", "psycopg insert", None),
    ("runlog sync sqlite", "sqlite3 insert+commit", None),
)


def rows(n: int) -> Iterator[tuple[int, int, None, str, str]]:
    now, dumps = time.time_ns, json.dumps
    for i in range(n):
        yield (now(), 1, None, EVENT, dumps(payload(i)))


# -- databases ---------------------------------------------------------------------
def is_pg(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def create_schema(db: str) -> None:
    """runlog's table and indexes, for the raw contenders (so they cannot drift)."""
    if is_pg(db):
        import psycopg

        from runlog._store._postgres import MIGRATIONS

        with psycopg.connect(db, autocommit=True) as pg:
            for statement in (s for m in MIGRATIONS for s in m):
                pg.execute(statement)
        return
    from runlog._store._sqlite import MIGRATIONS as SQLITE_MIGRATIONS

    conn = sqlite_connect(db)
    for statement in (s for m in SQLITE_MIGRATIONS for s in m):
        conn.execute(statement)
    conn.commit()
    conn.close()


def sqlite_connect(db: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db, timeout=2.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def count(db: str) -> int:
    sql = f"SELECT count(*) FROM events WHERE event_type = '{EVENT}'"
    if is_pg(db):
        import psycopg

        with psycopg.connect(db) as pg:
            found = pg.execute(sql).fetchone()
            return int(found[0]) if found else 0
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


# -- workers: run in a child process, time themselves ----------------------------------
def _psycopg(db: str, n: int, write: Callable[[Any, list[Any]], None], size: int) -> dict[str, Any]:
    import psycopg

    create_schema(db)
    with psycopg.connect(db, autocommit=True) as conn:
        t0 = time.perf_counter_ns()
        batch: list[Any] = []
        for row in rows(n):
            batch.append(row)
            if len(batch) >= size:
                write(conn, batch)
                batch = []
        if batch:
            write(conn, batch)
        t1 = time.perf_counter_ns()
    return {"loop_ns": t1 - t0, "total_ns": t1 - t0}


def _pg_executemany(conn: Any, batch: list[Any]) -> None:
    with conn.transaction():
        conn.cursor().executemany(PG_INSERT, batch)


def _pg_copy(conn: Any, batch: list[Any]) -> None:
    with conn.cursor().copy(PG_COPY) as copy:  # autocommit: one COPY is one transaction
        for row in batch:
            copy.write_row(row)


def _pg_insert(conn: Any, batch: list[Any]) -> None:
    conn.execute(PG_INSERT, batch[0])


def _sqlite(db: str, n: int, size: int) -> dict[str, Any]:
    create_schema(db)
    conn = sqlite_connect(db)
    t0 = time.perf_counter_ns()
    batch: list[Any] = []
    for row in rows(n):
        batch.append(row)
        if len(batch) >= size:
            conn.executemany(SQLITE_INSERT, batch)
            conn.commit()
            batch = []
    if batch:
        conn.executemany(SQLITE_INSERT, batch)
        conn.commit()
    t1 = time.perf_counter_ns()
    conn.close()
    return {"loop_ns": t1 - t0, "total_ns": t1 - t0}


WORKERS: dict[str, Callable[[str, int], dict[str, Any]]] = {
    "runlog batched pg": lambda db, n: time_runlog(db, n, sync=False),
    "runlog batched sqlite": lambda db, n: time_runlog(db, n, sync=False),
    "runlog sync pg": lambda db, n: time_runlog(db, n, sync=True),
    "runlog sync sqlite": lambda db, n: time_runlog(db, n, sync=True),
    "psycopg executemany": lambda db, n: _psycopg(db, n, _pg_executemany, BATCH),
    "psycopg copy": lambda db, n: _psycopg(db, n, _pg_copy, BATCH),
    "psycopg insert": lambda db, n: _psycopg(db, n, _pg_insert, 1),
    "sqlite3 executemany": lambda db, n: _sqlite(db, n, BATCH),
    "sqlite3 insert+commit": lambda db, n: _sqlite(db, n, 1),
}


# -- parent ------------------------------------------------------------------------
class Databases:
    """Fresh databases per repetition: SQLite files in a temp dir, PostgreSQL on one server."""

    def __init__(self, admin_url: str, tmp: Path) -> None:
        self.admin_url = admin_url
        self.tmp = tmp
        self.count = 0

    @contextlib.contextmanager
    def fresh(self, name: str) -> Iterator[str]:
        self.count += 1
        if name.endswith("sqlite") or name.startswith("sqlite3"):
            path = self.tmp / f"bench-{self.count}.db"
            yield str(path)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            return
        import psycopg

        dbname = f"runlog_bench_{os.getpid()}_{self.count}"
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{dbname}"')
        try:
            head, _, tail = self.admin_url.partition("?")
            base = head.rsplit("/", 1)[0]
            yield f"{base}/{dbname}" + (f"?{tail}" if tail else "")
        finally:
            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def run(names: tuple[str, ...], dbs: Databases, n: int, repeat: int) -> dict[str, list[Any]]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for _, name in round_robin(list(names), repeat):
        with dbs.fresh(name) as db:
            cmd = [sys.executable, str(SCRIPT), "--worker", name, "--db", db, "--events", str(n)]
            sample = run_json(cmd, env=child_env())
            sample["persisted"] = count(db)
        results[name].append(sample)
        print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    return results


def report(title: str, results: dict[str, list[dict[str, Any]]], n: int) -> bool:
    """Print one table and its ratios; return False if an event was lost."""
    lines, complete = [], True
    for name, samples in results.items():
        total = Summary.of([s["total_ns"] / n for s in samples])
        loop = Summary.of([s["loop_ns"] / n for s in samples])
        kept = min(s["persisted"] for s in samples)
        complete &= kept == n
        spread = [us(total.median), us(total.low), us(total.high)]
        lines.append([name, *spread, rate(1e9 / total.median), us(loop.median), f"{kept:,}"])
    print(f"\n{title}: {n:,} events")
    headers = ["contender", "us/event", "min", "max", "events/s", "caller us/ev", "persisted"]
    print(table(headers, lines))
    for num, den, bound in TARGETS:
        if num in results and den in results:
            paired = [
                a["total_ns"] / b["total_ns"]
                for a, b in zip(results[num], results[den], strict=True)
            ]
            print(
                f"  {num + ' / ' + den:<45} {ratio(Summary.of(paired).median, bound)}"
                f"   [{min(paired):.2f}-{max(paired):.2f}]"
            )
    return complete


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    """The admin URL of the server to use: --url, or a throwaway local one."""
    if url:
        yield url
        return
    sys.path.insert(0, str(SCRIPT.parent.parent / "tests"))
    from pg_server import PgServer, why_unavailable

    reason = why_unavailable()
    if reason is not None:
        raise SystemExit(f"no --url given and no local server can be started: {reason}")
    local = PgServer.launch()
    try:
        yield local.url()
    finally:
        local.close()


def header(admin_url: str, n: int, n_sync: int, repeat: int) -> None:
    import psycopg

    import runlog
    from runlog._store import redact_url

    with psycopg.connect(admin_url) as conn:
        version = conn.info.server_version
    print(
        f"runlog {runlog.__version__}, psycopg {psycopg.__version__}, PostgreSQL "
        f"{version // 10000}.{version % 10000}, SQLite {sqlite3.sqlite_version}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print(f"server {redact_url(admin_url)}; {repeat} repetitions per contender, interleaved")
    print(f"batched: {n:,} events, sync: {n_sync:,} events; batches of {BATCH}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a PostgreSQL URL whose user may CREATE DATABASE")
    parser.add_argument("--events", type=int, help="events per batched contender (20000)")
    parser.add_argument("--sync-events", type=int, help="events per sync contender (2000)")
    parser.add_argument("--repeat", type=int, help="repetitions per contender (default 5)")
    parser.add_argument("--quick", action="store_true", help="tiny run: a smoke test")
    parser.add_argument("--only", help="comma-separated contenders to run (default: all)")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.db, args.events)), flush=True)
        return 0
    n = args.events or (500 if args.quick else 20_000)
    n_sync = args.sync_events or (100 if args.quick else 2_000)
    repeat = args.repeat or (1 if args.quick else 5)
    with server(args.url) as admin_url, tempfile.TemporaryDirectory() as tmp:
        header(admin_url, n, n_sync, repeat)
        dbs = Databases(admin_url, Path(tmp))
        only = set(args.only.split(",")) if args.only else set(WORKERS)
        complete = True
        for title, names, count_ in (("batched", BATCHED, n), ("sync", SYNC, n_sync)):
            chosen = tuple(name for name in names if name in only)
            if chosen:
                complete &= report(title, run(chosen, dbs, count_, repeat), count_)
    if not complete:
        print("\nEVENTS LOST: see the tables above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
