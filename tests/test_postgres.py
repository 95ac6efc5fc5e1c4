"""The PostgreSQL backend itself: URLs, the driver extra, errors, adoption, exactly-once writes.

What every backend must do alike is in ``test_conformance.py``; this file covers what
only the PostgreSQL store has to get right, against the suite's throwaway server.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import runlog
from runlog._runs import get_runtime
from runlog._store import Reader, Row, StoreFault, open_store, redact_url

from pg_server import PgServer
from support import python, spawn

psycopg = pytest.importorskip("psycopg")
_postgres = pytest.importorskip("runlog._store._postgres")
PostgresStore = _postgres.PostgresStore
StoreUnreachable = _postgres.StoreUnreachable


@pytest.fixture
def store(pg_url: str) -> Iterator[Any]:
    """A PostgreSQL store on a fresh database, connected and with its schema."""
    opened = PostgresStore(pg_url)
    opened.create()
    yield opened
    opened.close()


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run ``sql`` with plain psycopg (not runlog)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def batch(n: int, tag: str = "e") -> list[Row]:
    return [(time.time_ns(), 1, None, tag, json.dumps({"i": i})) for i in range(n)]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port that is bound but not listening: connecting is refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


class TestUrls:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgresql://u:p%40ss@h1:1,h2:2/db?ssl=1", "postgresql://u:***@h1:1,h2:2/db?ssl=1"),
            ("postgresql://u:pa@ss@h/db", "postgresql://u:***@h/db"),
            (
                "postgresql:///db?host=/tmp&password=pw&x=1",
                "postgresql:///db?host=/tmp&password=***&x=1",
            ),
            ("postgresql://h/db?PASSWORD=secret", "postgresql://h/db?PASSWORD=***"),
        ],
    )
    def test_password_is_redacted(self, url: str, shown: str) -> None:
        """Messages show the URL with its password replaced by ***."""
        assert redact_url(url) == shown

    @pytest.mark.parametrize("scheme", ["postgresql", "postgres", "PostgreSQL"])
    def test_both_schemes_select_postgres(self, scheme: str) -> None:
        """postgresql:// and postgres:// select the PostgreSQL store; nothing connects yet."""
        store = open_store(f"{scheme}://user:secret@127.0.0.1:1/db")
        assert isinstance(store, PostgresStore)
        assert store.url == f"{scheme.lower()}://user:***@127.0.0.1:1/db"

    def test_invalid_url_is_a_configuration_error(self) -> None:
        """A URL libpq cannot parse is refused at init() with a message that hides the password."""
        with pytest.raises(runlog.ConfigurationError, match="bogus") as info:
            runlog.init(db="postgresql://u:secret@h/db?bogus=1")
        assert "secret" not in str(info.value)

    def test_import_runlog_does_not_import_the_driver(self, tmp_path: Any) -> None:
        """import runlog, and logging to SQLite, never import psycopg."""
        out = python(
            f"""
            import sys, runlog
            runlog.init(db={str(tmp_path / "e.db")!r})
            runlog.log_event("x")
            print("psycopg" in sys.modules)
            """
        )
        assert out.stdout == "False\n"

    def test_missing_driver_names_the_extra(self) -> None:
        """Without psycopg, asking for PostgreSQL is an error naming the runlog[postgres] extra."""
        out = python(
            """
            import sys
            sys.modules["psycopg"] = None  # as if the extra were not installed
            import runlog
            try:
                runlog.init(db="postgresql://u:secret@127.0.0.1:1/db")
            except runlog.ConfigurationError as exc:
                print(exc)
            """
        )
        assert "pip install 'runlog[postgres]'" in out.stdout
        assert "postgresql://u:***@127.0.0.1:1/db" in out.stdout
        assert "secret" not in out.stdout


