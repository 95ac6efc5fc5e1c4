"""``@traced_event`` and ``span()``: thin shells that drive a :class:`~runlog._span.Span`.

A decorator looks at the function once, at decoration time, and picks one of four
wrappers (plain, coroutine, generator, async generator); all four open a span, make it
current while the user's code runs, and end it with the outcome.  wrapt makes the
wrapper universal (functions, methods, classmethods, staticmethods) and keeps the
name, docstring, ``inspect.signature`` and the ``iscoroutinefunction`` /
``isgeneratorfunction`` answers of the original.

Coroutines and generators: the function is called at once, so wrong arguments raise
at the call as they would without runlog, and the span opens when the coroutine or
generator first runs (its body does not run before).  A generator's span is current
only while the generator's own code runs (never in the consumer's code between two
``yield``) and ends when the generator returns, raises or is closed; ``duration_ms`` is
the time spent inside the generator, ``elapsed_ms`` the wall time from first step to
end.  A coroutine never awaited, or a generator never advanced, logs nothing.

Exceptions pass through as they are (same object, same traceback).  Mistakes in how
a decorator is used raise at decoration time; at call time runlog never raises: a
hook that fails is reported once through the ``runlog`` logger and noted in the event
under ``_runlog.hook_error``, and the call returns its result as usual.
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable, Mapping
from contextvars import Token
from types import TracebackType
from typing import Any, TypeVar, Union, overload

import wrapt

from . import _scrub
from ._errors import warn_once
from ._log import check_event_type
from ._payload import MARK
from ._span import EventNames, Span, check_fields, safe_str

F = TypeVar(
    "F", bound=Union[Callable[..., Any], "classmethod[Any, Any, Any]", "staticmethod[Any, Any]"]
)
ArgsHook = Callable[[dict[str, Any]], Mapping[str, Any]]
ResultHook = Callable[[Any], Mapping[str, Any]]
Wrapper = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]
_recipe_keys = itertools.count()


# -- what a decorated callable logs, fixed at decoration time --------------------------
class _Recipe:
    """How calls of one decorated callable are logged."""

    __slots__ = (
        "arg_names",
        "args_hook",
        "fields",
        "key",
        "label",
        "names",
        "result_hook",
        "signatures",
    )

    def __init__(self, names: EventNames, fields: dict[str, Any], label: str) -> None:
        self.key = next(_recipe_keys)
        # names this decorated callable in warn_once keys (an id() can be reused)
        self.names = names
        self.fields = fields
        self.label = label
        self.signatures: tuple[inspect.Signature, inspect.Signature] | None = None
        self.arg_names: tuple[str, ...] | None = None
        self.args_hook: ArgsHook | None = None
        self.result_hook: ResultHook | None = None

    def begin(self, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Span:
        """Open (and start) the span of one call."""
        fields = dict(self.fields)
        if self.signatures is not None:
            self._add_arguments(fields, instance, args, kwargs)
        return Span(self.names, fields).start()

    def done(self, span: Span, result: Any) -> None:
        """End the span of a call that returned ``result``."""
        if self.result_hook is None:
            span.end()
        else:
            span.end(None, _hook_fields(self, "record_result", self.result_hook, result, span))

    def _add_arguments(
        self,
        fields: dict[str, Any],
        instance: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        assert self.signatures is not None
        # wrapt passes the instance (or class) of a bound call apart from ``args``.
        signature = self.signatures[instance is not None]
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return  # the call itself raises the TypeError
        bound.apply_defaults()
        values = bound.arguments
        if self.args_hook is not None:
            chosen = _hook_fields(self, "record_args", self.args_hook, dict(values), None)
        elif self.arg_names is None:
            chosen = dict(values)
        else:
            chosen = {name: values[name] for name in self.arg_names if name in values}
        # Secret-named arguments are scrubbed by the encoder; URLs lose their passwords here.
        fields.update(_scrub.active().strings(chosen))


def _hook_fields(
    recipe: _Recipe, which: str, hook: Callable[[Any], Any], value: Any, span: Span | None
) -> dict[str, Any]:
    """The fields a user hook returns, or a ``_runlog.hook_error`` marker if it fails."""
    try:
        out = hook(value)
        if isinstance(out, Mapping):
            return dict(out)
        problem = f"returned {type(out).__qualname__}, not a mapping"
    except Exception as exc:
        problem = f"raised {type(exc).__qualname__}: {safe_str(exc)}"
    warn_once(
        f"hook:{recipe.key}:{which}",
        "runlog: the %s hook of %s %s; the event is logged without its fields",
        which,
        recipe.label,
        problem,
    )
    errors = [f"{which} {problem}"]
    earlier = span.fields.get(MARK) if span is not None else None
    if isinstance(earlier, dict) and isinstance(earlier.get("hook_error"), list):
        errors = earlier["hook_error"] + errors
    return {MARK: {"hook_error": errors}}


# -- the four wrappers -------------------------------------------------------------
def _plain(recipe: _Recipe) -> Wrapper:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        span = recipe.begin(instance, args, kwargs)
        token = span.activate()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            span.deactivate(token)
            span.end(exc)
            raise
        span.deactivate(token)
        recipe.done(span, result)
        return result

    return wrapper


Driver = Callable[[_Recipe, Any, Any, tuple[Any, ...], dict[str, Any]], Any]


def _deferred(driver: Driver) -> Callable[[_Recipe], Wrapper]:
    """A wrapper that calls the function at once (so bad arguments raise at the call, as
    without runlog) and hands the coroutine or generator it returns to ``driver``, which
    opens the span when that object first runs."""

    def make(recipe: _Recipe) -> Wrapper:
        def wrapper(
            wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            return driver(recipe, wrapped(*args, **kwargs), instance, args, kwargs)

        return wrapper

    return make


async def _await(
    recipe: _Recipe, coro: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Await the user's coroutine inside the span, so the timing covers the awaited work."""
    span = recipe.begin(instance, args, kwargs)
    token = span.activate()
    try:
        result = await coro
    except BaseException as exc:
        span.deactivate(token)
        span.end(exc)
        raise
    span.deactivate(token)
    recipe.done(span, result)
    return result


