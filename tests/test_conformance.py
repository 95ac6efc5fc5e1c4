"""One suite, every backend: SQLite and PostgreSQL must behave the same.

Each test runs once per backend through the ``backend`` fixture, which gives the URL
runlog is configured with and a reader of the ``events`` table that uses the plain
driver (sqlite3 or psycopg), never runlog.  The PostgreSQL runs use a throwaway server
the suite starts itself (``pg_server.py``), with a fresh database per test; the tests
that stop that server in the middle of a run are at the end.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import runlog
from runlog._runs import get_runtime
from runlog._store import Reader

from pg_server import PgServer, fresh_database
from support import python, rows, spawn


class Backend:
    """A backend under test: its URL and a plain reader of its table."""

    name = ""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self) -> list[dict[str, Any]]:
        """Every row of ``events`` in id order, payloads decoded."""
        raise NotImplementedError

    def columns(self) -> list[tuple[str, str, bool, bool]]:
        """(name, integer|text, not null, primary key) per column, from the catalog."""
        raise NotImplementedError

    def indexes(self) -> list[tuple[str, ...]]:
        """The columns of every index of ``events`` except the primary key's."""
        raise NotImplementedError

    def schema_version(self) -> int:
        raise NotImplementedError

    def python(self, code: str, **extra: Any) -> subprocess.CompletedProcess[str]:
        """Run ``code`` in a child process with ``RUNLOG_DB`` naming this backend."""
        return python(code, None, RUNLOG_DB=self.url, **extra)

    def spawn(self, code: str, **extra: str) -> subprocess.Popen[str]:
        return spawn(code, None, RUNLOG_DB=self.url, **extra)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [r for r in self.rows() if r["event_type"] == event_type]


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path

    def rows(self) -> list[dict[str, Any]]:
        return rows(self.path)

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def columns(self) -> list[tuple[str, str, bool, bool]]:
        info = self._query("PRAGMA table_info(events)")
        return [(name, kind.lower(), bool(nn or pk), bool(pk)) for _, name, kind, nn, _, pk in info]

    def indexes(self) -> list[tuple[str, ...]]:
        names = self._query(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='events'"
        )
        return [tuple(r[2] for r in self._query(f"PRAGMA index_info({n!r})")) for (n,) in names]

    def schema_version(self) -> int:
        return int(self._query("PRAGMA user_version")[0][0])


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, url: str, server: PgServer) -> None:
        super().__init__(url)
        self.server = server

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url) as conn:
            return conn.execute(sql).fetchall()

    def rows(self) -> list[dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.url, row_factory=dict_row) as conn:
            out = conn.execute("SELECT * FROM events ORDER BY id").fetchall()
        for row in out:
            if isinstance(row["payload"], str):
                row["payload"] = json.loads(row["payload"])
        return out

    def columns(self) -> list[tuple[str, str, bool, bool]]:
        family = {"bigint": "integer", "text": "text"}
        found = self._query(
            """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                      a.attnum = ANY(COALESCE((SELECT conkey FROM pg_constraint
                          WHERE conrelid = a.attrelid AND contype = 'p'), '{}'))
               FROM pg_attribute a
               WHERE a.attrelid = 'events'::regclass AND a.attnum > 0 AND NOT a.attisdropped
               ORDER BY a.attnum"""
        )
        return [(name, family.get(kind, kind), nn, pk) for name, kind, nn, pk in found]

    def indexes(self) -> list[tuple[str, ...]]:
        found = self._query(
            """SELECT array_agg(a.attname::text ORDER BY a.attnum)
               FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
               WHERE i.indrelid = 'events'::regclass AND NOT i.indisprimary
               GROUP BY i.indexrelid"""
        )
        return [tuple(cols) for (cols,) in found]

    def schema_version(self) -> int:
        return int(self._query("SELECT schema_version FROM runlog_meta")[0][0])


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn, empty: a fresh SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield SQLiteBackend(tmp_path / "events.db")
        return
    server: PgServer = request.getfixturevalue("pg_server")
    with fresh_database(server) as url:
        yield PostgresBackend(url, server)


def expect_line(proc: subprocess.Popen[str], expected: str | None = None) -> str:
    """Read one line from a child; if ``expected`` is given it must be that line."""
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    if not line or (expected is not None and line != expected + "\n"):
        proc.kill()
        raise AssertionError(f"expected {expected!r}, got {line!r}; stderr: {proc.stderr.read()}")
    return line.rstrip("\n")


