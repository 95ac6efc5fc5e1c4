"""``@traced_event``, ``span()`` and the span lifecycle they share."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import traceback
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

import runlog
from runlog._span import EventNames, Span, current_span_id
from runlog._tracing import derive_event_type, span, traced_event

from support import python, rows


@pytest.fixture
def db(db_path: Path) -> Path:
    """runlog initialised in sync mode on a fresh database."""
    runlog.init(db=str(db_path), sync=True)
    return db_path


def events(db: Path) -> list[dict[str, Any]]:
    """Every event but the run's own ``process.*`` rows, payloads decoded."""
    return [r for r in rows(db) if not r["event_type"].startswith("process.")]


def only(db: Path) -> dict[str, Any]:
    """The one payload logged (besides ``process.*``)."""
    (event,) = events(db)
    return event["payload"]  # type: ignore[no-any-return]


class Boom(Exception):
    """The error the traced functions raise."""


def innermost(exc: BaseException) -> str:
    """The function name of the frame that raised ``exc``."""
    return traceback.extract_tb(exc.__traceback__)[-1].name


# -- @traced_event on plain functions -------------------------------------------------
class TestTracedEventPlain:
    def test_logs_one_event_when_the_call_ends(self, db: Path) -> None:
        """A call logs one event with duration, status, function and a span id."""

        @traced_event("task.claimed")
        def claim(n: int) -> int:
            time.sleep(0.01)
            return n + 1

        assert claim(1) == 2
        (event,) = events(db)
        assert event["event_type"] == "task.claimed"
        payload = event["payload"]
        assert payload["status"] == "ok"
        assert payload["function"].endswith("claim")
        assert payload["duration_ms"] >= 10
        assert payload["parent_span_id"] is None
        assert isinstance(payload["span_id"], int)

    @pytest.mark.parametrize("form", ["bare", "empty", "positional", "keyword"])
    def test_with_and_without_parentheses(self, db: Path, form: str) -> None:
        """``@traced_event``, ``()``, ``("name")`` and ``(event_type="name")`` all work."""

        def work() -> str:
            return "done"

        decorated = {
            "bare": lambda: traced_event(work),
            "empty": lambda: traced_event()(work),
            "positional": lambda: traced_event("job.done")(work),
            "keyword": lambda: traced_event(event_type="job.done")(work),
        }[form]()
        assert decorated() == "done"
        expected = "job.done" if form in ("positional", "keyword") else derive_event_type(work)
        assert [e["event_type"] for e in events(db)] == [expected]

    @pytest.mark.parametrize(
        ("module", "qualname", "expected"),
        [
            ("app.jobs", "TaskQueue.claimNext", "app.jobs.task_queue.claim_next"),
            ("app", "HTTPClient.get", "app.http_client.get"),
            ("app", "outer.<locals>.inner", "app.outer.inner"),
            ("app", "<lambda>", "app.lambda"),
        ],
    )
    def test_default_name_is_lower_case_dotted(
        self, module: str, qualname: str, expected: str
    ) -> None:
        """The derived name is ``module.qualname``, lower case, CamelCase to snake_case."""

        def func() -> None: ...

        func.__module__, func.__qualname__ = module, qualname
        assert derive_event_type(func) == expected

    def test_error_passes_through_unchanged(self, db: Path) -> None:
        """The same exception object reaches the caller, raised from the user's frame."""
        error = Boom("no task")

        @traced_event("task.claimed")
        def claim() -> None:
            raise error

        with pytest.raises(Boom) as info:
            claim()
        assert info.value is error
        assert innermost(info.value) == "claim"
        assert info.value.__context__ is None and info.value.__cause__ is None
        payload = only(db)
        assert payload["status"] == "error"
        assert payload["error_type"] == "Boom"
        assert payload["error"] == "no task"

    def test_keyboard_interrupt_is_not_a_failure(self, db: Path) -> None:
        """A BaseException that is not an Exception ends the call as ``cancelled``."""

        @traced_event("job.run")
        def run() -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run()
        payload = only(db)
        assert payload["status"] == "cancelled"
        assert payload["cancelled_by"] == "KeyboardInterrupt"
        assert "error_type" not in payload

    def test_metadata_is_preserved(self) -> None:
        """Name, docstring, signature and kind answers are those of the function."""

        @traced_event
        def claim(queue: str, *, limit: int = 1) -> list[int]:
            """Claim tasks."""
            return []

        assert claim.__name__ == "claim"
        assert claim.__doc__ == "Claim tasks."
        assert str(inspect.signature(claim)) == "(queue: 'str', *, limit: 'int' = 1) -> 'list[int]'"
        assert not inspect.iscoroutinefunction(claim)
        assert not inspect.isgeneratorfunction(claim)

    def test_nested_calls_form_a_tree(self, db: Path) -> None:
        """A traced call inside another has the outer call's span_id as parent."""

        @traced_event("inner")
        def inner() -> int | None:
            return current_span_id()

        @traced_event("outer")
        def outer() -> int | None:
            return inner()

        inner_span = outer()
        first, second = events(db)
        assert first["event_type"] == "inner"
        assert first["payload"]["span_id"] == inner_span
        assert first["payload"]["parent_span_id"] == second["payload"]["span_id"]
        assert current_span_id() is None


