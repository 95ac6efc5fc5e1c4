"""The current span across threads, thread pools and executors, and the switch to turn it off."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import wrapt

import runlog
from runlog import _context
from runlog._span import current_span_id
from runlog._tracing import span, traced_event

from support import python, rows


@pytest.fixture
def db(db_path: Path) -> Path:
    """runlog initialised in sync mode on a fresh database (no other setup)."""
    runlog.init(db=str(db_path), sync=True)
    return db_path


@pytest.fixture
def restore_patches() -> Iterator[None]:
    """Leave thread propagation as the test found it."""
    was = _context.installed()
    yield
    _context.uninstall()
    if was:
        _context.install()


def in_thread(work: Callable[[], Any]) -> Any:
    """Run ``work`` in a new ``threading.Thread`` and return its result."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    thread.join()
    return out[0]


@traced_event("leaf")
def leaf() -> int | None:
    """A traced call that reports the span it ran under."""
    return current_span_id()


def leaf_parents(db: Path) -> list[int | None]:
    """The ``parent_span_id`` of every ``leaf`` event, in order."""
    return [r["payload"]["parent_span_id"] for r in rows(db) if r["event_type"] == "leaf"]


class TestThreads:
    def test_thread_started_inside_a_span(self, db: Path) -> None:
        """A Thread started inside a span runs under it, with no setup at the call site."""
        with span("batch") as s:
            thread = threading.Thread(target=leaf)
            thread.start()
            thread.join()
        assert leaf_parents(db) == [s.span_id]
        assert "run" not in vars(thread)  # no thread -> run -> thread cycle is left behind

    def test_thread_started_outside_a_span_is_untouched(self, db: Path) -> None:
        """Outside a span a Thread starts as usual, with its ``run`` left alone."""
        with span("warm-up"):
            pass
        assert _context.installed()
        thread = threading.Thread(target=leaf)
        thread.start()
        thread.join()
        assert "run" not in vars(thread)
        assert leaf_parents(db) == [None]

    def test_thread_gets_a_copy_of_the_context(self, db: Path) -> None:
        """The thread sees the starter's context variables, and its changes stay its own."""
        var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
        var.set("starter")

        def work() -> str:
            seen = var.get()
            var.set("thread")
            return seen

        with span("batch"):
            assert in_thread(work) == "starter"
        assert var.get() == "starter"

    def test_timer_subclass(self, db: Path) -> None:
        """``threading.Timer`` (a Thread subclass) started inside a span runs under it."""
        with span("batch") as s:
            timer = threading.Timer(0, leaf)
            timer.start()
            timer.join()
        assert leaf_parents(db) == [s.span_id]


class TestThreadPools:
    def test_submit_and_map(self, db: Path) -> None:
        """Work submitted or mapped to a ThreadPoolExecutor runs under the submitter's span."""
        with ThreadPoolExecutor(2) as pool, span("batch") as s:
            assert pool.submit(leaf).result() is not None
            list(pool.map(lambda _: leaf(), range(3)))
        assert leaf_parents(db) == [s.span_id] * 4

    def test_context_is_per_work_item_not_per_worker(self, db: Path) -> None:
        """A reused worker thread runs each item under the span it was submitted in."""
        with ThreadPoolExecutor(1) as pool:
            with span("first") as first:
                pool.submit(leaf).result()
            with span("second") as second:
                pool.submit(leaf).result()
            pool.submit(leaf).result()
        assert leaf_parents(db) == [first.span_id, second.span_id, None]

    def test_exceptions_pass_through_the_future(self, db: Path) -> None:
        """An exception raised in pool work reaches the future as the same object."""
        error = LookupError("missing")

        def fail() -> None:
            raise error

        with ThreadPoolExecutor(1) as pool, span("batch"):
            assert pool.submit(fail).exception() is error

    def test_run_in_executor_and_to_thread(self, db: Path) -> None:
        """``loop.run_in_executor`` and ``asyncio.to_thread`` inside a span run under it."""

        async def main() -> int:
            loop = asyncio.get_running_loop()
            async with span("batch") as s:
                await loop.run_in_executor(None, leaf)
                await asyncio.to_thread(leaf)
                with ThreadPoolExecutor(1) as pool:
                    await loop.run_in_executor(pool, leaf)
            return s.span_id

        span_id = asyncio.run(main())
        assert leaf_parents(db) == [span_id] * 3