def say(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    """Wait for a child to exit cleanly; return its stderr."""
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return err


EXPECTED_COLUMNS = [
    ("id", "integer", True, True),
    ("timestamp", "integer", True, False),
    ("run_id", "integer", True, False),
    ("parent_run_id", "integer", False, False),
    ("event_type", "text", True, False),
    ("payload", "text", False, False),
]


class TestSchema:
    def test_columns(self, backend: Backend) -> None:
        """The table has the six columns of DESIGN.md with the same kinds and NOT NULLs."""
        runlog.init(db=backend.url)
        assert backend.columns() == EXPECTED_COLUMNS

    def test_indexes(self, backend: Backend) -> None:
        """timestamp and event_type; run_id and parent_run_id as the leftmost column of
        (run_id, event_type) for the run summaries and (parent_run_id, event_type) for
        state (one-column indexes on them would only cost writes)."""
        runlog.init(db=backend.url)
        found = backend.indexes()
        assert sorted(found) == [
            ("event_type",),
            ("parent_run_id", "event_type"),
            ("run_id", "event_type"),
            ("timestamp",),
        ]

    def test_schema_version_is_recorded(self, backend: Backend) -> None:
        """The number of migrations applied is recorded in the database."""
        runlog.init(db=backend.url)
        assert backend.schema_version() == 4

    def test_reopening_keeps_rows_and_schema(self, backend: Backend) -> None:
        """A second process opening an existing database keeps its rows."""
        backend.python("import runlog; runlog.init(role='a')")
        backend.python("import runlog; runlog.init(role='b')")
        kinds = [(r["event_type"], r["payload"].get("role")) for r in backend.rows()]
        assert kinds == [
            ("process.started", "a"),
            ("process.exited", None),
            ("process.started", "b"),
            ("process.exited", None),
        ]

    def test_many_processes_create_the_schema_at_once(self, backend: Backend) -> None:
        """Eight processes starting together on an empty database all start their run."""
        code = "import sys, runlog; sys.stdin.readline(); runlog.init(role='racer')"
        procs = [backend.spawn(code) for _ in range(8)]
        for proc in procs:
            say(proc, "go")
        for proc in procs:
            finish(proc)
        started = backend.of_type("process.started")
        assert len(started) == 8 and all(r["id"] == r["run_id"] for r in started)
        assert backend.schema_version() == 4


class TestRuns:
    def test_run_id_is_the_id_of_process_started(self, backend: Backend) -> None:
        """init() returns the generated id of its process.started row, which is its run_id."""
        run_id = runlog.init(role="supervisor", db=backend.url)
        (row,) = backend.rows()
        assert row["id"] == row["run_id"] == run_id == runlog.current_run_id()
        assert (row["parent_run_id"], row["event_type"]) == (None, "process.started")
        assert row["payload"]["role"] == "supervisor"

    def test_parent_run_id_reaches_children_and_grandchildren(self, backend: Backend) -> None:
        """Three generations of real processes form a chain through parent_run_id."""
        backend.python(
            """
            import subprocess, sys, runlog
            runlog.init(role="a")
            grandchild = "import runlog; runlog.init(role='c'); runlog.log_event('c.work')"
            child = ("import subprocess, sys, runlog; runlog.init(role='b'); "
                     f"subprocess.run([sys.executable, '-c', {grandchild!r}], check=True)")
            subprocess.run([sys.executable, "-c", child], check=True)
            """
        )
        runs = {r["payload"]["role"]: r for r in backend.of_type("process.started")}
        assert runs["a"]["parent_run_id"] is None
        assert runs["b"]["parent_run_id"] == runs["a"]["id"]
        assert runs["c"]["parent_run_id"] == runs["b"]["id"]
        (work,) = backend.of_type("c.work")
        assert (work["run_id"], work["parent_run_id"]) == (runs["c"]["id"], runs["b"]["id"])

    def test_explicit_run_form(self, backend: Backend) -> None:
        """log_event(run_id=, parent_run_id=) writes exactly the run given."""
        runlog.init(db=backend.url, sync=True)
        runlog.log_event("task.claimed", {"task_id": 7}, run_id=12, parent_run_id=3)
        last = backend.rows()[-1]
        assert (last["run_id"], last["parent_run_id"], last["payload"]) == (12, 3, {"task_id": 7})

    def test_forked_child_is_a_new_run(self, backend: Backend) -> None:
        """After os.fork() the child logs under a new run and the parent keeps logging."""
        backend.python(
            """
            import os, sys, runlog
            runlog.init(role="forker")
            runlog.log_event("before.fork")
            runlog.flush()
            pid = os.fork()
            if pid == 0:
                runlog.log_event("in.child")
                sys.exit(0)
            os.waitpid(pid, 0)
            runlog.log_event("after.fork")
            """
        )
        events = backend.rows()
        parent = events[0]
        (child_event,) = backend.of_type("in.child")
        assert child_event["run_id"] != parent["id"]
        assert child_event["parent_run_id"] == parent["id"]
        assert len(backend.of_type("before.fork")) == 1, "no event twice"
        (after,) = backend.of_type("after.fork")
        assert after["run_id"] == parent["id"]
        assert len(backend.of_type("process.exited")) == 2


PAYLOAD: dict[str, Any] = {
    "zeta": 1,
    "alpha": {"nested": [1, 2.5, None, True, False, "x"], "empty": {}},
    "unicode": "héllo wörld ✓ 日本",
    # NUL is stored as U+FFFD on both backends (test_payload); other controls stay exact.
    "control": 'tab\there\nnew line\\backslash "quoted" \x01 soh \x1b esc',
    "big": 2**63 - 1,
    "bigger": 2**70,
    "negative": -(2**63),
    "float": 0.1,
    "tiny": 5e-324,
    "huge": 1e300,
    "minus_zero": -0.0,
    "list": list(range(20)),
}


class TestPayload:
    def test_payload_round_trips_exactly(self, backend: Backend) -> None:
        """Payloads come back equal, in the same key order, through the raw reader and events()."""
        runlog.init(db=backend.url)
        runlog.log_event("payload.test", PAYLOAD)
        runlog.flush()
        (row,) = backend.of_type("payload.test")
        assert row["payload"] == PAYLOAD
        assert list(row["payload"]) == list(PAYLOAD)
        (event,) = Reader(get_runtime().store).events(event_type="payload.test")
        assert (event.id, event.run_id, event.payload) == (row["id"], row["run_id"], PAYLOAD)
        assert list(event.payload) == list(PAYLOAD)

    def test_events_reads_filter_the_same_way(self, backend: Backend) -> None:
        """events() filters by run, type, after_id and limit, in id order."""
        run_id = runlog.init(db=backend.url)
        for i in range(5):
            runlog.log_event("a" if i % 2 else "b", {"i": i})
        runlog.log_event("a", {"i": 99}, run_id=run_id + 1000)
        runlog.flush()
        store = get_runtime().store
        assert [e.payload["i"] for e in Reader(store).events(event_type="a")] == [1, 3, 99]
        mine = Reader(store).events(event_type="a", run_id=run_id)
        assert [e.payload["i"] for e in mine] == [1, 3]
        first = Reader(store).events(event_type="b", limit=1)
        assert [e.payload["i"] for e in first] == [0]
        after = Reader(store).events(after_id=first[0].id, event_type="b")
        assert [e.payload["i"] for e in after] == [2, 4]
        assert [e.id for e in Reader(store).events()] == [r["id"] for r in backend.rows()]

    def test_payload_filters_compare_as_text(self, backend: Backend) -> None:
        """A payload filter matches numbers, strings and booleans by their text, alike."""
        runlog.init(db=backend.url)
        for value in (7, "7", True, False, 7.5, None):
            runlog.log_event("v.logged", {"v": value})
        runlog.flush()
        reader = Reader(get_runtime().store)

        def found(text: str) -> list[object]:
            return [e.payload["v"] for e in reader.events(payload={"v": text})]

        assert found("7") == [7, "7"]
        assert (found("true"), found("false"), found("7.5")) == ([True], [False], [7.5])
        assert reader.count(event_type="v.logged", payload={"v": 7}) == 2


class TestWriting:
    def test_flush_makes_a_batch_visible_in_order(self, backend: Backend) -> None:
        """After flush() every event is in the table, ids increasing in logging order."""
        runlog.init(db=backend.url)
        for i in range(2500):
            runlog.log_event("e", {"i": i})
        assert runlog.flush(timeout=60)
        assert [r["payload"]["i"] for r in backend.of_type("e")] == list(range(2500))

    def test_sync_mode_commits_before_returning(self, backend: Backend) -> None:
        """With sync=True an event is in the table as soon as log_event returns."""
        runlog.init(db=backend.url, sync=True)
        runlog.log_event("one")
        assert backend.rows()[-1]["event_type"] == "one"
        runlog.log_event("two")
        assert backend.rows()[-1]["event_type"] == "two"

    def test_eight_processes_lose_nothing(self, backend: Backend) -> None:
        """8 processes logging 5,000 events each at once: all 40,000 arrive, none twice."""
        code = """
        import sys, runlog
        runlog.init(role="writer")
        sys.stdin.readline()  # start together
        for i in range(5000):
            runlog.log_event("load.event", {"i": i})
        """
        procs = [backend.spawn(code) for _ in range(8)]
        for proc in procs:
            say(proc, "go")
        for proc in procs:
            err = finish(proc, timeout=300)
            assert "locked" not in err and "dropped" not in err, err
        per_run: dict[int, list[int]] = {}
        for e in backend.of_type("load.event"):
            per_run.setdefault(e["run_id"], []).append(e["payload"]["i"])
        assert len(per_run) == 8
        assert all(sorted(v) == list(range(5000)) for v in per_run.values())
        exits = backend.of_type("process.exited")
        assert [e["payload"]["events_dropped"] for e in exits] == [0] * 8


class TestTracing:
    def test_span_and_traced_event(self, backend: Backend) -> None:
        """span() and @traced_event log their events under the run on every backend."""
        run_id = runlog.init(db=backend.url)

        @runlog.traced_event("task.claimed")
        def claim(task_id: int) -> int:
            return task_id

        with runlog.span("task", task_id=7):
            claim(7)
        runlog.flush()
        kinds = [r["event_type"] for r in backend.rows()[1:]]
        assert kinds == ["task.started", "task.claimed", "task.completed"]
        events = backend.rows()[1:]
        assert {e["run_id"] for e in events} == {run_id}
        assert events[0]["payload"]["span_id"] == events[2]["payload"]["span_id"]
        assert events[1]["payload"]["status"] == "ok"
        assert events[2]["payload"]["duration_ms"] >= 0

    def test_llm_call(self, backend: Backend) -> None:
        """llm_call logs its one event with token numbers on every backend."""
        runlog.init(db=backend.url)
        with runlog.llm_call("gpt-4o-mini") as call:
            call.record(input_tokens=3, output_tokens=5)
        runlog.flush()
        (event,) = [r for r in backend.rows() if r["event_type"] == "llm_call.completed"]
        assert (event["payload"]["input_tokens"], event["payload"]["token_source"]) == (3, "usage")


class TestState:
    def test_derived_state(self, backend: Backend) -> None:
        """worker_instance_seq and current_good_rev give the same answers on every backend."""
        sup = runlog.init(role="supervisor", db=backend.url)
        for seq in (1, 2):
            python(
                f"import runlog; runlog.init(role='worker', instance_id='worker-{seq}')",
                None,
                RUNLOG_DB=backend.url,
                PARENT_RUN_ID=str(sup),
            )
        python(
            "import runlog; runlog.init(role='monitor')",
            None,
            RUNLOG_DB=backend.url,
            PARENT_RUN_ID=str(sup),
        )
        assert runlog.state.worker_instance_seq() == 2
        assert runlog.state.current_good_rev() is None
        runlog.log_event("revision.promoted", {"revision": "r1"})
        runlog.log_event("revision.promoted", {"revision": "r2"})
        assert runlog.state.current_good_rev() == "r2"
        assert runlog.state.count_events("process.started", role="worker") == 2
        assert [c.payload["instance_id"] for c in runlog.state.children(role="worker")] == [
            "worker-1",
            "worker-2",
        ]


# -- PostgreSQL only: the server goes away ------------------------------------------


@pytest.fixture
def pg(pg_server: PgServer) -> Iterator[PostgresBackend]:
    """A fresh database on the shared server, for tests that stop and start it."""
    with fresh_database(pg_server) as url:
        yield PostgresBackend(url, pg_server)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``condition`` until true; fail (not hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class TestServerOutages:
    def test_restart_in_the_middle_of_a_run(self, pg: PostgresBackend) -> None:
        """A server restart while a process logs and writes: nothing lost, nothing twice.

        A thread logs while the server stops, and the main thread logs more while it is
        down.  Fewer events than ``queue_size`` are logged in all, so none may be shed
        however long the restart takes (an outage longer than the queue sheds, counted).
        """
        proc = pg.spawn(
            """
            import sys, threading, runlog
            runlog.init(role="writer", lock_timeout=120, queue_size=5000)
            stop = threading.Event()
            count = 0
            def produce():
                global count
                while not stop.is_set() and count < 3000:
                    runlog.log_event("load.event", {"i": count})
                    count += 1
            thread = threading.Thread(target=produce)
            thread.start()
            runlog.flush()
            print("writing", flush=True)
            sys.stdin.readline()  # the server is down now
            stop.set()
            thread.join()
            for i in range(count, count + 1000):
                runlog.log_event("load.event", {"i": i})
            print(count + 1000, flush=True)
            sys.stdin.readline()  # the server is back
            assert runlog.flush(timeout=120)
            """
        )
        expect_line(proc, "writing")
        pg.server.stop()  # fast shutdown: the child's session ends mid-stream
        say(proc, "down")
        count = int(expect_line(proc))
        pg.server.start()
        say(proc, "go")
        finish(proc)
        values = [r["payload"]["i"] for r in pg.of_type("load.event")]
        assert len(values) == count, "events lost or written twice"
        assert sorted(values) == list(range(count))
        (exited,) = pg.of_type("process.exited")
        assert exited["payload"]["events_dropped"] == 0

    def test_down_at_init_is_a_clear_error(self, pg: PostgresBackend) -> None:
        """init() with the server stopped raises an error naming the URL but not its password."""
        url = pg.url.replace("postgresql://postgres@", "postgresql://postgres:pw-s3cret@")
        with pg.server.down(), pytest.raises(runlog.StoreUnavailableError) as info:
            runlog.init(db=url, lock_timeout=0.3)
        message = str(info.value)
        assert url.replace("pw-s3cret", "***") in message
        assert "pw-s3cret" not in message
        assert "refused" in message.lower() or "shut" in message.lower()

    def test_down_mid_run_batched(self, pg: PostgresBackend) -> None:
        """Events logged while the server is down raise nothing and are written once it is back."""
        runlog.init(db=pg.url, lock_timeout=60)
        runlog.log_event("before")
        assert runlog.flush(timeout=30)
        with pg.server.down():
            for i in range(200):
                runlog.log_event("while.down", {"i": i})  # must not raise
        assert runlog.flush(timeout=60)
        values = [r["payload"]["i"] for r in pg.of_type("while.down")]
        assert values == list(range(200))
        assert get_runtime().persister.dropped == 0

    def test_down_mid_run_sync(self, pg: PostgresBackend) -> None:
        """In sync mode log_event waits for a server that comes back within lock_timeout."""
        proc = pg.spawn(
            """
            import sys, runlog
            runlog.init(sync=True, lock_timeout=60)
            print("ready", flush=True)
            sys.stdin.readline()
            print("logging", flush=True)
            runlog.log_event("while.down")
            print("logged", flush=True)
            """
        )
        expect_line(proc, "ready")
        with pg.server.down():
            say(proc, "go")
            expect_line(proc, "logging")
        expect_line(proc, "logged")
        err = finish(proc)
        assert "dropped" not in err, err
        assert [r["event_type"] for r in pg.rows()] == [
            "process.started",
            "while.down",
            "process.exited",
        ]

    def test_batched_writer_outlasts_an_outage_longer_than_lock_timeout(
        self, pg: PostgresBackend
    ) -> None:
        """The background writer keeps events through an outage longer than lock_timeout."""
        runlog.init(db=pg.url, lock_timeout=0.2)
        persister = get_runtime().persister
        with pg.server.down():
            for i in range(50):
                runlog.log_event("while.down", {"i": i})
            wait_until(lambda: persister.unreachable, "the writer to meet the outage")
            assert runlog.flush() is False, "flush gives up after lock_timeout while down"
        assert runlog.flush(timeout=60)
        values = [r["payload"]["i"] for r in pg.of_type("while.down")]
        assert values == list(range(50))
        assert persister.dropped == 0

    def test_queue_bound_while_unreachable_counts_drops(self, pg: PostgresBackend) -> None:
        """Past the queue's bound in an outage, new events are dropped and counted, not blocked."""
        runlog.init(db=pg.url, lock_timeout=0.2, queue_size=20)
        persister = get_runtime().persister
        with pg.server.down():
            runlog.log_event("first")
            wait_until(lambda: persister.unreachable, "the writer to meet the outage")
            for i in range(200):
                runlog.log_event("while.down", {"i": i})  # must neither raise nor block
            assert persister.dropped > 0
        assert runlog.flush(timeout=60) is False  # honest: some of those events were dropped
        assert runlog.flush(timeout=60)  # and none since
        kept = len(pg.of_type("while.down")) + len(pg.of_type("first"))
        assert kept + persister.dropped == 201

    def test_down_past_lock_timeout_drops_reports_once_and_resumes(
        self, pg: PostgresBackend, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Past lock_timeout events are counted as dropped, reported once, and writing resumes."""
        runlog.init(db=pg.url, sync=True, lock_timeout=0.2)
        with pg.server.down():
            runlog.log_event("lost.1")  # must not raise
            runlog.log_event("lost.2")
        runlog.log_event("kept")
        assert [r["event_type"] for r in pg.rows()] == ["process.started", "kept"]
        assert get_runtime().persister.dropped == 2
        warnings = [r.getMessage() for r in caplog.records if "could not write" in r.getMessage()]
        assert len(warnings) == 1, warnings
