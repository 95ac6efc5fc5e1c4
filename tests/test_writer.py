"""The writer: batching and flush, many writer processes, locks, back-pressure, outages."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import runlog

from support import python, rows, spawn


def hold_lock(db: Path) -> sqlite3.Connection:
    """Take the database's write lock from this (test) process, as another writer would."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


@contextlib.contextmanager
def read_only(db: Path) -> Iterator[None]:
    """Make the database and its WAL read-only for every process, open files included.

    Permissions are checked only when a file is opened, so chmod cannot do this to a
    database already open; the immutable attribute can, but only root may set it.
    """
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("making an open file read-only needs root and chattr (immutable attribute)")
    files = [str(p) for p in (db, Path(f"{db}-wal")) if p.exists()]
    subprocess.run(["chattr", "+i", *files], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *files], check=True)


def expect_line(proc: subprocess.Popen[str], expected: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != expected + "\n":
        proc.kill()
        raise AssertionError(f"expected {expected!r}, got {line!r}; stderr: {proc.stderr.read()}")  # type: ignore[union-attr]


def say(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


class TestBatching:
    def test_flush_makes_events_visible(self, db_path: Path) -> None:
        """After flush() every event logged before it is in the table."""
        runlog.init(db=str(db_path))
        for i in range(2500):
            runlog.log_event("e", {"i": i})
        assert runlog.flush(timeout=60)
        assert [r["payload"]["i"] for r in rows(db_path)[1:]] == list(range(2500))

    def test_sync_mode_commits_before_returning(self, db_path: Path) -> None:
        """With sync=True an event is in the table as soon as log_event returns."""
        runlog.init(db=str(db_path), sync=True)
        runlog.log_event("e")
        assert rows(db_path)[-1]["event_type"] == "e"

    def test_sync_mode_from_environment(
        self, db_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """RUNLOG_SYNC=1 turns on sync mode."""
        monkeypatch.setenv("RUNLOG_SYNC", "1")
        runlog.init(db=str(db_path))
        runlog.log_event("e")
        assert rows(db_path)[-1]["event_type"] == "e"

    def test_flush_before_anything_is_logged(self) -> None:
        """flush() without a runtime returns True at once."""
        assert runlog.flush()

    def test_events_keep_their_order_within_a_thread(self, db_path: Path) -> None:
        """Ids increase in the order one thread logged its events."""
        runlog.init(db=str(db_path))
        for i in range(100):
            runlog.log_event("e", {"i": i})
        runlog.flush()
        assert [r["payload"]["i"] for r in rows(db_path)[1:]] == list(range(100))


class TestManyWriters:
    def test_eight_processes_lose_nothing(self, db_path: Path) -> None:
        """8 processes logging 5,000 events each into one file at once: all 40,000 arrive."""
        code = """
        import os, sys, runlog
        runlog.init(role="writer")
        sys.stdin.readline()  # start together
        for i in range(5000):
            runlog.log_event("load.event", {"i": i})
        """
        procs = [spawn(code, db_path) for _ in range(8)]
        for proc in procs:
            say(proc, "go")
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            assert "locked" not in err and "dropped" not in err, err
        events = rows(db_path, "SELECT run_id, payload FROM events WHERE event_type='load.event'")
        assert len(events) == 40_000
        per_run: dict[int, list[int]] = {}
        for e in events:
            per_run.setdefault(e["run_id"], []).append(e["payload"]["i"])
        assert len(per_run) == 8
        assert all(sorted(v) == list(range(5000)) for v in per_run.values())
        exits = rows(db_path, "SELECT payload FROM events WHERE event_type='process.exited'")
        assert [e["payload"]["events_dropped"] for e in exits] == [0] * 8


class TestLocks:
    def test_lock_held_by_another_process_is_waited_out(self, db_path: Path) -> None:
        """Events logged while another process holds the lock are written after it lets go."""
        proc = spawn(
            """
            import sys, runlog
            runlog.init(sync=True)
            print("ready", flush=True)
            sys.stdin.readline()
            print("logging", flush=True)
            runlog.log_event("while.locked")
            print("done", flush=True)
            """,
            db_path,
        )
        expect_line(proc, "ready")
        lock = hold_lock(db_path)
        say(proc, "go")
        expect_line(proc, "logging")
        lock.execute("COMMIT")  # the child cannot have finished: we held the lock
        expect_line(proc, "done")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "dropped" not in err, err
        assert [r["event_type"] for r in rows(db_path)][1] == "while.locked"

    def test_init_waits_out_a_lock(self, db_path: Path) -> None:
        """init() waits while another process holds the lock, then starts the run."""
        python("import runlog; runlog.init()", db_path)
        lock = hold_lock(db_path)
        proc = spawn("import runlog; runlog.init(); print('started', flush=True)", db_path)
        assert proc.stdout is not None
        lock.execute("COMMIT")
        expect_line(proc, "started")
        assert proc.wait(60) == 0

    def test_lock_past_timeout_drops_reports_once_and_resumes(self, db_path: Path) -> None:
        """Past lock_timeout events are counted as dropped, reported once, and writing resumes."""
        proc = spawn(
            """
            import sys, runlog
            runlog.init(sync=True, lock_timeout=0.2)
            print("ready", flush=True)
            sys.stdin.readline()
            runlog.log_event("lost.1")
            runlog.log_event("lost.2")
            print("dropped", flush=True)
            sys.stdin.readline()
            runlog.log_event("kept")
            """,
            db_path,
        )
        expect_line(proc, "ready")
        lock = hold_lock(db_path)
        say(proc, "go")
        expect_line(proc, "dropped")
        lock.execute("COMMIT")
        say(proc, "go")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert err.count("could not write") == 1, err
        assert "writing to" in err and "again" in err
        kinds = [r["event_type"] for r in rows(db_path)]
        assert kinds == ["process.started", "kept", "process.exited"]
        assert rows(db_path)[-1]["payload"]["events_dropped"] == 2

    def test_full_queue_applies_backpressure(self, db_path: Path) -> None:
        """With the queue full, log_event blocks until the writer makes room; nothing is lost."""
        proc = spawn(
            """
            import sys, threading, runlog
            from runlog import _runs
            runlog.init(queue_size=50)
            writer = _runs.get_runtime().sink
            print("ready", flush=True)
            sys.stdin.readline()
            done = threading.Event()
            def produce():
                for i in range(500):
                    runlog.log_event("bp", {"i": i})
                done.set()
            t = threading.Thread(target=produce)
            t.start()
            while len(writer._queue) < 50 and not done.is_set():
                pass  # spin until the producer has filled the queue
            print("blocked" if not done.is_set() else "not blocked", flush=True)
            sys.stdin.readline()
            t.join()
            runlog.flush()
            print("done", flush=True)
            """,
            db_path,
            RUNLOG_BATCH_SIZE="10",
        )
        expect_line(proc, "ready")
        lock = hold_lock(db_path)
        say(proc, "go")
        expect_line(proc, "blocked")
        lock.execute("COMMIT")
        say(proc, "go")
        expect_line(proc, "done")
        assert proc.wait(60) == 0
        values = [r["payload"]["i"] for r in rows(db_path) if r["event_type"] == "bp"]
        assert values == list(range(500))


class TestOutages:
    def test_read_only_database_does_not_raise_and_resumes(self, db_path: Path) -> None:
        """A database that turns read-only drops events quietly, once reported; then resumes."""
        runlog.init(db=str(db_path), sync=True)
        runlog.log_event("before")
        with read_only(db_path):
            runlog.log_event("lost.1")  # must not raise
            runlog.log_event("lost.2")
        runlog.log_event("after")
        kinds = [r["event_type"] for r in rows(db_path)]
        assert kinds == ["process.started", "before", "after"]
        from runlog._runs import get_runtime

        assert get_runtime().persister.dropped == 2

    def test_deleted_directory_does_not_raise(self, tmp_path: Path) -> None:
        """Deleting the database's folder mid-run raises nothing into the application."""
        folder = tmp_path / "data"
        proc = python(
            f"""
            import shutil, runlog
            runlog.init(db={str(folder / "e.db")!r})
            runlog.log_event("before")
            runlog.flush()
            shutil.rmtree({str(folder)!r})
            for i in range(100):
                runlog.log_event("after", {{"i": i}})
            runlog.flush()
            print("survived", flush=True)
            """,
        )
        assert proc.stdout == "survived\n"
        assert "Traceback" not in proc.stderr

    def test_read_only_file_for_an_unprivileged_user(self, tmp_path: Path) -> None:
        """A database this user may not write: init() fails clearly, logging never raises."""
        folder = tmp_path / "shared"
        folder.mkdir()
        db = folder / "e.db"
        python("import runlog; runlog.init()", db)
        os.chmod(folder, 0o755)
        os.chmod(db, 0o644)
        if os.geteuid() != 0:
            pytest.skip("needs root to run the child as another user")
        tmp_path.chmod(0o755)
        code = f"""
        import os, runlog, sqlite3
        from runlog import init, log_event, flush  # load runlog while we can read the venv
        os.setgid(65534); os.setuid(65534)  # nobody: the file is now read-only for us
        try:
            runlog.init(db={str(db)!r})
        except runlog.ConfigurationError as exc:
            print("init:", exc)
        runlog.log_event("x", run_id=1)
        runlog.flush()
        print("survived")
        """
        proc = python(code, db)
        assert f"init: runlog cannot use its SQLite database at {str(db)!r}" in proc.stdout
        assert "survived" in proc.stdout


class TestGilHandOff:
    def test_caller_hands_the_gil_over_once_the_statement_should_be_done(
        self, db_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """While the writer is inside a write past its expected end, a busy caller lets
        go of the GIL (it looks every 32 events) instead of holding it for the
        interpreter's switch interval."""
        import threading
        import time

        from runlog import _writer
        from runlog._store import open_store

        handed: list[int] = []
        monkeypatch.setattr(_writer, "_give_up_gil", lambda: handed.append(1))
        store = open_store(str(db_path))
        store.create()
        real_write, started, gate = store.write, threading.Event(), threading.Event()

        def slow_write(rows: object) -> None:  # a statement that runs long, GIL released
            started.set()
            gate.wait(10)
            real_write(rows)  # type: ignore[arg-type]

        store.write = slow_write  # type: ignore[method-assign]
        writer = _writer.BatchWriter(
            _writer.Persister(store, lock_timeout=5),
            batch_size=10,
            interval=0.01,
            queue_size=10_000,
            backpressure_timeout=10,
        )
        row = (1, 1, None, "x", "{}")
        for _ in range(10):
            writer.submit(row)
        assert started.wait(10)
        while time.perf_counter_ns() < writer._handoff_at:  # its expected end has passed
            time.sleep(0.001)
        for _ in range(64):
            writer.submit(row)
        assert handed, "the caller never let the writer have the GIL"
        gate.set()
        assert writer.close(10)
        assert len(rows(db_path)) == 74


class TestDeferredPayloads:
    """An event logged with ``emit_deferred`` takes its place at once; the writer makes
    its payload (an LLM call's pricing, token fields and JSON) just before writing it."""

    def test_the_writer_makes_the_payload_and_the_event_keeps_its_place(
        self, db_path: Path
    ) -> None:
        import threading

        from runlog import _log

        runlog.init(db=str(db_path))
        made_on: list[str] = []

        def build() -> dict[str, object]:
            made_on.append(threading.current_thread().name)
            return {"answer": 42}

        runlog.log_event("before")
        _log.emit_deferred("deferred", build)
        runlog.log_event("after")
        assert runlog.flush()
        found = [(r["event_type"], r["payload"]) for r in rows(db_path)][-3:]
        assert found == [("before", {}), ("deferred", {"answer": 42}), ("after", {})]
        assert made_on == ["runlog-writer"]

    def test_sync_mode_makes_it_before_the_call_returns(self, db_path: Path) -> None:
        import threading

        from runlog import _log

        runlog.init(db=str(db_path), sync=True)
        made_on: list[str] = []

        def build() -> dict[str, object]:
            made_on.append(threading.current_thread().name)
            return {"answer": 42}

        _log.emit_deferred("deferred", build)
        assert made_on == [threading.current_thread().name]
        assert rows(db_path)[-1]["payload"] == {"answer": 42}

    def test_a_payload_that_cannot_be_made_is_marked_and_the_event_kept(
        self, db_path: Path
    ) -> None:
        from runlog import _errors, _log
        from runlog._payload import UNBUILDABLE, encode

        class Unreadable(dict[str, object]):
            def items(self) -> object:
                raise RuntimeError("unreadable")

        assert encode(Unreadable(a=1), 1000) == UNBUILDABLE  # the mark encode() itself gives
        runlog.init(db=str(db_path))
        before = _errors.internal_error_count()
        try:
            _errors.logger.disabled = True
            _log.emit_deferred("broken", lambda: 1 // 0)  # type: ignore[arg-type, return-value]
            runlog.log_event("after")
            assert runlog.flush()
            assert _errors.internal_error_count() == before + 1
            assert isinstance(_errors.internal_errors()[-1], ZeroDivisionError)
        finally:
            _errors.logger.disabled = False
            _errors._internal_error_count = before
            _errors._internal_errors.clear()
        found = [(r["event_type"], r["payload"]) for r in rows(db_path)][-2:]
        assert found == [("broken", {"_runlog": {"repr": [""]}}), ("after", {})]

    def test_an_llm_call_is_priced_off_the_callers_thread_with_its_fields_at_its_end(
        self, db_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import threading

        from runlog import _prices

        priced_on: list[str] = []
        price = _prices.cost_fields

        def spy(*args: object, **kwargs: object) -> dict[str, object]:
            priced_on.append(threading.current_thread().name)
            return price(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(_prices, "cost_fields", spy)
        runlog.init(db=str(db_path))
        with runlog.llm_call("gpt-4o-mini", step=1) as call:
            call.record(input_tokens=10, output_tokens=5)
        call.set(step=2, late=True)  # after the end: changes nothing
        assert runlog.flush()
        (event,) = [r for r in rows(db_path) if r["event_type"] == "llm_call.completed"]
        payload = event["payload"]
        assert payload["step"] == 1 and "late" not in payload
        assert payload["input_tokens"] == 10 and payload["cost_usd"] > 0
        assert priced_on == ["runlog-writer"]
