"""The lifecycle: a shutdown that never hangs, exits recorded as they happened, nothing
lost at exit, one database per process tree (issue 9, one class per reproduced defect).

Real child processes and real signals throughout; races are repeated (``REPEAT``) so
that one that shows once in ten runs fails here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runlog
from runlog import _errors
from runlog._runs import get_runtime
from runlog.testing import capture

from support import child_env, python, rows, script, spawn

REPEAT = 20


def exited(db: Path) -> dict[str, Any]:
    """The payload of the process's final process.exited (an implicit run may precede it)."""
    found = [r for r in rows(db) if r["event_type"] == "process.exited"]
    assert found, "no process.exited"
    assert all(r["payload"]["reason"] == "superseded" for r in found[:-1])
    return found[-1]["payload"]  # type: ignore[no-any-return]


def steps(db: Path) -> list[int]:
    return [r["payload"]["i"] for r in rows(db) if r["event_type"] == "work.step"]


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"child ended early ({proc.wait()}): {err}")
    return line.strip()


@contextlib.contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Hold the database's write lock from another connection."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


# --------------------------------------------------------------------------------------
# 1. SIGTERM never deadlocks: signals land inside log_event, a state query, a span, flush
ACTIVITIES = {
    "log_event": 'runlog.log_event("work.step", {"i": i})',
    "state_query": 'runlog.log_event("work.step", {"i": i}); runlog.state.count_events("x")',
    "span": 'with runlog.span("work", n=i):\n        runlog.log_event("work.step", {"i": i})',
    "flush": 'runlog.log_event("work.step", {"i": i}); runlog.flush()',
}


def busy_child(activity: str, sync: bool) -> str:
    return f"""
import runlog
runlog.init(role="victim", sync={sync})
i = 0
while True:
    {ACTIVITIES[activity]}
    if i == 50:
        print("ready", flush=True)
    i += 1
"""


class TestSigtermNeverHangs:
    @pytest.mark.parametrize("sync", [True, False], ids=["sync", "batched"])
    @pytest.mark.parametrize("activity", sorted(ACTIVITIES))
    def test_sigterm_inside_runlog_dies_by_the_signal(
        self, tmp_path: Path, activity: str, sync: bool
    ) -> None:
        """SIGTERM sent while the child is inside runlog ends it by SIGTERM, every time,
        with process.exited written and no gap in what it logged."""
        repeat = REPEAT if (activity, sync) in {("log_event", True), ("state_query", False)} else 8
        for batch in range(0, repeat, 4):
            procs = []
            for k in range(batch, min(batch + 4, repeat)):
                db = tmp_path / f"run{k}.db"
                procs.append((db, spawn(busy_child(activity, sync), db)))
            for _, proc in procs:
                assert read_line(proc) == "ready"
            for _, proc in procs:
                proc.send_signal(signal.SIGTERM)
            for db, proc in procs:
                try:
                    code = proc.wait(30)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"the child hung after SIGTERM ({activity}, sync={sync})")
                assert code == -signal.SIGTERM, proc.stderr.read() if proc.stderr else ""
                payload = exited(db)
                assert (payload["reason"], payload["signal"]) == ("signal", "SIGTERM")
                done = steps(db)
                assert done == list(range(len(done))) and len(done) > 50

    @pytest.mark.parametrize("sync", [True, False], ids=["sync", "batched"])
    def test_sigterm_on_postgres(self, pg_url: str, sync: bool) -> None:
        """The same on the real PostgreSQL server: SIGTERM inside log_event, repeated."""
        import psycopg

        for _ in range(5):
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("DROP TABLE IF EXISTS events")
                conn.execute("DROP TABLE IF EXISTS runlog_meta")
            proc = spawn(busy_child("log_event", sync), None, RUNLOG_DB=pg_url)
            assert read_line(proc) == "ready"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == -signal.SIGTERM, proc.stderr.read() if proc.stderr else ""
            with psycopg.connect(pg_url) as conn:
                found = conn.execute(
                    "SELECT event_type, payload FROM events ORDER BY id"
                ).fetchall()
            done = [json.loads(p)["i"] for t, p in found if t == "work.step"]
            assert done == list(range(len(done))) and len(done) > 50
            (ended,) = [json.loads(p) for t, p in found if t == "process.exited"]
            assert (ended["reason"], ended["signal"]) == ("signal", "SIGTERM")

    def test_sigterm_with_the_database_locked_is_bounded_and_counted(self, db_path: Path) -> None:
        """With another process holding the write lock, SIGTERM ends the process within
        lock_timeout, and the exit warning counts every event it could not write."""
        code = """
        import sys, time, runlog
        runlog.init(role="victim", lock_timeout=1.0)
        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(2000):
            runlog.log_event("work.step", {"i": i})
        print("logged", flush=True)
        time.sleep(600)
        """
        proc = spawn(code, db_path)
        assert read_line(proc) == "ready"
        with write_lock(db_path):
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert read_line(proc) == "logged"
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == -signal.SIGTERM
            elapsed = time.monotonic() - start
        assert elapsed < 5, f"SIGTERM took {elapsed:.1f}s with lock_timeout=1"
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert "runlog dropped 2001 event(s) in this run" in err, err
        assert [r["event_type"] for r in rows(db_path)] == ["process.started"]