def _drive(
    recipe: _Recipe, gen: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Generator[Any, Any, Any]:
    """Run the user's generator one step at a time, each step inside the span."""
    span = recipe.begin(instance, args, kwargs)
    step: Callable[[Any], Any] = gen.send
    arg: Any = None
    try:
        while True:
            token = span.enter_step()
            try:
                value = step(arg)
            except StopIteration as stop:
                result = stop.value
                break
            finally:
                span.exit_step(token)
            try:
                arg, step = (yield value), gen.send
            except GeneratorExit:
                token = span.enter_step()
                try:
                    gen.close()
                finally:
                    span.exit_step(token)
                raise
            except BaseException as exc:
                arg, step = exc, gen.throw
    except BaseException as exc:
        span.end(exc)
        raise
    recipe.done(span, result)
    return result


async def _drive_async(
    recipe: _Recipe, agen: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AsyncGenerator[Any, Any]:
    """The async-generator twin of :func:`_drive` (``yield from`` is not allowed here)."""
    span = recipe.begin(instance, args, kwargs)
    step: Callable[[Any], Awaitable[Any]] = agen.asend
    arg: Any = None
    try:
        while True:
            token = span.enter_step()
            try:
                value = await step(arg)
            except StopAsyncIteration:
                break
            finally:
                span.exit_step(token)
            try:
                arg, step = (yield value), agen.asend
            except GeneratorExit:
                token = span.enter_step()
                try:
                    await agen.aclose()
                finally:
                    span.exit_step(token)
                raise
            except BaseException as exc:
                arg, step = exc, agen.athrow
    except BaseException as exc:
        span.end(exc)
        raise
    recipe.done(span, None)


def _instrument(func: Any, target: Callable[..., Any], recipe: _Recipe) -> Any:
    """Wrap ``func`` with the wrapper its kind needs, chosen once, here."""
    if inspect.isasyncgenfunction(target):
        make = _deferred(_drive_async)
    elif inspect.iscoroutinefunction(target):
        make = _deferred(_await)
    elif inspect.isgeneratorfunction(target):
        make = _deferred(_drive)
    else:
        make = _plain
    return wrapt.FunctionWrapper(func, make(recipe))


# -- decoration-time checks --------------------------------------------------------
def _target(func: Any, decorator: str) -> Callable[..., Any]:
    """The function behind ``func`` (unwrapping classmethod/staticmethod), checked."""
    target = func.__func__ if isinstance(func, classmethod | staticmethod) else func
    if inspect.isclass(target) or not callable(target):
        raise TypeError(
            f"{decorator} decorates functions and methods, not {type(target).__name__} "
            f"{target!r}; decorate the methods of a class instead"
        )
    return target


def _qualified(target: Any) -> str:
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    name = name or type(target).__qualname__
    return f"{module}.{name}" if module else name


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def derive_event_type(target: Any) -> str:
    """``module.Class.method`` as ``module.class.method``: lower case, CamelCase to snake_case.

    ``<locals>`` segments are dropped and ``<lambda>`` becomes ``lambda``, so
    ``app.jobs.TaskQueue.claim`` gives ``app.jobs.task_queue.claim``.
    """
    parts = [part for part in _qualified(target).split(".") if part and part != "<locals>"]
    return ".".join(_CAMEL.sub("_", part.strip("<>")).lower() for part in parts)


def _check_event_type(event_type: object) -> None:
    if event_type is None:
        return
    if not isinstance(event_type, str):
        raise TypeError(
            f"runlog.traced_event() takes the event type as a str such as 'task.claimed', "
            f"got {type(event_type).__name__}"
        )
    if not event_type:
        raise ValueError("runlog.traced_event() needs a non-empty event type, or none at all")
    check_event_type(event_type, "runlog.traced_event()")


def _signatures(target: Any) -> tuple[inspect.Signature, inspect.Signature]:
    """The signature, and the one a bound call (self/cls passed apart) is checked against."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"record_args needs the signature of {_qualified(target)}: {exc}") from None
    if inspect.ismethod(target):  # already bound: its signature has no self to drop
        return signature, signature
    params = list(signature.parameters.values())
    return signature, signature.replace(parameters=params[1:])


def _arg_names(names: Iterable[str], signature: inspect.Signature, label: str) -> tuple[str, ...]:
    chosen = tuple(names)
    unknown = [name for name in chosen if name not in signature.parameters]
    if unknown or not all(isinstance(name, str) for name in chosen):
        raise ValueError(
            f"record_args of {label}: {unknown or chosen!r} not among its parameters "
            f"{list(signature.parameters)}"
        )
    check_fields(dict.fromkeys(chosen), f"record_args of {label}")
    return chosen


def _set_args(recipe: _Recipe, target: Any, record_args: object) -> None:
    if record_args is False or record_args is None:
        return
    if isinstance(record_args, str):
        raise TypeError(f"record_args takes names in a tuple, such as ({record_args!r},)")
    recipe.signatures = _signatures(target)
    if record_args is True:
        check_fields(recipe.signatures[0].parameters, f"record_args=True of {recipe.label}")
    elif callable(record_args):
        recipe.args_hook = record_args
    elif isinstance(record_args, Iterable):
        recipe.arg_names = _arg_names(record_args, recipe.signatures[0], recipe.label)
    else:
        raise TypeError(
            f"record_args takes True, a tuple of argument names or a callable, "
            f"got {type(record_args).__name__}"
        )


def _set_result(recipe: _Recipe, target: Any, record_result: object) -> None:
    if record_result is False or record_result is None:
        return
    if inspect.isasyncgenfunction(target):
        raise TypeError(f"record_result: async generator {recipe.label} returns no value")
    if record_result is True:
        recipe.result_hook = _as_result_field
    elif callable(record_result):
        recipe.result_hook = record_result
    else:
        raise TypeError(
            f"record_result takes True or a callable returning a mapping, "
            f"got {type(record_result).__name__}"
        )


def _as_result_field(result: Any) -> Mapping[str, Any]:
    return {"result": result}


# -- the public shells -------------------------------------------------------------
def _traced(func: Any, event_type: str | None, record_args: object, record_result: object) -> Any:
    target = _target(func, "@runlog.traced_event")
    label = _qualified(target)
    names = EventNames.single(event_type or derive_event_type(target))
    recipe = _Recipe(names, {"function": label}, label)
    _set_args(recipe, target, record_args)
    _set_result(recipe, target, record_result)
    return _instrument(func, target, recipe)


@overload
def traced_event(event_type: F) -> F: ...


@overload
def traced_event(
    event_type: str | None = None,
    *,
    record_args: bool | Iterable[str] | ArgsHook = False,
    record_result: bool | ResultHook = False,
) -> Callable[[F], F]: ...


def traced_event(
    event_type: Any = None,
    *,
    record_args: bool | Iterable[str] | ArgsHook = False,
    record_result: bool | ResultHook = False,
) -> Any:
    """Log one event per call of the decorated function, when the call ends.

    Usable as ``@traced_event``, ``@traced_event()`` or ``@traced_event("task.claimed")``
    on functions, ``async def``, generators, async generators and methods (instance,
    class and static, with the decorator above or below ``@classmethod``).  The event is
    named ``event_type``, by default the function's ``module.qualname`` in lower case
    with CamelCase as snake_case (``app.jobs.TaskQueue.claim`` →
    ``app.jobs.task_queue.claim``).  Its payload holds ``span_id``, ``parent_span_id``,
    ``function``, ``duration_ms``, ``status`` (``ok``, ``error`` or ``cancelled``) and,
    on error, ``error_type`` and ``error``; the call is a span, so events logged inside
    carry its ``span_id`` as their ``parent_span_id``.

    ``record_args``: ``True`` records every argument (but ``self``/``cls``), a tuple of
    names records those, and a callable receives the bound arguments as a dict and
    returns the fields to add.  ``record_result``: ``True`` records the return value as
    ``result``; a callable receives it and returns fields.  Nothing is recorded unless
    asked for, so prompts and secrets stay out of the table by default.
    """
    if callable(event_type) or isinstance(event_type, classmethod | staticmethod):
        return _traced(event_type, None, False, False)
    _check_event_type(event_type)

    def decorate(func: F) -> F:
        return _traced(func, event_type, record_args, record_result)  # type: ignore[no-any-return]

    return decorate


class SpanScope:
    """What :func:`span` returns: a context manager (sync and async) and a decorator."""

    __slots__ = ("_fields", "_names", "_span", "_token")

    def __init__(self, names: EventNames, fields: dict[str, Any]) -> None:
        self._names = names
        self._fields = fields
        self._span: Span | None = None
        self._token: Token[Span | None] | None = None

    def __enter__(self) -> Span:
        if self._span is not None:
            raise RuntimeError(
                "this runlog.span(...) is already entered; call runlog.span() for each block"
            )
        span = Span(self._names, dict(self._fields) if self._fields else None).start()
        self._span, self._token = span, span.activate()
        return span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span, token = self._span, self._token
        self._span = self._token = None
        if span is not None and token is not None:
            span.deactivate(token)
            span.end(exc)

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(kind, exc, tb)

    def __call__(self, func: F) -> F:
        """Decorate ``func``: every call runs in a new span of this name and fields."""
        target = _target(func, "@runlog.span(...)")
        recipe = _Recipe(self._names, self._fields, _qualified(target))
        return _instrument(func, target, recipe)  # type: ignore[no-any-return]


def span(name: str, /, **fields: Any) -> SpanScope:
    """A span: ``<name>.started`` on entry, ``<name>.completed`` or ``<name>.failed`` on exit.

    Use as ``with runlog.span("task", task_id=7) as s:``, ``async with``, or as a
    decorator ``@runlog.span("task")``.  ``fields`` go into every event of the span and
    ``s.set(key=value)`` adds to the end event.  Each span gets a ``span_id`` unique in
    its run and the enclosing span's id as ``parent_span_id``, across ``await``, asyncio
    tasks and threads started inside it.  The end event carries ``duration_ms`` and
    ``status``: ``ok``, ``error`` (with ``error_type`` and ``error``) or ``cancelled``
    (left by ``GeneratorExit``, ``CancelledError``, ``KeyboardInterrupt`` or
    ``SystemExit``, which are not failures; ``cancelled_by`` names it).

    Threads started and ``ThreadPoolExecutor`` work submitted inside the span run in a
    copy of the context, so their events name the span as parent; set
    ``RUNLOG_THREAD_CONTEXT=0`` to turn that off.
    """
    names = _span_names.get(name) if type(name) is str else None
    if names is None:
        names = _names_of_span(name)
    if fields:
        check_fields(fields, f"runlog.span({name!r})")
    return SpanScope(names, fields)


_span_names: dict[str, EventNames] = {}
"""The event types of each span name seen, checked once (span() runs on hot paths)."""
_SPAN_NAMES_LIMIT = 4_096


def _names_of_span(name: object) -> EventNames:
    """Check a span name (raising at the call site if it is wrong); remember its types."""
    if not isinstance(name, str):
        hint = ' (use @runlog.span("name") or @runlog.traced_event)' if callable(name) else ""
        raise TypeError(f"runlog.span() needs a name as a str, got {type(name).__name__}{hint}")
    if not name:
        raise ValueError("runlog.span() needs a non-empty name such as 'task'")
    check_event_type(name, "runlog.span()")
    names = EventNames.of_span(name)
    if type(name) is str:  # not a subclass: its hash and equality are str's own
        if len(_span_names) >= _SPAN_NAMES_LIMIT:  # names made of data: keep memory bounded
            _span_names.clear()
        _span_names[name] = names
    return names


__all__ = ["SpanScope", "derive_event_type", "span", "traced_event"]
