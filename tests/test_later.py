"""Token counting off the caller's thread: the same event, its own moment, nothing lost.

Which counts go to the thread is decided per call when counting in this process
(``RUNLOG_TOKENIZER=inline``, the tests that spy on the in-process tokenizer); with the
helper process every count does (``test_counter.py``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import runlog
from runlog import _tokens
from runlog._later import LIMIT, Later, Phase
from runlog._llm import INLINE_COUNT_CHARS

from support import python, rows

MESSAGES = [{"role": "user", "content": "Count the tokens of this, please."}]


@pytest.fixture
def counting_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of every tiktoken count (a spy around the real count).

    The process's tokenizers are forgotten first, as before a process's first count
    (the loaded encodings stay: nothing is read again).  Counts are made in this process.
    """
    monkeypatch.setenv(_tokens.TOKENIZER_ENV, _tokens.INLINE)
    monkeypatch.setattr(_tokens, "_tokenizers", {})
    names: list[str] = []
    real = _tokens.Tokenizer.count_text

    def count_text(self: _tokens.Tokenizer, text: str) -> int:
        names.append(threading.current_thread().name)
        return real(self, text)

    monkeypatch.setattr(_tokens.Tokenizer, "count_text", count_text)
    return names


def completed(db: Path) -> list[dict[str, Any]]:
    return rows(db, "SELECT * FROM events WHERE event_type = 'llm_call.completed' ORDER BY id")