class TestSigtermAtStart:
    """The run is hooked before its row exists, so a SIGTERM that lands the moment
    ``process.started`` is visible (a supervisor stopping a worker it just saw start)
    still ends the run with ``process.exited`` (it did not in 26 of 40 tries before)."""

    def test_sigterm_as_soon_as_process_started_is_visible(self, tmp_path: Path) -> None:
        for k in range(REPEAT):
            db = tmp_path / f"run{k}.db"
            proc = spawn("import time, runlog\nrunlog.init(role='w')\ntime.sleep(60)", db)
            while not any(r["event_type"] == "process.started" for r in started_rows(db)):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == -signal.SIGTERM
            assert [r["event_type"] for r in rows(db)] == ["process.started", "process.exited"]
            assert exited(db)["signal"] == "SIGTERM"

    def test_sigterm_anywhere_in_init_leaves_no_run_without_its_exit(self, tmp_path: Path) -> None:
        """Signals spread over ``init()``: before the row (no run), during, after."""
        code = "import sys, time, runlog\nprint('x', flush=True)\nsys.stdin.readline()\n"
        code += "runlog.init(role='w')\ntime.sleep(60)"
        for k in range(REPEAT):
            db = tmp_path / f"run{k}.db"
            proc = spawn(code, db)
            assert read_line(proc) == "x"
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            time.sleep(k * 0.001)  # 0 to 19 ms into init(): where it lands varies, not the rule
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == -signal.SIGTERM
            kinds = [r["event_type"] for r in started_rows(db)]
            assert kinds in ([], ["process.started", "process.exited"]), kinds


SLEEPER = """
import signal, sys, threading, time, runlog
runlog.init(role="sleeper")
{setup}
def poke():
    time.sleep(0.05)
    # Lands on this thread: its C handler runs here, the main thread sleeps on.  The
    # same state as a SIGTERM landing just before the main thread's sleep syscall.
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
print("ready", flush=True)
threading.Thread(target=poke).start()
{sleep}
print("the sleep ended", flush=True)
"""