class TestConnecting:
    def test_refused_connection_is_transient(self, closed_port: int) -> None:
        """A server that refuses connections is StoreUnreachable (a StoreBusy: retried)."""
        store = PostgresStore(f"postgresql://u:secret@127.0.0.1:{closed_port}/db")
        with pytest.raises(StoreUnreachable, match="refused") as info:
            store.create()
        assert "secret" not in str(info.value)

    @pytest.mark.parametrize("part", ["database", "role"])
    def test_unknown_database_or_role_is_a_fault(self, pg_server: PgServer, part: str) -> None:
        """A missing database or role is a StoreFault: waiting will not fix it."""
        url = pg_server.url("nope")
        if part == "role":
            url = url.replace("postgres@", "nobody_here@")
        with pytest.raises(StoreFault, match="does not exist"):
            PostgresStore(url).create()

    def test_init_with_unknown_database_fails_at_once(self, pg_server: PgServer) -> None:
        """init() reports a missing database without waiting out lock_timeout."""
        with pytest.raises(runlog.StoreUnavailableError, match="does not exist"):
            runlog.init(db=pg_server.url("nope"), lock_timeout=600)

    def test_default_connection_settings(self, store: Any) -> None:
        """runlog names itself, bounds connection attempts and notices a dead peer."""
        settings = store._conn.info.get_parameters()
        assert settings["application_name"] == "runlog"
        assert settings["connect_timeout"] == "10"
        assert settings["keepalives_idle"] == "30"

    def test_url_settings_win_over_defaults(self, pg_server: PgServer, pg_url: str) -> None:
        """Settings written in the URL are kept, not replaced by runlog's defaults."""
        store = PostgresStore(pg_url + "?application_name=mine")
        store.create()
        assert store._conn.info.get_parameters()["application_name"] == "mine"
        store.close()


class TestSchema:
    def test_id_is_generated_always_as_identity(self, store: Any, pg_url: str) -> None:
        """id is BIGINT GENERATED ALWAYS AS IDENTITY, and payload is TEXT."""
        rows = query(
            pg_url,
            "SELECT attname, attidentity, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'events'::regclass AND attname IN ('id', 'payload') ORDER BY attnum",
        )
        assert rows == [("id", "a", "bigint"), ("payload", "", "text")]

    def test_threads_racing_to_create_the_schema(self, pg_url: str) -> None:
        """Sixteen stores creating the schema at the same moment all succeed (advisory lock)."""
        stores = [PostgresStore(pg_url) for _ in range(16)]
        barrier = threading.Barrier(len(stores))
        errors: list[BaseException] = []

        def create(store: Any) -> None:
            barrier.wait()
            try:
                store.create()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=create, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in stores:
            s.close()
        assert errors == []
        assert query(pg_url, "SELECT * FROM runlog_meta") == [(1, _postgres.SCHEMA_VERSION)]

    def test_newer_schema_version_is_left_alone(self, store: Any, pg_url: str) -> None:
        """A database migrated by a later release is used as it is, not downgraded."""
        query(pg_url, "UPDATE runlog_meta SET schema_version = 99")
        store.close()
        runlog.init(db=pg_url, sync=True)
        runlog.log_event("x")
        assert query(pg_url, "SELECT schema_version FROM runlog_meta") == [(99,)]

    def test_dropped_table_is_created_again(self, store: Any, pg_url: str) -> None:
        """Dropping the events table to start afresh works: the next start creates it again."""
        store.close()
        query(pg_url, "DROP TABLE events")
        runlog.init(db=pg_url, sync=True)
        types = [t for (t,) in query(pg_url, "SELECT event_type FROM events ORDER BY id")]
        assert types == ["process.started"]

    def test_table_dropped_under_a_running_process(self, pg_url: str) -> None:
        """A running process whose table is dropped loses that write, then recreates the table."""
        runlog.init(db=pg_url, sync=True)
        query(pg_url, "DROP TABLE events")
        runlog.log_event("lost")  # must not raise
        runlog.log_event("kept")
        types = [t for (t,) in query(pg_url, "SELECT event_type FROM events ORDER BY id")]
        assert types == ["kept"]
        assert get_runtime().persister.dropped == 1

    def test_table_made_by_hand_is_adopted(self, pg_url: str) -> None:
        """An events table that exists without runlog_meta keeps its rows and gets a version."""
        query(pg_url, _postgres.MIGRATIONS[0][0])
        query(pg_url, "INSERT INTO events (timestamp, run_id, event_type) VALUES (1, 1, 'old')")
        runlog.init(db=pg_url, sync=True)
        types = [t for (t,) in query(pg_url, "SELECT event_type FROM events ORDER BY id")]
        assert types == ["old", "process.started"]
        assert query(pg_url, "SELECT schema_version FROM runlog_meta") == [(4,)]