# -- recording arguments and results --------------------------------------------------
class TestRecording:
    def test_selected_arguments_by_name(self, db: Path) -> None:
        """Named arguments are recorded, positional, keyword or default alike."""

        @traced_event("task.claimed", record_args=("queue", "limit"))
        def claim(queue: str, secret: str, limit: int = 5) -> None: ...

        claim("q1", "hunter2")
        payload = only(db)
        assert (payload["queue"], payload["limit"]) == ("q1", 5)
        assert "secret" not in payload

    def test_all_arguments_but_self(self, db: Path) -> None:
        """``record_args=True`` records every argument of a method except ``self``."""

        class Worker:
            @traced_event("task.run", record_args=True)
            def run(self, task_id: int, *, retries: int = 0) -> None: ...

        Worker().run(7, retries=2)
        payload = only(db)
        assert payload["task_id"] == 7 and payload["retries"] == 2
        assert "self" not in payload

    def test_argument_hook(self, db: Path) -> None:
        """A callable gets the bound arguments and returns the fields to add."""

        @traced_event("llm.ask", record_args=lambda a: {"prompt_chars": len(a["prompt"])})
        def ask(prompt: str) -> str:
            return prompt.upper()

        assert ask("hello") == "HELLO"
        assert only(db)["prompt_chars"] == 5

    def test_result_hook_and_true(self, db: Path) -> None:
        """``record_result`` adds fields from the return value, or the value as ``result``."""

        @traced_event("a", record_result=lambda r: {"count": len(r)})
        def listed() -> list[int]:
            return [1, 2, 3]

        @traced_event("b", record_result=True)
        def answered() -> dict[str, int]:
            return {"x": 1}

        listed()
        answered()
        first, second = events(db)
        assert first["payload"]["count"] == 3
        assert second["payload"]["result"] == {"x": 1}

    @pytest.mark.parametrize("broken", ["raises", "not_a_mapping"])
    def test_broken_hook_never_breaks_the_call(
        self, db: Path, broken: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A failing hook is marked in the event and warned once; the call still returns."""

        def hook(result: int) -> Any:
            if broken == "raises":
                raise RuntimeError("bad hook")
            return 42

        @traced_event(f"hooked.{broken}", record_result=hook)
        def compute() -> int:
            return 7

        with caplog.at_level(logging.WARNING, logger="runlog"):
            assert compute() == 7
            assert compute() == 7
        first, second = events(db)
        assert first["payload"]["status"] == "ok"
        (error,) = first["payload"]["_runlog"]["hook_error"]
        assert error.startswith("record_result")
        assert second["payload"]["_runlog"] == first["payload"]["_runlog"]
        warnings = [r for r in caplog.records if "record_result hook" in r.getMessage()]
        assert len(warnings) == 1

    def test_both_hooks_broken_are_both_marked(self, db: Path) -> None:
        """Failures of the argument hook and of the result hook are both kept."""

        def bad(value: Any) -> Any:
            raise ValueError("nope")

        @traced_event("twice.broken", record_args=bad, record_result=bad)
        def work(x: int) -> int:
            return x

        assert work(1) == 1
        errors = only(db)["_runlog"]["hook_error"]
        assert [e.split()[0] for e in errors] == ["record_args", "record_result"]

    def test_unserialisable_argument_is_kept_as_repr(self, db: Path) -> None:
        """An argument JSON cannot hold is stored as its repr, marked by the payload layer."""

        class Opaque:
            def __repr__(self) -> str:
                return "<Opaque>"

        @traced_event("opaque", record_args=("thing",))
        def take(thing: Opaque) -> None: ...

        take(Opaque())
        payload = only(db)
        assert payload["thing"] == "<Opaque>"
        assert payload["_runlog"]["repr"] == ["thing"]


class TestDecorationErrors:
    def test_bad_event_type(self) -> None:
        """A non-str or empty event type raises at once."""
        with pytest.raises(TypeError, match="as a str"):
            traced_event(42)  # type: ignore[call-overload]
        with pytest.raises(ValueError, match="non-empty"):
            traced_event("")

    def test_unknown_argument_name(self) -> None:
        """Recording an argument the function does not have raises at decoration time."""
        with pytest.raises(ValueError, match="not among its parameters"):

            @traced_event("x", record_args=("nope",))
            def work(a: int) -> None: ...

    def test_single_string_is_refused(self) -> None:
        """``record_args="name"`` is refused with a hint to pass a tuple."""
        with pytest.raises(TypeError, match=r"\('a',\)"):
            traced_event("x", record_args="a")(lambda a: a)

    def test_reserved_names_are_refused(self) -> None:
        """An argument that would overwrite ``status`` and friends raises at once."""
        with pytest.raises(ValueError, match="status"):

            @traced_event("x", record_args=("status",))
            def work(status: str) -> None: ...

    def test_classes_are_refused(self) -> None:
        """Decorating a class raises, suggesting its methods instead."""
        with pytest.raises(TypeError, match="methods"):
            traced_event(type("Thing", (), {}))

    def test_result_of_async_generator_is_refused(self) -> None:
        """``record_result`` on an async generator (which returns nothing) raises."""

        async def agen() -> AsyncIterator[int]:
            yield 1

        with pytest.raises(TypeError, match="returns no value"):
            traced_event("x", record_result=True)(agen)


# -- methods ---------------------------------------------------------------------------
class Service:
    """A class with every kind of method, traced above and below the method decorators."""

    base = 10

    @traced_event("svc.method", record_args=True)
    def method(self, x: int) -> int:
        return self.base + x

    @traced_event("svc.class_above", record_args=True)
    @classmethod
    def class_above(cls, x: int) -> int:
        return cls.base + x

    @classmethod
    @traced_event("svc.class_below", record_args=True)
    def class_below(cls, x: int) -> int:
        return cls.base + x

    @traced_event("svc.static_above", record_args=True)
    @staticmethod
    def static_above(x: int) -> int:
        return x

    @staticmethod
    @traced_event("svc.static_below", record_args=True)
    def static_below(x: int) -> int:
        return x

    @traced_event("svc.fail")
    def fail(self) -> None:
        raise Boom("method failed")


class TestMethods:
    @pytest.mark.parametrize(
        ("call", "expected", "event_type"),
        [
            (lambda: Service().method(1), 11, "svc.method"),
            (lambda: Service.method(Service(), 1), 11, "svc.method"),
            (lambda: Service.class_above(1), 11, "svc.class_above"),
            (lambda: Service().class_above(1), 11, "svc.class_above"),
            (lambda: Service.class_below(1), 11, "svc.class_below"),
            (lambda: Service.static_above(1), 1, "svc.static_above"),
            (lambda: Service().static_above(1), 1, "svc.static_above"),
            (lambda: Service.static_below(1), 1, "svc.static_below"),
        ],
        ids=[
            "instance",
            "via-class",
            "classmethod-above",
            "classmethod-via-instance",
            "classmethod-below",
            "staticmethod-above",
            "staticmethod-via-instance",
            "staticmethod-below",
        ],
    )
    def test_every_kind_of_method(
        self, db: Path, call: Callable[[], int], expected: int, event_type: str
    ) -> None:
        """Methods of every kind return their result and record their argument, not self/cls."""
        assert call() == expected
        (event,) = events(db)
        assert event["event_type"] == event_type
        assert {k: v for k, v in event["payload"].items() if k in ("x", "self", "cls")} == {"x": 1}

    def test_decorating_a_bound_method(self, db: Path) -> None:
        """A bound method decorated directly records its own first argument."""

        class Plain:
            def add(self, x: int) -> int:
                return x + 1

        traced = traced_event("plain.bound", record_args=("x",))(Plain().add)
        assert traced(2) == 3
        assert only(db)["x"] == 2

    def test_method_error(self, db: Path) -> None:
        """A method's exception passes through and is logged as an error."""
        with pytest.raises(Boom, match="method failed"):
            Service().fail()
        assert only(db)["error_type"] == "Boom"

    def test_method_signature(self) -> None:
        """Bound methods keep their signature without ``self``."""
        assert str(inspect.signature(Service().method)) == "(x: 'int') -> 'int'"
        assert str(inspect.signature(Service.class_above)) == "(x: 'int') -> 'int'"


# -- coroutines ------------------------------------------------------------------------
class TestCoroutines:
    def test_result_and_timing_cover_the_awaited_work(self, db: Path) -> None:
        """An ``async def`` is timed until it returns, not until it creates its coroutine."""

        @traced_event("fetch")
        async def fetch(x: int) -> int:
            await asyncio.sleep(0.01)
            return x * 2

        assert inspect.iscoroutinefunction(fetch)
        assert asyncio.run(fetch(4)) == 8
        payload = only(db)
        assert payload["status"] == "ok"
        assert payload["duration_ms"] >= 9

    def test_error_passes_through_unchanged(self, db: Path) -> None:
        """An async function's exception reaches the caller as the same object."""
        error = Boom("async")

        @traced_event("fetch")
        async def fetch() -> None:
            await asyncio.sleep(0)
            raise error

        with pytest.raises(Boom) as info:
            asyncio.run(fetch())
        assert info.value is error
        assert innermost(info.value) == "fetch"
        assert only(db)["error"] == "async"

    def test_cancellation_is_not_a_failure(self, db: Path) -> None:
        """A cancelled task logs ``status: cancelled`` by ``CancelledError``."""
        started = asyncio.Event()

        @traced_event("wait")
        async def wait() -> None:
            started.set()
            await asyncio.Event().wait()

        async def main() -> None:
            task = asyncio.create_task(wait())
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        payload = only(db)
        assert payload["status"] == "cancelled"
        assert payload["cancelled_by"] == "CancelledError"

    def test_bad_arguments_raise_at_the_call(self, db: Path) -> None:
        """Calling with wrong arguments raises at the call, not when awaited or iterated."""

        @traced_event
        async def fetch(x: int) -> int:
            return x

        @traced_event
        def rows(n: int) -> Iterator[int]:
            yield n

        @traced_event
        async def arows(n: int) -> AsyncIterator[int]:
            yield n

        for func in (fetch, rows, arows):
            with pytest.raises(TypeError):
                func(1, 2)  # type: ignore[call-arg]
        assert events(db) == []

    def test_async_method(self, db: Path) -> None:
        """An ``async def`` method is traced and keeps its kind."""

        class Client:
            @traced_event("client.get", record_args=("key",))
            async def get(self, key: str) -> str:
                return key

        assert inspect.iscoroutinefunction(Client().get)
        assert asyncio.run(Client().get("k")) == "k"
        assert only(db)["key"] == "k"


# -- generators ------------------------------------------------------------------------
class TestGenerators:
    def test_logged_when_exhausted_with_return_value(self, db: Path) -> None:
        """A generator logs once, at its end, and its return value reaches ``yield from``."""

        @traced_event("rows", record_result=lambda r: {"returned": r})
        def produce(n: int) -> Generator[int, None, str]:
            yield from range(n)
            return "end"

        def consume() -> Iterator[int]:
            result = yield from produce(3)
            assert result == "end"

        assert inspect.isgeneratorfunction(produce)
        assert list(consume()) == [0, 1, 2]
        payload = only(db)
        assert payload["status"] == "ok" and payload["returned"] == "end"

    def test_time_inside_the_generator_only(self, db: Path) -> None:
        """``duration_ms`` counts time inside the generator; ``elapsed_ms`` the whole way."""

        @traced_event("slow")
        def slow() -> Iterator[int]:
            time.sleep(0.01)
            yield 1

        for _ in slow():
            time.sleep(0.01)  # the consumer's time is not the generator's
        payload = only(db)
        assert payload["duration_ms"] >= 10
        assert payload["elapsed_ms"] - payload["duration_ms"] >= 10

    def test_closed_early_is_cancelled(self, db: Path) -> None:
        """Breaking out of the loop closes the generator: ``cancelled`` by GeneratorExit."""
        closed = []

        @traced_event("stream")
        def stream() -> Generator[int, None, None]:
            try:
                yield from range(10)
            finally:
                closed.append(current_span_id())

        gen = stream()
        assert next(gen) == 0
        gen.close()
        payload = only(db)
        assert payload["status"] == "cancelled"
        assert payload["cancelled_by"] == "GeneratorExit"
        assert closed == [payload["span_id"]]  # its cleanup ran inside its span

    def test_error_inside_passes_through(self, db: Path) -> None:
        """An exception raised inside the generator reaches the consumer unchanged."""
        error = Boom("mid-stream")

        @traced_event("stream")
        def stream() -> Iterator[int]:
            yield 1
            raise error

        with pytest.raises(Boom) as info:
            list(stream())
        assert info.value is error
        assert innermost(info.value) == "stream"
        assert only(db)["error_type"] == "Boom"

    def test_send_and_throw_reach_the_generator(self, db: Path) -> None:
        """Values sent and exceptions thrown in are delivered to the user's generator."""

        @traced_event("echo")
        def echo() -> Generator[Any, Any, None]:
            received = None
            while True:
                try:
                    received = yield received
                except Boom:
                    received = "caught"

        gen = echo()
        next(gen)
        assert gen.send("a") == "a"
        assert gen.throw(Boom()) == "caught"
        gen.close()
        assert only(db)["status"] == "cancelled"

    def test_span_is_current_only_inside_the_generator(self, db: Path) -> None:
        """Between two yields the consumer is not inside the generator's span."""
        inside: list[int | None] = []

        @traced_event("gen")
        def gen() -> Iterator[int]:
            inside.append(current_span_id())
            yield 1
            inside.append(current_span_id())
            yield 2

        outside = [current_span_id() for _ in gen()]
        assert outside == [None, None]
        span_id = only(db)["span_id"]
        assert inside == [span_id, span_id]

    def test_never_advanced_logs_nothing(self, db: Path) -> None:
        """A generator whose body never ran logs no event."""

        @traced_event("lazy")
        def lazy() -> Iterator[int]:
            yield 1

        gen = lazy()
        del gen
        assert events(db) == []


class TestAsyncGenerators:
    def test_logged_when_exhausted(self, db: Path) -> None:
        """An async generator logs once when exhausted, timed inside its steps."""

        @traced_event("agen")
        async def agen(n: int) -> AsyncIterator[int]:
            for i in range(n):
                await asyncio.sleep(0.005)
                yield i

        async def main() -> list[int]:
            return [x async for x in agen(2)]

        assert inspect.isasyncgenfunction(agen)
        assert asyncio.run(main()) == [0, 1]
        payload = only(db)
        assert payload["status"] == "ok"
        assert payload["duration_ms"] >= 9

    def test_closed_early_is_cancelled(self, db: Path) -> None:
        """``aclose()`` before the end logs ``cancelled`` and runs the cleanup in the span."""
        closed: list[int | None] = []

        @traced_event("agen")
        async def agen() -> AsyncGenerator[int, None]:
            try:
                for i in range(10):
                    yield i
            finally:
                await asyncio.sleep(0)
                closed.append(current_span_id())

        async def main() -> None:
            gen = agen()
            assert await gen.__anext__() == 0
            await gen.aclose()

        asyncio.run(main())
        payload = only(db)
        assert payload["status"] == "cancelled"
        assert closed == [payload["span_id"]]

    def test_error_and_athrow(self, db: Path) -> None:
        """Exceptions thrown in are delivered; one raised inside passes through unchanged."""
        error = Boom("async stream")

        @traced_event("agen")
        async def agen() -> AsyncGenerator[str, None]:
            try:
                yield "first"
            except KeyError:
                yield "caught"
            raise error

        async def main() -> None:
            gen = agen()
            assert await gen.__anext__() == "first"
            assert await gen.athrow(KeyError()) == "caught"
            with pytest.raises(Boom) as info:
                await gen.__anext__()
            assert info.value is error

        asyncio.run(main())
        assert only(db)["error"] == "async stream"


# -- span() ----------------------------------------------------------------------------
class TestSpan:
    def test_started_and_completed(self, db: Path) -> None:
        """A span logs ``.started`` and ``.completed`` with its fields and ``set()`` ones."""
        with span("task", task_id=7) as s:
            s.set(result="done")
        started, completed = events(db)
        assert started["event_type"] == "task.started"
        assert started["payload"] == {"span_id": s.span_id, "parent_span_id": None, "task_id": 7}
        assert completed["event_type"] == "task.completed"
        assert completed["payload"]["task_id"] == 7
        assert completed["payload"]["result"] == "done"
        assert completed["payload"]["status"] == "ok"
        assert completed["payload"]["duration_ms"] >= 0

    def test_failed(self, db: Path) -> None:
        """An exception leaving the block logs ``.failed`` and passes through."""
        error = Boom("broken")
        with pytest.raises(Boom) as info, span("task"):
            raise error
        assert info.value is error
        failed = events(db)[-1]
        assert failed["event_type"] == "task.failed"
        assert failed["payload"]["error_type"] == "Boom"
        assert failed["payload"]["error"] == "broken"

    def test_nesting_gives_parent_ids(self, db: Path) -> None:
        """Nested spans and traced calls name their enclosing span as parent."""

        @traced_event("leaf")
        def leaf() -> None: ...

        with span("outer") as outer, span("inner") as inner:
            leaf()
        assert current_span_id() is None
        by_type = {e["event_type"]: e["payload"] for e in events(db)}
        assert by_type["outer.started"]["parent_span_id"] is None
        assert by_type["inner.started"]["parent_span_id"] == outer.span_id
        assert by_type["leaf"]["parent_span_id"] == inner.span_id
        assert len({outer.span_id, inner.span_id, by_type["leaf"]["span_id"]}) == 3

    def test_async_with_across_await_and_gather(self, db: Path) -> None:
        """Across ``await``, ``gather`` and ``create_task``, children name the span as parent."""

        @traced_event("child")
        async def child(delay: float) -> int | None:
            await asyncio.sleep(delay)
            return current_span_id()

        async def main() -> tuple[int, list[int | None]]:
            async with span("batch") as s:
                await asyncio.sleep(0)
                parents = list(await asyncio.gather(child(0.002), child(0)))
                task = asyncio.create_task(child(0))
                await task
            return s.span_id, parents

        span_id, _ = asyncio.run(main())
        children = [e["payload"] for e in events(db) if e["event_type"] == "child"]
        assert len(children) == 3
        assert all(c["parent_span_id"] == span_id for c in children)

    def test_as_decorator_sync_and_async(self, db: Path) -> None:
        """``@span(name)`` opens a new span per call of sync and async functions."""

        @span("job", kind="sync")
        def job(x: int) -> int:
            return x

        @span("ajob", kind="async")
        async def ajob(x: int) -> int:
            await asyncio.sleep(0)
            return x

        assert job(1) == 1 and job(2) == 2
        assert asyncio.run(ajob(3)) == 3
        assert inspect.iscoroutinefunction(ajob)
        types = [e["event_type"] for e in events(db)]
        assert types == ["job.started", "job.completed"] * 2 + ["ajob.started", "ajob.completed"]
        ids = {e["payload"]["span_id"] for e in events(db)}
        assert len(ids) == 3
        assert events(db)[-1]["payload"]["kind"] == "async"

    def test_decorator_on_failing_function(self, db: Path) -> None:
        """``@span(name)`` on a function that raises logs ``.failed`` and re-raises."""

        @span("job")
        def job() -> None:
            raise Boom("x")

        with pytest.raises(Boom):
            job()
        assert [e["event_type"] for e in events(db)] == ["job.started", "job.failed"]

    def test_cancelled_block(self, db: Path) -> None:
        """A task cancelled inside ``async with span`` logs ``.completed``, ``cancelled``."""

        async def main() -> None:
            async def body() -> None:
                async with span("wait"):
                    await asyncio.Event().wait()

            task = asyncio.create_task(body())
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        end = events(db)[-1]
        assert end["event_type"] == "wait.completed"
        assert end["payload"]["status"] == "cancelled"

    def test_programming_errors_raise(self, db: Path) -> None:
        """Bad names, reserved fields and re-entering one span object raise at once."""
        with pytest.raises(TypeError, match="needs a name"):
            span(lambda: None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="non-empty"):
            span("")
        with pytest.raises(ValueError, match="status"):
            span("task", status="new")
        scope = span("task")
        with scope as s:
            with pytest.raises(RuntimeError, match="already entered"), scope:
                pass
            with pytest.raises(ValueError, match="duration_ms"):
                s.set(duration_ms=1)

    def test_field_called_name(self, db: Path) -> None:
        """The span's name is positional-only, so a field may be called ``name``."""
        with span("user.lookup", name="ada"):
            pass
        assert events(db)[0]["payload"]["name"] == "ada"

    def test_scope_is_reusable_after_exit(self, db: Path) -> None:
        """One ``span()`` object used for two blocks in turn logs two spans."""
        scope = span("again")
        with scope as first:
            pass
        with scope as second:
            pass
        assert first.span_id != second.span_id
        assert len(events(db)) == 4


# -- the lifecycle object itself (what llm_call and stream wrappers drive) --------------
class TestSpanLifecycle:
    def test_only_end_event_with_custom_duration_key(self, db: Path) -> None:
        """A span without a start event logs just its end, under its own duration name."""
        names = EventNames(None, "llm_call.completed", "llm_call.failed", "latency_ms")
        life = Span(names, {"model_name": "m"})
        life.start()
        assert life.finish(input_tokens=3)
        payload = only(db)
        assert payload["model_name"] == "m" and payload["input_tokens"] == 3
        assert "latency_ms" in payload and "duration_ms" not in payload

    def test_ends_exactly_once(self, db: Path) -> None:
        """finish, fail and cancel after the first end do nothing and return False."""
        life = Span(EventNames.single("once"))
        assert life.fail(Boom("first"))
        assert not life.finish()
        assert not life.cancel()
        assert not life.end(Boom("again"))
        assert life.done
        assert only(db)["error"] == "first"

    def test_ends_once_across_threads(self, db: Path) -> None:
        """Racing threads finishing one span log exactly one event."""
        life = Span(EventNames.single("race"))
        barrier = threading.Barrier(8)
        wins: list[bool] = []

        def finish() -> None:
            barrier.wait()
            wins.append(life.finish())

        threads = [threading.Thread(target=finish) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wins.count(True) == 1
        assert len(events(db)) == 1

    def test_stop_freezes_the_duration(self, db: Path) -> None:
        """After ``stop()`` the clock is frozen: later work is not in the duration."""
        life = Span(EventNames.single("stopped"))
        life.stop()
        time.sleep(0.02)
        later = life.elapsed_ms()
        life.stop()  # the first stop wins
        assert life.finish()
        assert only(db)["duration_ms"] <= later - 20

    def test_unserialisable_fields_never_raise(self, db: Path) -> None:
        """Any object in the fields is stored (as its repr) rather than raising."""
        life = Span(EventNames.single("odd"), {"obj": object()})
        assert life.finish()
        assert only(db)["obj"].startswith("<object object")

    def test_implicit_run_without_init(self, tmp_path: Path) -> None:
        """Without ``init()`` a span starts the run implicitly and loses nothing."""
        with span("early"):
            pass
        runlog.flush()
        types = [r["event_type"] for r in rows(tmp_path / "runlog.db")]
        assert types[:3] == ["process.started", "early.started", "early.completed"]


class TestFork:
    def test_forked_child_is_a_new_tree(self, db_path: Path) -> None:
        """In a forked child, span ids restart and the parent's span is neither parent nor ended."""
        python(
            """
            import os, runlog
            from runlog._tracing import span
            runlog.init(sync=True)
            with span("outer"):
                pid = os.fork()
                if pid == 0:
                    with span("kid"):
                        pass
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
            """,
            db_path,
            RUNLOG_SYNC="1",
        )
        table = rows(db_path)
        parent_run = table[0]["run_id"]
        kid = [r for r in table if r["event_type"].startswith("kid.")]
        outer = [r for r in table if r["event_type"].startswith("outer.")]
        assert {r["run_id"] for r in outer} == {parent_run}
        assert [r["event_type"] for r in outer] == ["outer.started", "outer.completed"]
        assert {r["run_id"] for r in kid} != {parent_run}
        assert kid[0]["parent_run_id"] == parent_run
        assert kid[0]["payload"]["parent_span_id"] is None
        assert kid[0]["payload"]["span_id"] == 1
