"""process.exited and lose-nothing on every way a process ends, with real signals."""

from __future__ import annotations

import signal
import subprocess
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from support import python, rows, spawn

N = 2_000  # enough events that some are certainly still queued when the process ends

LOG_AND_WAIT = f"""
import sys, time, runlog
runlog.init(role="victim")
for i in range({N}):
    runlog.log_event("work.step", {{"i": i}})
print("ready", flush=True)
"""


def program(after: str = "") -> str:
    """A process that logs N events, says "ready", then runs ``after``."""
    return LOG_AND_WAIT + after + "\n"


def exited(db: Path) -> dict[str, Any]:
    (row,) = [r for r in rows(db) if r["event_type"] == "process.exited"]
    assert row is rows(db)[-1] or row == rows(db)[-1], "process.exited is the last event"
    return row["payload"]  # type: ignore[no-any-return]


def steps(db: Path) -> list[int]:
    return [r["payload"]["i"] for r in rows(db) if r["event_type"] == "work.step"]


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", proc.stderr.read() if proc.stderr else line


class TestNormalExit:
    def test_normal_exit_logs_exited_and_keeps_everything(self, db_path: Path) -> None:
        """Falling off the end of the program writes every queued event, then process.exited."""
        python(program(""), db_path)
        assert steps(db_path) == list(range(N))
        assert exited(db_path) == {"reason": "normal", "exit_code": 0, "events_dropped": 0}

    @pytest.mark.parametrize(("call", "code"), [("sys.exit(3)", 3), ("sys.exit('bye')", 1)])
    def test_sys_exit_code_is_recorded(self, db_path: Path, call: str, code: int) -> None:
        """sys.exit(n) ends the run with exit_code n and the process still exits with n."""
        proc = python(program(call), db_path, check=False)
        assert proc.returncode == code
        assert exited(db_path)["exit_code"] == code
        assert steps(db_path) == list(range(N))

    def test_first_event_from_an_atexit_handler_is_kept(self, db_path: Path) -> None:
        """An event logged first during interpreter exit is written (synchronously)."""
        code = """
        import atexit, runlog
        atexit.register(lambda: runlog.log_event("late.event", {"a": 1}))
        """
        python(code, db_path)
        assert [r["event_type"] for r in rows(db_path)][:2] == ["process.started", "late.event"]


class TestUnhandledException:
    def test_exception_is_recorded_and_traceback_printed(self, db_path: Path) -> None:
        """An unhandled exception logs reason "exception" and Python still prints it and exits 1."""
        proc = python(program("raise KeyError('boom')"), db_path, check=False)
        assert proc.returncode == 1
        assert "Traceback" in proc.stderr and "KeyError: 'boom'" in proc.stderr
        payload = exited(db_path)
        assert payload["reason"] == "exception"
        assert payload["exit_code"] == 1
        assert payload["error_type"] == "KeyError"
        assert steps(db_path) == list(range(N))

    def test_existing_excepthook_still_runs(self, db_path: Path) -> None:
        """An excepthook installed before runlog keeps working."""
        code = """
        import sys
        sys.excepthook = lambda *a: print("custom hook", file=sys.stderr)
        import runlog
        runlog.init()
        raise ValueError("x")
        """
        proc = python(code, db_path, check=False)
        assert "custom hook" in proc.stderr
        assert exited(db_path)["reason"] == "exception"


class TestSignals:
    @pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc (Linux)")
    def test_runlogs_threads_leave_signals_to_the_programs(self, db_path: Path) -> None:
        """A signal goes to a thread that does not block it, and Python runs the handler
        only when the main thread next runs bytecode: landing on runlog's writer while
        the main thread sleeps, an application's SIGTERM handler would wait out the
        sleep (it did, once in a full suite run).  Every runlog thread blocks them."""
        import runlog
        from runlog._later import later
        from runlog_providers._streams import _reaper

        runlog.init(db=str(db_path))
        runlog.log_event("work.step", {"i": 0})
        later.submit(lambda: None)
        _reaper.start()
        assert runlog.flush(10)
        ours = [t for t in threading.enumerate() if t.name.startswith("runlog-")]
        names = {t.name for t in ours}
        assert {"runlog-writer", "runlog-lifecycle", "runlog-later"} <= names
        assert "runlog-stream-reaper" in names
        for t in [*ours, threading.main_thread()]:
            status = Path(f"/proc/self/task/{t.native_id}/status").read_text()
            mask = next(line for line in status.splitlines() if line.startswith("SigBlk:"))
            blocked = int(mask.split()[1], 16)
            for signum in (signal.SIGTERM, signal.SIGINT):
                takes = not blocked >> (signum - 1) & 1
                assert takes is (t is threading.main_thread()), f"{t.name}, {signum.name}"

    def test_sigterm_flushes_and_dies_by_the_signal(self, db_path: Path) -> None:
        """SIGTERM writes every event and process.exited, then the process dies by SIGTERM."""
        proc = spawn(program("time.sleep(600)"), db_path)
        wait_ready(proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == -signal.SIGTERM
        assert steps(db_path) == list(range(N))
        payload = exited(db_path)
        assert payload["reason"] == "signal"
        assert payload["signal"] == "SIGTERM"
        assert payload["exit_code"] == 128 + signal.SIGTERM

    def test_sigint_flushes_and_keeps_keyboardinterrupt(self, db_path: Path) -> None:
        """SIGINT still raises KeyboardInterrupt; the run records the signal and loses nothing."""
        proc = spawn(program("time.sleep(600)"), db_path)
        wait_ready(proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == -signal.SIGINT
        assert proc.stderr is not None and "KeyboardInterrupt" in proc.stderr.read()
        assert steps(db_path) == list(range(N))
        assert exited(db_path)["signal"] == "SIGINT"

    def test_application_sigterm_handler_keeps_working(self, db_path: Path) -> None:
        """A SIGTERM handler the application installed first still decides what happens."""
        code = textwrap.dedent("""
        import signal, sys, time
        def handler(signum, frame):
            print("app handler", flush=True)
            sys.exit(7)
        signal.signal(signal.SIGTERM, handler)
        """) + program("time.sleep(600)")
        proc = spawn(code, db_path)
        wait_ready(proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 7
        assert proc.stdout is not None and "app handler" in proc.stdout.read()
        payload = exited(db_path)
        assert (payload["reason"], payload["signal"], payload["exit_code"]) == (
            "signal",
            "SIGTERM",
            7,
        )
        assert steps(db_path) == list(range(N))

    def test_handler_installed_after_init_keeps_working(self, db_path: Path) -> None:
        """An application handler installed after init() replaces runlog's and still runs."""
        code = program(
            after="""
import signal
signal.signal(signal.SIGTERM, lambda s, f: sys.exit(9))
print("installed", flush=True)
time.sleep(600)
"""
        )
        proc = spawn(code, db_path)
        wait_ready(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "installed\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 9
        assert exited(db_path)["exit_code"] == 9
        assert steps(db_path) == list(range(N))

    def test_sigkill_in_sync_mode_loses_nothing_returned(self, db_path: Path) -> None:
        """With sync=True every log_event that returned is in the table even after SIGKILL."""
        code = """
        import runlog
        runlog.init(sync=True)
        i = 0
        while True:
            runlog.log_event("work.step", {"i": i})
            print(i, flush=True)
            i += 1
        """
        proc = spawn(code, db_path)
        assert proc.stdout is not None
        acknowledged = [int(proc.stdout.readline()) for _ in range(200)]
        proc.kill()
        proc.wait(60)
        written = set(steps(db_path))
        assert set(acknowledged) <= written