class TestSigtermNeverWaitsForTheMainThread:
    """Python runs a handler when the main thread next runs bytecode; a SIGTERM that
    lands where it cannot interrupt the main thread's sleep used to wait for the sleep
    to end (the process ran on past it).  The closer wakes on the wakeup fd instead."""

    @pytest.mark.parametrize(
        ("setup", "sleep"),
        [
            ("", "time.sleep(600)"),
            # An event loop holds the wakeup fd: its loop wakes the main thread instead.
            (
                "import asyncio\nasync def main():\n"
                "    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, print)\n"
                "    await asyncio.sleep(600)",
                "asyncio.run(main())",
            ),
            # An event loop held it and put it back: runlog's is in place again.
            (
                "import asyncio\nasync def main():\n    loop = asyncio.get_running_loop()\n"
                "    loop.add_signal_handler(signal.SIGUSR1, print)\n"
                "    loop.remove_signal_handler(signal.SIGUSR1)\n"
                "asyncio.run(main())",
                "time.sleep(600)",
            ),
        ],
        ids=["sleep", "inside-an-event-loop", "after-an-event-loop"],
    )
    def test_sigterm_on_another_thread_ends_a_sleeping_process_at_once(
        self, tmp_path: Path, setup: str, sleep: str
    ) -> None:
        for k in range(REPEAT // 4):
            db = tmp_path / f"run{k}.db"
            proc = spawn(SLEEPER.format(setup=setup, sleep=sleep), db)
            assert read_line(proc) == "ready"
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                pytest.fail("SIGTERM waited for the main thread's sleep")
            assert code == -signal.SIGTERM, proc.stderr.read() if proc.stderr else ""
            assert proc.stdout is not None and proc.stdout.read() == ""
            payload = exited(db)
            assert (payload["reason"], payload["signal"]) == ("signal", "SIGTERM")

    def test_wakeup_fd_is_the_applications_when_it_sets_one(self, db_path: Path) -> None:
        """Code that sets a wakeup fd sees none set before it (Trio warns otherwise),
        gets back its own, and an fd set before init() is left in place."""
        code = """
        import signal, socket, runlog
        a, b = socket.socketpair(); a.setblocking(False)
        runlog.init(role="w")
        assert signal.set_wakeup_fd(a.fileno()) == -1
        assert signal.set_wakeup_fd(-1) == a.fileno()
        assert signal.set_wakeup_fd(-1) == -1  # runlog's is back, and still not reported
        print("ok")
        """
        assert python(code, db_path).stdout == "ok\n"
        before = """
        import os, signal, socket, runlog
        a, b = socket.socketpair(); a.setblocking(False)
        signal.set_wakeup_fd(a.fileno())
        runlog.init(role="w")
        assert signal.set_wakeup_fd(-1) == a.fileno()
        print("ok")
        """
        assert python(before, db_path).stdout == "ok\n"

    def test_a_forked_childs_signal_never_ends_the_parents_run(self, db_path: Path) -> None:
        """The child inherits the wakeup fd; its signals must not reach the parent's closer."""
        code = """
        import os, signal, time, runlog
        runlog.init(role="parent")
        for k in range(6):
            pid = os.fork()
            if pid == 0:
                if k % 2:  # a child with a run of its own, and one without
                    runlog.log_event("child.work")
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
                os._exit(0)
            assert os.waitpid(pid, 0)[1] == signal.SIGTERM
        time.sleep(0.2)  # a closer woken by mistake would have ended this run by now
        runlog.log_event("parent.after")
        print("ok")
        """
        done = python(code, db_path)
        assert (done.stdout, done.stderr) == ("ok\n", "")
        parent = [r for r in rows(db_path) if r["parent_run_id"] is None]
        assert [r["event_type"] for r in parent] == [
            "process.started",
            "parent.after",
            "process.exited",
        ]
        assert parent[-1]["payload"]["reason"] == "normal"
        children = [r for r in rows(db_path) if r["event_type"] == "process.exited"][:-1]
        assert [c["payload"]["signal"] for c in children] == ["SIGTERM"] * 3


def started_rows(db: Path) -> list[dict[str, Any]]:
    """The rows so far, read-only; none while the file or table does not exist yet."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)  # never creates the file
    except sqlite3.OperationalError:
        return []
    try:
        found = conn.execute("SELECT event_type FROM events ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # no table yet
        return []
    finally:
        conn.close()
    return [{"event_type": kind} for (kind,) in found]


# --------------------------------------------------------------------------------------
# 2. Events logged after runlog's exit hook are written, not queued to a stopped thread
class TestEventsAtExit:
    def test_atexit_and_finalize_events_registered_before_runlog_are_kept(
        self, db_path: Path
    ) -> None:
        """atexit hooks and weakref.finalize callbacks that run after runlog's hook still
        reach the table, and nothing is counted as dropped."""
        code = """
        import atexit, weakref

        class Resource:
            pass

        resource = Resource()

        def at_exit():
            import runlog
            runlog.log_event("late.atexit", {"n": 1})

        def finalized():
            import runlog
            runlog.log_event("late.finalize", {"n": 2})

        atexit.register(at_exit)           # registered before runlog: runs after its hook
        weakref.finalize(resource, finalized)
        import runlog
        runlog.init(role="victim")
        atexit.register(lambda: runlog.log_event("early.atexit"))  # runs before runlog's
        for i in range(500):
            runlog.log_event("work.step", {"i": i})
        """
        python(code, db_path)
        types = [r["event_type"] for r in rows(db_path)]
        assert {"late.atexit", "late.finalize", "early.atexit"} <= set(types)
        assert types.index("early.atexit") < types.index("process.exited")
        assert steps(db_path) == list(range(500))
        assert exited(db_path)["events_dropped"] == 0

    def test_abandoned_openai_stream_at_exit_is_logged(self, db_path: Path) -> None:
        """An instrumented stream still open when the program ends is logged as abandoned."""
        code = """
        import runlog
        from openai import OpenAI
        from runlog_openai.standin import StandInServer
        runlog.init(role="victim")
        runlog.instrument_openai()
        server = StandInServer(reply="Hi there friend", input_tokens=5, output_tokens=3).start()
        client = OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
        messages = [{"role": "user", "content": "hi"}]
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True
        )
        next(iter(stream))  # one chunk read, then the program just ends
        """
        python(code, db_path)
        (call,) = [r["payload"] for r in rows(db_path) if r["event_type"] == "llm_call.completed"]
        assert call["stream_end"] == "abandoned"
        assert exited(db_path)["events_dropped"] == 0

    def test_fork_before_any_span_is_clean(self, db_path: Path) -> None:
        """Forking (a Popen with preexec_fn, os.fork) in a run that never opened a span
        runs every fork hook in pairs: nothing is reported as ignored."""
        code = """
        import os, subprocess, sys, runlog
        runlog.init(role="victim")
        subprocess.run([sys.executable, "-c", "pass"], preexec_fn=os.setsid, check=True)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        """
        proc = python(code, db_path)
        assert "Exception ignored" not in proc.stderr, proc.stderr

    def test_log_after_close_writes_synchronously(self, db_path: Path) -> None:
        """After the writer is closed, log_event writes the event before returning."""
        runlog.init(db=str(db_path))
        get_runtime().sink.close()
        runlog.log_event("after.close")
        assert [r["event_type"] for r in rows(db_path)][-1] == "after.close"


# --------------------------------------------------------------------------------------
# 3. The first event from a worker thread: signal hooks install on the next main-thread call
class TestFirstEventFromAThread:
    @pytest.mark.parametrize(
        "then",
        ['runlog.init(role="victim")', "pass"],
        ids=["then-init", "then-main-thread-events"],
    )
    def test_sigterm_after_the_first_event_came_from_a_thread(
        self, db_path: Path, then: str
    ) -> None:
        """A thread logs first; then the main thread (calling init() or not) logs 2,000
        events: SIGTERM still writes every one of them and process.exited."""
        code = f"""
        import threading, time, runlog
        t = threading.Thread(target=lambda: runlog.log_event("from.thread"))
        t.start(); t.join()
        {then}
        for i in range(2000):
            runlog.log_event("work.step", {{"i": i}})
        print("ready", flush=True)
        time.sleep(600)
        """
        proc = spawn(code, db_path)
        assert read_line(proc) == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM
        assert steps(db_path) == list(range(2000))
        assert exited(db_path)["signal"] == "SIGTERM"


# --------------------------------------------------------------------------------------
# 4. Exit codes and reasons are observed
class TestExitCodes:
    @pytest.mark.parametrize(
        ("ending", "code", "reason"),
        [
            ("sys.exit(3)", 3, "normal"),
            ("exit(3)", 3, "normal"),
            ("quit(5)", 5, "normal"),
            ("sys.exit('bye')", 1, "normal"),
            ("try:\n    sys.exit(4)\nexcept SystemExit:\n    pass", 0, "normal"),
            ("def f():\n    sys.exit(6)\nf()", 6, "normal"),
            ("raise ValueError('x')", 1, "exception"),
            ("pass", 0, "normal"),
        ],
        ids=[
            "sys.exit",
            "builtin-exit",
            "builtin-quit",
            "exit-message",
            "caught-exit",
            "exit-in-function",
            "exception",
            "fall-off-the-end",
        ],
    )
    def test_exit_code_is_the_one_observed(
        self, db_path: Path, ending: str, code: int, reason: str
    ) -> None:
        """process.exited records the exit code the process really exits with."""
        body = "import sys, runlog\nrunlog.init(role='victim')\nrunlog.log_event('x')\n"
        proc = python(body + ending + "\n", db_path, check=False)
        assert proc.returncode == code, proc.stderr
        payload = exited(db_path)
        assert (payload["exit_code"], payload["reason"]) == (code, reason)

    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
    def test_handler_installed_after_init_records_the_signal(
        self, db_path: Path, signum: signal.Signals
    ) -> None:
        """An application handler installed after init() runs, and the exit still says
        which signal ended the process, with the code the handler chose."""
        code = f"""
        import signal, sys, time, runlog
        runlog.init(role="victim")
        previous = signal.signal({int(signum)}, lambda s, f: sys.exit(0))
        assert callable(previous) or previous == signal.SIG_DFL, previous
        assert signal.getsignal({int(signum)}) is not previous
        print("ready", flush=True)
        time.sleep(600)
        """
        proc = spawn(code, db_path)
        assert read_line(proc) == "ready"
        proc.send_signal(signum)
        assert proc.wait(30) == 0
        payload = exited(db_path)
        assert (payload["reason"], payload["signal"], payload["exit_code"]) == (
            "signal",
            signum.name,
            0,
        )

    def test_getsignal_shows_the_application_handler(self, db_path: Path) -> None:
        """signal.getsignal returns what the application set, not runlog's handler."""
        code = """
        import signal, runlog
        runlog.init(role="victim")
        def handler(s, f): pass
        signal.signal(signal.SIGTERM, handler)
        assert signal.getsignal(signal.SIGTERM) is handler
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        print("ok")
        """
        assert python(code, db_path).stdout == "ok\n"

    @pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
    @pytest.mark.parametrize(
        ("target", "code", "reason"),
        [
            ("raise ValueError('boom')", 1, "exception"),
            ("raise KeyboardInterrupt", 1, "exception"),
            ("sys.exit(5)", 5, "normal"),
            ("pass", 0, "normal"),
        ],
        ids=["raises", "keyboard-interrupt", "sys.exit", "returns"],
    )
    def test_multiprocessing_child_exit(
        self, db_path: Path, method: str, target: str, code: int, reason: str
    ) -> None:
        """A multiprocessing child's process.exited matches Process.exitcode."""
        parent = f"""
import multiprocessing as mp, sys, runlog

def work():
    runlog.log_event("child.work")
    {target}

if __name__ == "__main__":
    runlog.init(role="supervisor")
    p = mp.get_context("{method}").Process(target=work)
    p.start(); p.join()
    print(p.exitcode)
"""
        proc = subprocess.run(
            [sys.executable, script(parent)],
            env=child_env(db_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == str(code)
        children = [
            r for r in rows(db_path) if r["event_type"] == "process.exited" and r["parent_run_id"]
        ]
        (child,) = children
        assert (child["payload"]["exit_code"], child["payload"]["reason"]) == (code, reason)

    @pytest.mark.parametrize(
        ("ending", "code"),
        [("sys.exit(6)", 6), ("raise ValueError('x')", 1), ("pass", 0)],
        ids=["sys.exit", "raises", "falls-off-the-end"],
    )
    def test_os_fork_child_exit(self, db_path: Path, ending: str, code: int) -> None:
        """An os.fork child that leaves through the interpreter records its own exit."""
        body = f"""
import os, sys, runlog
runlog.init(role="supervisor")
pid = os.fork()
if pid == 0:
    runlog.log_event("child.work")
    {ending}
else:
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status))
"""
        proc = python(body, db_path, check=False)
        assert proc.stdout.strip().splitlines()[-1] == str(code)
        (child,) = [
            r for r in rows(db_path) if r["event_type"] == "process.exited" and r["parent_run_id"]
        ]
        assert child["payload"]["exit_code"] == code


# --------------------------------------------------------------------------------------
# 5. One process tree, one table
WORKER = """
import runlog
runlog.init(role="worker")
runlog.log_event("worker.hello")
"""


class TestOneTreeOneTable:
    def test_child_in_another_directory_writes_the_parents_database(self, tmp_path: Path) -> None:
        """init(db=...) in the parent: a child started elsewhere writes the same file."""
        db, elsewhere = tmp_path / "tree.db", tmp_path / "elsewhere"
        elsewhere.mkdir()
        parent = f"""
        import subprocess, sys, runlog
        runlog.init(role="supervisor", db={str(db)!r})
        subprocess.run([sys.executable, {script(WORKER)!r}], cwd={str(elsewhere)!r}, check=True)
        """
        python(parent)
        found = rows(db)
        (sup,) = [r for r in found if r["payload"].get("role") == "supervisor"]
        (worker,) = [r for r in found if r["payload"].get("role") == "worker"]
        assert worker["parent_run_id"] == sup["run_id"]
        assert not (elsewhere / "runlog.db").exists()

    def test_default_relative_database_is_inherited(self, tmp_path: Path) -> None:
        """The default ./runlog.db is the parent's working directory's, for every child."""
        home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
        home.mkdir()
        elsewhere.mkdir()
        parent = f"""
        import multiprocessing as mp, os, subprocess, sys, runlog

        def work():
            runlog.log_event("mp.hello")

        if __name__ == "__main__":
            runlog.init(role="supervisor")
            os.chdir({str(elsewhere)!r})
            subprocess.run([sys.executable, {script(WORKER)!r}], check=True)
            p = mp.get_context("spawn").Process(target=work)
            p.start(); p.join()
        """
        subprocess.run(
            [sys.executable, script(parent)], env=child_env(), cwd=home, check=True, timeout=120
        )
        types = [r["event_type"] for r in rows(home / "runlog.db")]
        assert "worker.hello" in types and "mp.hello" in types
        assert not (elsewhere / "runlog.db").exists()

    def test_capture_captures_child_processes(self, tmp_path: Path) -> None:
        """testing.capture() around a supervisor captures its children, not the real table."""
        with capture(role="supervisor") as events:
            subprocess.run([sys.executable, script(WORKER)], check=True, timeout=60)
        (worker,) = [e for e in events.all() if e.event_type == "worker.hello"]
        (started,) = [e for e in events.of_type("process.started") if e.run_id == worker.run_id]
        assert started.parent_run_id == events.run_id
        assert not (tmp_path / "runlog.db").exists()
        assert "RUNLOG_DB" not in os.environ

    def test_child_env_carries_the_database(self, db_path: Path) -> None:
        """child_env() gives launchers that build their own environment the database too."""
        runlog.init(db=str(db_path))
        env = runlog.child_env({})
        assert env["RUNLOG_DB"] == str(db_path.absolute())

    def test_postgres_child_inherits_the_database_without_the_password(self, pg_url: str) -> None:
        """A PostgreSQL URL with a password reaches children with the password in an
        owner-only passfile, never in the environment."""
        url = pg_url.replace("postgres@", "postgres:s3cret-pw@", 1)
        assert "s3cret-pw" in url
        parent = f"""
        import os, subprocess, sys, runlog
        runlog.init(role="supervisor", db={url!r})
        assert "s3cret-pw" not in os.environ["RUNLOG_DB"], os.environ["RUNLOG_DB"]
        print(os.environ["RUNLOG_DB"])
        subprocess.run([sys.executable, {script(WORKER)!r}], check=True)
        """
        inherited = python(parent).stdout.strip()
        assert "passfile=" in inherited
        passfile = Path(inherited.split("passfile=")[1].split("&")[0].replace("%2F", "/"))
        assert passfile.stat().st_mode & 0o777 == 0o600
        assert passfile.read_text().strip().endswith("s3cret-pw")
        import psycopg

        with psycopg.connect(pg_url) as conn:
            found = conn.execute(
                "SELECT parent_run_id, event_type FROM events ORDER BY id"
            ).fetchall()
        assert ("worker.hello" in {t for _, t in found}) and found[0][0] is None


# --------------------------------------------------------------------------------------
# 6. A deleted database file, and an unwritable WAL index
class TestTheFileUnderneath:
    def test_deleted_database_is_detected_counted_and_made_anew(
        self, db_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Deleting the file mid-run is reported once, counted, and writing resumes on a
        new file at the same path; flush() is honest about what was lost."""
        runlog.init(db=str(db_path), sync=True)
        runlog.log_event("before")
        db_path.unlink()
        runlog.log_event("maybe.lost")  # the dead inode, or already the new file
        kept = runlog.flush()
        runlog.log_event("after")
        assert runlog.flush()
        types = [r["event_type"] for r in rows(db_path)]
        assert "after" in types
        assert kept is False  # process.started and "before" went with the old file
        warnings = [r for r in caplog.records if "deleted or replaced" in r.getMessage()]
        assert len(warnings) == 1
        # Counted: the rows the old file took with it, and "maybe.lost" if it went there.
        assert get_runtime().persister.dropped == (2 if "maybe.lost" in types else 3)

    def test_batched_writer_survives_a_deleted_file(self, db_path: Path) -> None:
        """In batched mode too: events after the deletion reach the new file."""
        runlog.init(db=str(db_path))
        runlog.log_event("before")
        assert runlog.flush()
        db_path.unlink()
        time.sleep(0.06)  # past the file check's cadence, so the next write checks it
        for i in range(100):
            runlog.log_event("work.step", {"i": i})
        assert runlog.flush()
        assert steps(db_path) == list(range(100))

    def test_unwritable_shm_never_kills_the_process(self, db_path: Path) -> None:
        """chattr +i on the -shm file: writes fail and are counted; no SIGBUS."""
        if os.geteuid() != 0 or shutil.which("chattr") is None:
            pytest.skip("making a file immutable needs root and chattr")
        code = """
        import sys, runlog
        runlog.init(role="victim", sync=True, lock_timeout=0.2)
        for i in range(100):
            runlog.log_event("work.step", {"i": i})
        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(100, 6000):
            runlog.log_event("work.step", {"i": i})
        print("flush", runlog.flush(), flush=True)
        """
        proc = spawn(code, db_path)
        assert read_line(proc) == "ready"
        shm = Path(f"{db_path}-shm")
        assert shm.exists()
        subprocess.run(["chattr", "+i", str(shm)], check=True)
        try:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert read_line(proc) == "flush False"
            assert proc.wait(60) == 0
        finally:
            subprocess.run(["chattr", "-i", str(shm)], check=True)
        assert proc.stderr is not None and "not writable" in proc.stderr.read()


# --------------------------------------------------------------------------------------
# 7. Honest answers and bounded waits
class TestHonestyAndBounds:
    def test_flush_is_false_when_events_were_dropped_under_a_lock(self, db_path: Path) -> None:
        """flush() is False when the lock outlasted lock_timeout and events were dropped."""
        runlog.init(db=str(db_path), lock_timeout=0.3)
        with write_lock(db_path):
            runlog.log_event("lost")
            assert runlog.flush() is False
        runlog.log_event("kept")
        assert runlog.flush() is True
        assert [r["event_type"] for r in rows(db_path)] == ["process.started", "kept"]

    def test_flush_is_false_for_an_unusable_database_without_init(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No init(), RUNLOG_DB a directory: the dropped events make flush() False."""
        monkeypatch.setenv("RUNLOG_DB", str(tmp_path))
        runlog.log_event("lost")
        assert runlog.flush() is False

    def test_unusable_database_is_reported_once_not_per_span(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """1,000 spans against an unusable database: one warning, no ERROR, no traceback."""
        monkeypatch.setenv("RUNLOG_DB", str(tmp_path))
        caplog.set_level(logging.DEBUG, logger="runlog")
        _errors.forget_warning("implicit-start")  # reported by an earlier test of this process
        for i in range(1000):
            with runlog.span("work", n=i):
                pass
        records = [r for r in caplog.records if r.name == "runlog"]
        assert len(records) == 1, [r.getMessage() for r in records]
        assert records[0].levelno == logging.WARNING and records[0].exc_info is None

    def test_retained_internal_errors_are_capped(self) -> None:
        """Reported internal errors are kept up to a cap, without their frames."""
        before = _errors.internal_error_count()
        try:
            for i in range(1000):
                try:
                    raise RuntimeError(i)
                except RuntimeError as exc:
                    _errors.logger.disabled = True
                    _errors.report_internal_error("testing", exc, reraise=False)
            kept = _errors.internal_errors()
            assert len(kept) == 100
            assert kept[-1].args == (999,) and kept[-1].__traceback__ is None
        finally:
            _errors.logger.disabled = False
            _errors._internal_error_count = before
            _errors._internal_errors.clear()

    def test_lock_wait_ends_within_ten_percent_of_lock_timeout(self, db_path: Path) -> None:
        """A write waiting out a lock gives up within 10% of lock_timeout."""
        runlog.init(db=str(db_path), sync=True, lock_timeout=2.0)
        with write_lock(db_path):
            start = time.monotonic()
            runlog.log_event("waits")
            waited = time.monotonic() - start
        assert 1.9 <= waited < 2.2, waited


# --------------------------------------------------------------------------------------
# 8. Reads never write
class TestReadsNeverWrite:
    def test_state_in_a_read_only_script_starts_no_run(self, db_path: Path) -> None:
        """runlog.state in a process that never logged writes nothing to the table."""
        sup = runlog.init(db=str(db_path), role="supervisor", sync=True)
        runlog.log_event("revision.promoted", {"revision": "r7"})
        before = rows(db_path)
        code = f"""
        import runlog
        print(runlog.state.current_good_rev(), runlog.state.worker_instance_seq({sup}),
              runlog.state.next_worker_instance_seq({sup}), runlog.state.worker_instance_seq(),
              len(runlog.state.events()))
        """
        out = python(code, db_path).stdout.split()
        assert out == ["r7", "0", "1", "0", str(len(before))]
        assert rows(db_path) == before

    def test_reading_a_missing_database_is_a_clear_error(self, tmp_path: Path) -> None:
        """Reads against a database that does not exist raise, and create nothing."""
        missing = tmp_path / "missing.db"
        code = """
        import runlog
        try:
            runlog.state.count_events("x")
        except runlog.StoreUnavailableError as exc:
            print("error:", exc)
        """
        out = python(code, missing).stdout
        assert out.startswith("error:") and "no runlog database" in out
        assert not missing.exists()


# --------------------------------------------------------------------------------------
# 9. Race-free worker numbering
class TestWorkerNumbering:
    def test_back_to_back_spawns_get_distinct_numbers(self, db_path: Path) -> None:
        """Three workers numbered back to back, before any has started: 1, 2, 3."""
        runlog.init(db=str(db_path), role="supervisor")
        procs = []
        for _ in range(3):
            seq = runlog.state.next_worker_instance_seq()
            worker = f"""
            import runlog
            runlog.init(role="worker", instance_id="worker-{seq}")
            """
            procs.append(subprocess.Popen([sys.executable, script(worker)], env=os.environ))
            runlog.log_event("worker.spawned", {"worker_instance_seq": seq})
        for proc in procs:
            assert proc.wait(60) == 0
        assert runlog.flush()
        names = sorted(
            r["payload"]["instance_id"]
            for r in rows(db_path)
            if r["payload"].get("role") == "worker"
        )
        assert names == ["worker-1", "worker-2", "worker-3"]
        assert runlog.state.worker_instance_seq() == 3
        assert runlog.state.next_worker_instance_seq() == 4

    def test_counts_workers_that_started_without_a_spawned_event(self, db_path: Path) -> None:
        """Workers that log process.started without a worker.spawned are counted too."""
        runlog.init(db=str(db_path), role="supervisor")
        python(WORKER, db_path, PARENT_RUN_ID=str(runlog.current_run_id()))
        python(WORKER, db_path, PARENT_RUN_ID=str(runlog.current_run_id()))
        assert runlog.state.next_worker_instance_seq() == 3


# --------------------------------------------------------------------------------------
# 10. A forked child never waits on what another thread of its parent held
FORKS = 100


class TestForkNeverHangs:
    """A child forked at any moment ends, whatever runlog's other threads were doing.

    The child has only the thread that forked: a lock, an import or a C library's
    mutex (SQLite's allocator, held for most of a batch INSERT) that another thread
    held at that moment would be held forever there.
    """

    def test_children_forked_while_the_writer_writes_all_finish(self, db_path: Path) -> None:
        """100 forks at random moments while another thread logs non-stop: every child
        logs its event and exits within a generous bound, none hangs (before the fix,
        about a third hung in SQLite's allocator mutex)."""
        code = f"""
        import os, random, signal, sys, threading, time, runlog
        runlog.init(role="parent")
        stop = threading.Event()

        def log_forever():  # the writer has a batch under way most of the time
            i = 0
            while not stop.is_set():
                runlog.log_event("work.step", {{"i": i, "pad": "x" * 200}})
                i += 1

        threading.Thread(target=log_forever, daemon=True).start()
        random.seed(7)
        outcomes = []
        for k in range({FORKS}):
            time.sleep(random.random() * 0.005)
            pid = os.fork()
            if pid == 0:
                runlog.log_event("child.work", {{"k": k}})
                sys.exit(0 if runlog.flush() else 3)
            deadline = time.monotonic() + 10
            while not (done := os.waitpid(pid, os.WNOHANG))[0]:
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    done = os.waitpid(pid, 0)
                    outcomes.append(f"child {{k}} hung")
                    break
                time.sleep(0.001)
            else:
                if done[1]:
                    outcomes.append(f"child {{k}}: {{os.waitstatus_to_exitcode(done[1])}}")
        stop.set()
        print(outcomes)
        """
        proc = python(code, db_path, timeout=300)
        assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
        parent = rows(db_path, "SELECT * FROM events ORDER BY id LIMIT 1")[0]["run_id"]
        works = rows(db_path, "SELECT * FROM events WHERE event_type = 'child.work'")
        assert sorted(r["payload"]["k"] for r in works) == list(range(FORKS))
        assert all(r["parent_run_id"] == parent for r in works)
        exits = [
            r["payload"]
            for r in rows(db_path, "SELECT * FROM events WHERE event_type = 'process.exited'")
            if r["run_id"] != parent
        ]
        assert len(exits) == FORKS and all(e["exit_code"] == 0 for e in exits)

    def test_a_fork_waits_for_a_call_into_sqlite(self, db_path: Path) -> None:
        """A fork while another thread is inside SQLite happens once that call is done."""
        code = """
        import os, threading, time, runlog
        from runlog._runs import get_runtime
        runlog.init(role="parent")
        inside, finished = threading.Event(), []

        def slow_query(conn):
            inside.set()
            time.sleep(0.3)
            finished.append(conn.execute("SELECT count(*) FROM events").fetchone())

        threading.Thread(target=get_runtime().store._run, args=(slow_query,)).start()
        inside.wait()
        pid = os.fork()
        if pid == 0:
            os._exit(0 if finished else 4)  # the call had ended before the fork was made
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """
        assert python(code, db_path).stdout.strip() == "0"

    def test_past_the_bound_the_child_refuses_sqlite_rather_than_hang(self, db_path: Path) -> None:
        """A call into SQLite that outlasts the fork's wait leaves the child without
        SQLite (its mutexes may be held): its events are counted as dropped, it ends."""
        code = """
        import os, threading, time, runlog
        from runlog import _forksafe
        from runlog._runs import get_runtime
        _forksafe.FORK_WAIT_S = 0.2
        runlog.init(role="parent")
        inside = threading.Event()

        def stuck(conn):
            inside.set()
            time.sleep(1.5)

        threading.Thread(target=get_runtime().store._run, args=(stuck,)).start()
        inside.wait()
        pid = os.fork()
        if pid == 0:
            runlog.log_event("child.work")
            ok = not runlog.flush() and _forksafe.tainted("sqlite")
            os._exit(0 if ok else 5)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """
        proc = python(code, db_path, timeout=60)
        assert proc.stdout.strip() == "0", proc.stderr
        assert "forked while another thread was inside SQLite" in proc.stderr
        assert [r["event_type"] for r in rows(db_path)] == ["process.started", "process.exited"]

    def test_a_lock_another_thread_held_is_free_in_the_child(self, db_path: Path) -> None:
        """A state query in flight on another thread at fork time (its lock held) does
        not stop the child from querying."""
        runlog.init(db=str(db_path))
        runlog.log_event("x")
        assert runlog.flush()
        code = """
        import os, threading
        from runlog import state
        held, release = threading.Event(), threading.Event()

        def query_in_flight():  # no run here: queries go through the read-only store
            with state._read_only.lock:
                held.set()
                release.wait()

        threading.Thread(target=query_in_flight).start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            os._exit(0 if state.count_events("x") == 1 else 6)
        status = os.waitpid(pid, 0)[1]
        release.set()
        print(os.waitstatus_to_exitcode(status))
        """
        assert python(code, db_path, timeout=60).stdout.strip() == "0"