ADOPTER = """
import json, os, sys, time
from runlog._store import open_store
store = open_store(os.environ["RUNLOG_DB"])
store.create()
sys.stdin.readline()
if "{kind}" == "runs":
    ids = [store.start_run(time.time_ns(), 7, json.dumps({{"n": n}})) for n in range(150)]
    print(json.dumps(ids))
else:
    for n in range(30):
        store.write([(time.time_ns(), 1, None, "filler", "{{}}")] * 50)
    print("[]")
"""


class TestAdoption:
    def test_concurrent_runs_adopt_their_own_ids(self, pg_url: str) -> None:
        """Processes starting runs while others write batches: each run_id is its own row's id."""
        procs = [
            spawn(ADOPTER.format(kind=kind), None, RUNLOG_DB=pg_url)
            for kind in ["runs"] * 4 + ["batches"] * 2
        ]
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        returned: list[int] = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            returned += json.loads(out)
        started = query(
            pg_url,
            "SELECT id, run_id, parent_run_id FROM events WHERE event_type = 'process.started'",
        )
        assert len(started) == len(returned) == 600
        assert all(run_id == id_ and parent == 7 for id_, run_id, parent in started)
        assert sorted(returned) == sorted(id_ for id_, _, _ in started)
        assert query(pg_url, "SELECT count(*) FROM events WHERE event_type = 'filler'") == [(3000,)]

    def test_adoption_is_one_statement(self, store: Any) -> None:
        """start_run sends exactly one statement to the server (one round trip)."""
        conn = store._conn
        sent: list[str] = []
        original = conn.execute

        def counting(sql: Any, *args: Any, **kwargs: Any) -> Any:
            sent.append(str(sql))
            return original(sql, *args, **kwargs)

        conn.execute = counting
        run_id = store.start_run(time.time_ns(), None, "{}")
        assert len(sent) == 1 and sent[0].startswith("INSERT")
        assert Reader(store).events(run_id=run_id)[0].id == run_id


def lose_reply(monkeypatch: pytest.MonkeyPatch, name: str, *, after: bool) -> Callable[[], int]:
    """Make the next call of ``_postgres.<name>`` lose its connection, before or after it ran.

    ``after=True`` is the dangerous case: the server committed but the client never hears
    so.  Returns a function that tells how many times the real function ran.
    """
    real = getattr(_postgres, name)
    calls = {"real": 0, "failed": 0}

    def flaky(conn: Any, *args: Any) -> Any:
        if calls["failed"] == 0:
            calls["failed"] += 1
            if after:
                calls["real"] += 1
                real(conn, *args)
            conn.close()
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        calls["real"] += 1
        return real(conn, *args)

    monkeypatch.setattr(_postgres, name, flaky)
    return lambda: calls["real"]


WAITING_ON_LOCK = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE application_name = 'runlog' AND wait_event_type = 'Lock'"
)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