class TestCountedOffThread:
    def test_counting_never_runs_on_the_callers_thread(
        self, db_path: Path, counting_threads: list[str]
    ) -> None:
        """Input and output are counted on runlog's thread; the event is complete."""
        runlog.init(db=str(db_path))
        with runlog.llm_call("gpt-4o-mini", messages=MESSAGES) as call:
            call.record(text="Seven tokens, more or less, right here.")
        assert runlog.flush()
        (event,) = completed(db_path)
        payload = event["payload"]
        assert payload["token_source"] == "tiktoken"
        assert payload["input_tokens"] > 0 and payload["output_tokens"] > 0
        assert counting_threads and set(counting_threads) == {"runlog-later"}

    def test_short_text_with_the_encoding_loaded_is_counted_in_place(
        self, db_path: Path, counting_threads: list[str]
    ) -> None:
        """Once the encoding is loaded, a short reply costs tens of microseconds: it is
        counted by the writer as it writes the event, which keeps its place in the order."""
        runlog.init(db=str(db_path))
        assert _tokens.tokenizer_for("gpt-4o-mini") is not None  # loaded now
        with runlog.llm_call("gpt-4o-mini", messages=MESSAGES) as call:
            call.record(text="short")
        runlog.log_event("after.call")
        assert runlog.flush()
        types = [r["event_type"] for r in rows(db_path)]
        assert types[-2:] == ["llm_call.completed", "after.call"]
        assert counting_threads and set(counting_threads) == {"runlog-writer"}

    def test_long_text_is_counted_off_thread_even_when_loaded(
        self, db_path: Path, counting_threads: list[str]
    ) -> None:
        runlog.init(db=str(db_path))
        assert _tokens.tokenizer_for("gpt-4o-mini") is not None
        long = "word " * (INLINE_COUNT_CHARS // 5 + 1)
        with runlog.llm_call("gpt-4o-mini", messages=MESSAGES) as call:
            call.record(text=long)
        assert runlog.flush()
        assert completed(db_path)[0]["payload"]["output_tokens"] > INLINE_COUNT_CHARS // 5
        assert set(counting_threads) == {"runlog-later"}

    def test_usage_numbers_need_no_thread(self, db_path: Path, counting_threads: list[str]) -> None:
        """A call whose provider reported usage is logged at once, on the caller's thread."""
        runlog.init(db=str(db_path))
        submitted = runlog._later.later._submitted
        with runlog.llm_call("gpt-4o-mini", messages=MESSAGES) as call:
            call.record(input_tokens=5, output_tokens=7, text="ignored for counting")
        assert runlog._later.later._submitted == submitted
        assert runlog.flush()
        assert completed(db_path)[0]["payload"]["token_source"] == "usage"
        assert counting_threads == []

    def test_event_keeps_the_moment_and_run_of_its_end(
        self, db_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A count that takes long does not move the timestamp, latency or run."""
        monkeypatch.setenv(_tokens.TOKENIZER_ENV, _tokens.INLINE)
        monkeypatch.setattr(_tokens, "_tokenizers", {})  # as before the process's first count
        run_id = runlog.init(db=str(db_path))
        gate = threading.Event()
        real = _tokens.Tokenizer.count_messages

        def slow(self: _tokens.Tokenizer, messages: Any) -> int:
            gate.wait(10)
            return real(self, messages)

        monkeypatch.setattr(_tokens.Tokenizer, "count_messages", slow)
        with runlog.span("task"):
            with runlog.llm_call("gpt-4o-mini", messages=MESSAGES) as call:
                call.record(output_tokens=3)
            ended = time.time_ns()
        runlog.log_event("after.call")
        time.sleep(0.05)
        gate.set()
        assert runlog.flush()
        (event,) = completed(db_path)
        assert event["timestamp"] <= ended
        assert event["run_id"] == run_id
        assert event["payload"]["latency_ms"] < 50
        (task,) = rows(db_path, "SELECT * FROM events WHERE event_type = 'task.completed'")
        assert event["payload"]["parent_span_id"] == task["payload"]["span_id"]
        assert event["payload"]["input_tokens"] > 0

    def test_failed_call_counts_its_input_off_thread(
        self, db_path: Path, counting_threads: list[str]
    ) -> None:
        runlog.init(db=str(db_path))
        with pytest.raises(RuntimeError), runlog.llm_call("gpt-4o-mini", messages=MESSAGES):
            raise RuntimeError("boom")
        assert runlog.flush()
        (event,) = rows(db_path, "SELECT * FROM events WHERE event_type = 'llm_call.failed'")
        assert event["payload"]["input_tokens"] > 0
        assert set(counting_threads) == {"runlog-later"}

    def test_exit_waits_for_pending_counts(self, db_path: Path) -> None:
        """Calls counted in the background are written before process.exited, none lost."""
        python(
            """
            import runlog
            runlog.init()
            hi = [{"role": "user", "content": "hi"}]
            for i in range(200):
                with runlog.llm_call("gpt-4o-mini", messages=hi) as c:
                    c.record(text="hello " * i)
            """,
            db_path,
        )
        types = [r["event_type"] for r in rows(db_path)]
        assert types.count("llm_call.completed") == 200
        assert types[-1] == "process.exited"
        assert all(r["payload"]["output_tokens"] is not None for r in completed(db_path))

    def test_fork_with_counts_pending_logs_each_once(self, db_path: Path) -> None:
        """A child forked while counts are pending leaves them to the parent; it counts too."""
        python(
            """
            import os, runlog
            runlog.init()
            for i in range(50):
                with runlog.llm_call("gpt-4o-mini", messages=[{"role": "user", "content": "x"}]):
                    pass
                pid = os.fork() if i % 10 == 0 else 0
                if pid == 0 and i % 10 == 0:
                    with runlog.llm_call("gpt-4o-mini", messages=[{"role": "user", "content": ""}]):
                        pass
                    runlog.flush()
                    os._exit(0)
                if pid:
                    assert os.waitpid(pid, 0)[1] == 0
            """,
            db_path,
        )
        events = completed(db_path)
        parent = rows(db_path, "SELECT * FROM events ORDER BY id")[0]["run_id"]
        assert sum(e["run_id"] == parent for e in events) == 50
        children = [e for e in events if e["run_id"] != parent]
        assert len(children) == 5 and len({e["run_id"] for e in children}) == 5
        assert all(e["payload"]["input_tokens"] > 0 for e in events)


class TestForkDuringImport:
    @pytest.mark.parametrize("mode", ["inline", "process"])
    @pytest.mark.parametrize("delay_ms", [0, 5, 10, 15, 20, 25, 30, 40])
    def test_child_forked_while_tiktoken_is_imported_can_count(
        self, db_path: Path, delay_ms: int, mode: str
    ) -> None:
        """The first count imports tiktoken and loads an encoding (modules imported on
        the way) off the caller's thread; a fork in that window waits for them, so the
        child never inherits a half-imported module whose lock belongs to a thread it
        does not have (without the wait, delay 0 hangs the child).  With the helper
        process the modules are runlog's client of it, and the child counts through a
        helper of its own."""
        python(
            f"""
            import os, signal, sys, time, runlog
            runlog.init()
            with runlog.llm_call("gpt-4o-mini", messages=[{{"role": "user", "content": "x"}}]):
                pass  # the count, and the import of tiktoken, start on runlog's thread
            time.sleep({delay_ms} / 1000)
            pid = os.fork()
            if pid == 0:
                from runlog import _tokens
                ok = _tokens.count_text("hello world", "gpt-4o-mini") == 2
                os._exit(0 if ok else 3)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.01)
            else:
                os.kill(pid, signal.SIGKILL)
                sys.exit("the forked child hung importing tiktoken")
            assert status == 0, status
            """,
            db_path,
            timeout=60,
            RUNLOG_TOKENIZER=mode,
        )


class TestLater:
    def test_work_runs_in_order_and_drain_waits(self) -> None:
        later, done = Later(), []
        for i in range(100):
            later.submit(lambda i=i: done.append(i))
        assert later.drain(5)
        assert done == list(range(100))
        later.close(5)

    def test_past_the_limit_the_caller_does_the_work(self) -> None:
        """A stuck thread never makes the queue grow past LIMIT: the caller works instead."""
        later, gate, ran = Later(), threading.Event(), []
        later.submit(gate.wait)
        for _ in range(LIMIT + 10):
            later.submit(lambda: ran.append(threading.current_thread().name))
        caller = threading.current_thread().name
        assert ran.count(caller) >= 10
        gate.set()
        assert later.drain(10)
        assert len(ran) == LIMIT + 10

    def test_close_finishes_what_a_stuck_thread_holds(self) -> None:
        later, gate, ran = Later(), threading.Event(), []
        later.submit(lambda: gate.wait(10))
        later.submit(lambda: ran.append("queued"))
        assert later.drain(0.05) is False
        assert later.close(0.05) is False
        assert ran == ["queued"] and later.phase is Phase.CLOSED
        later.submit(lambda: ran.append("inline"))
        assert ran == ["queued", "inline"]
        gate.set()

    def test_a_fault_in_the_work_is_reported_not_raised(self) -> None:
        from runlog import _errors

        later, after = Later(), []
        before = _errors.internal_error_count()

        def broken() -> None:
            raise ValueError("bug")

        try:
            _errors.logger.disabled = True
            later.submit(broken)
            later.submit(lambda: after.append(1))
            assert later.drain(5)
            assert _errors.internal_error_count() == before + 1
            assert after == [1]
        finally:
            _errors.logger.disabled = False
            _errors._internal_error_count = before
            _errors._internal_errors.clear()
            later.close(5)