class TestSwitch:
    def test_install_and_uninstall_are_idempotent(self, restore_patches: None) -> None:
        """Installing twice patches once; uninstalling twice restores the originals."""
        _context.uninstall()
        original = threading.Thread.start
        _context.install()
        _context.install()
        assert _context.installed()
        assert threading.Thread.start.__wrapped__ is original  # type: ignore[attr-defined]
        _context.uninstall()
        _context.uninstall()
        assert not _context.installed()
        assert threading.Thread.start is original

    def test_uninstall_leaves_a_later_patch_alone(self, restore_patches: None) -> None:
        """A patch applied over runlog's is not removed by ``uninstall()``."""
        _context.install()

        def theirs(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            return wrapped(*args, **kwargs)

        wrapt.wrap_function_wrapper(ThreadPoolExecutor, "submit", theirs)
        try:
            _context.uninstall()
            assert ThreadPoolExecutor.__dict__["submit"]._self_wrapper is theirs
        finally:
            ThreadPoolExecutor.submit = ThreadPoolExecutor.__dict__["submit"].__wrapped__  # type: ignore[method-assign]

    def test_turned_off_by_environment(
        self, db_path: Path, monkeypatch: pytest.MonkeyPatch, restore_patches: None
    ) -> None:
        """With ``RUNLOG_THREAD_CONTEXT=0`` threads and pools do not inherit the span."""
        monkeypatch.setenv("RUNLOG_THREAD_CONTEXT", "0")
        runlog.init(db=str(db_path), sync=True)
        with span("batch"), ThreadPoolExecutor(1) as pool:
            in_thread(leaf)
            pool.submit(leaf).result()
        assert not _context.installed()
        assert leaf_parents(db_path) == [None, None]

    def test_setting_follows_the_runtime(
        self, db_path: Path, monkeypatch: pytest.MonkeyPatch, restore_patches: None
    ) -> None:
        """A new runtime applies its own setting at its first span."""
        monkeypatch.setenv("RUNLOG_THREAD_CONTEXT", "0")
        runlog.init(db=str(db_path), sync=True)
        with span("off"):
            assert not _context.installed()
        from runlog import _runs

        _runs.reset_for_tests()
        monkeypatch.delenv("RUNLOG_THREAD_CONTEXT")
        runlog.init(db=str(db_path), sync=True)
        with span("on") as s:
            in_thread(leaf)
        assert _context.installed()
        assert leaf_parents(db_path) == [s.span_id]


class TestFreshProcess:
    CODE = """
        import threading, runlog
        from concurrent.futures import ThreadPoolExecutor
        from runlog import _context
        from runlog._tracing import span, traced_event
        assert not _context.installed(), "import runlog must not patch threading"
        runlog.init()

        @traced_event("leaf")
        def leaf():
            pass

        with span("batch"):
            t = threading.Thread(target=leaf)
            t.start()
            t.join()
            with ThreadPoolExecutor(1) as pool:
                pool.submit(leaf).result()
    """

    @pytest.mark.parametrize(("setting", "inherits"), [(None, True), ("0", False)])
    def test_default_on_and_switch_off(
        self, db_path: Path, setting: str | None, inherits: bool
    ) -> None:
        """A fresh process propagates by default and not with ``RUNLOG_THREAD_CONTEXT=0``."""
        if setting is None:
            python(self.CODE, db_path)
        else:
            python(self.CODE, db_path, RUNLOG_THREAD_CONTEXT=setting)
        table = rows(db_path)
        (batch,) = [r["payload"]["span_id"] for r in table if r["event_type"] == "batch.started"]
        expected = batch if inherits else None
        assert leaf_parents(db_path) == [expected, expected]