class TestExactlyOnce:
    @pytest.mark.parametrize("size", [1, 50], ids=["one-row", "copy"])
    @pytest.mark.parametrize("after", [True, False], ids=["after-commit", "before-commit"])
    def test_write_whose_outcome_is_unknown(
        self, pg_url: str, monkeypatch: pytest.MonkeyPatch, size: int, after: bool
    ) -> None:
        """A write whose connection drops around COMMIT is in the table exactly once after retry."""
        store = PostgresStore(pg_url)  # not connected: the failure reaches the caller
        rows = batch(size)
        ran = lose_reply(monkeypatch, "_insert", after=after)
        with pytest.raises(StoreUnreachable):
            store.write(rows)
        store.write(rows)  # what the writer does next: the same batch again
        found = query(pg_url, "SELECT payload FROM events WHERE event_type = 'e' ORDER BY id")
        assert [json.loads(p)["i"] for (p,) in found] == list(range(size))
        assert ran() == 1, "the rows went in once, whichever side of COMMIT the loss was"
        store.close()

    def test_idle_connection_that_died_is_replaced_at_once(
        self, store: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A reused connection found dead is replaced within the same call, without duplicates."""
        lose_reply(monkeypatch, "_insert", after=True)
        store.write(batch(20))  # no exception: retried on a new connection
        assert query(pg_url, "SELECT count(*) FROM events WHERE event_type = 'e'") == [(20,)]

    def test_next_batch_after_a_dropped_one_is_written(self, store: Any, pg_url: str) -> None:
        """A different batch after an unknown outcome is written normally, not mistaken for it."""
        store._unsure = _postgres._Unsure(batch(3, "other"), [10**12])
        store.write(batch(5))
        assert query(pg_url, "SELECT count(*) FROM events WHERE event_type = 'e'") == [(5,)]

    def test_retry_while_the_first_attempt_still_commits(self, store: Any, pg_url: str) -> None:
        """A re-sent batch waits for a first attempt still in progress, and is not doubled."""
        rows = batch(5)
        ids = _postgres._take_ids(store._conn, store._sequence, len(rows))
        store._unsure = _postgres._Unsure(rows, ids)  # as after a lost commit reply
        first_attempt = psycopg.connect(pg_url)  # its transaction stays open
        _postgres._insert(first_attempt, ids, rows)
        retry = threading.Thread(target=store.write, args=(rows,))
        retry.start()
        wait_until(lambda: query(pg_url, WAITING_ON_LOCK) == [(1,)])
        first_attempt.commit()
        retry.join(timeout=60)
        first_attempt.close()
        assert not retry.is_alive() and store._unsure is None
        assert query(pg_url, "SELECT count(*) FROM events WHERE event_type = 'e'") == [(5,)]

    @pytest.mark.parametrize("after", [True, False], ids=["after-commit", "before-commit"])
    def test_start_run_whose_outcome_is_unknown(
        self, pg_url: str, monkeypatch: pytest.MonkeyPatch, after: bool
    ) -> None:
        """A run start whose reply is lost adopts the one row that exists, never a second."""
        store = PostgresStore(pg_url)
        store.create()
        store.close()
        ts = time.time_ns()
        lose_reply(monkeypatch, "_adopt", after=after)
        with pytest.raises(StoreUnreachable):
            store.start_run(ts, 3, '{"pid":1}')
        run_id = store.start_run(ts, 3, '{"pid":1}')
        assert query(pg_url, "SELECT id, run_id, parent_run_id FROM events") == [
            (run_id, run_id, 3)
        ]
        store.close()


class TestReconnecting:
    def test_terminated_session_loses_nothing(self, pg_url: str) -> None:
        """An administrator killing runlog's session costs no event and raises nothing."""
        runlog.init(db=pg_url, sync=True)
        runlog.log_event("before")
        query(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'runlog' AND pid <> pg_backend_pid()",
        )
        runlog.log_event("after")
        types = [t for (t,) in query(pg_url, "SELECT event_type FROM events ORDER BY id")]
        assert types == ["process.started", "before", "after"]
        assert get_runtime().persister.dropped == 0

    def test_reads_after_a_restart(self, store: Any, pg_server: PgServer) -> None:
        """events() after the server restarted answers at once on a new connection."""
        store.write(batch(3))
        pg_server.stop()
        pg_server.start()
        assert [e.payload["i"] for e in Reader(store).events()] == [0, 1, 2]

    def test_forked_child_leaves_the_parent_session_alone(self, pg_url: str) -> None:
        """A forked child that logs and exits normally never closes the parent's session."""
        out = python(
            """
            import os, sys, runlog
            from runlog._runs import get_runtime
            runlog.init(role="parent", sync=True)
            before = get_runtime().store._conn.info.backend_pid
            pid = os.fork()
            if pid == 0:
                runlog.log_event("in.child")
                sys.exit(0)
            os.waitpid(pid, 0)
            runlog.log_event("after.fork")
            print(before == get_runtime().store._conn.info.backend_pid)
            """,
            RUNLOG_DB=pg_url,
        )
        assert out.stdout == "True\n"
        types = sorted(t for (t,) in query(pg_url, "SELECT event_type FROM events"))
        assert types.count("process.exited") == 2 and "in.child" in types


class TestUnwritableEvents:
    @pytest.mark.parametrize("event_type", ["nul\x00inside", "lone\ud800surrogate"])
    @pytest.mark.parametrize("size", [1, 3], ids=["one-row", "copy"])
    def test_text_the_server_cannot_hold_is_a_fault(
        self, store: Any, pg_url: str, event_type: str, size: int
    ) -> None:
        """An event type the server cannot store fails its batch (StoreFault); the store goes on."""
        rows = [*batch(size - 1), (time.time_ns(), 1, None, event_type, "{}")]
        with pytest.raises(StoreFault):
            store.write(rows)
        store.write(batch(2))
        assert query(pg_url, "SELECT count(*) FROM events WHERE event_type = 'e'") == [(2,)]
