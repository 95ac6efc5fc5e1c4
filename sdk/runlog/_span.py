"""The lifecycle of one timed operation: the core that every tracing shell drives.

A :class:`Span` is created when the operation begins, optionally logs a start event,
may become the current span (so events logged inside carry its id as their
``parent_span_id``), collects fields, and logs exactly one end event, from whichever
of :meth:`~Span.finish`, :meth:`~Span.fail` or :meth:`~Span.cancel` comes first, on any
thread.  ``@traced_event``, ``span()``, ``llm_call()`` and the stream wrappers are thin
shells around it, so sync/async and stream/non-stream share one implementation.

Ids: ``span_id`` comes from a per-process counter (``next()`` on ``itertools.count``
is atomic under the GIL).  A forked child is a new run, so the counter restarts
there, and spans inherited from the parent are neither parents nor ended in the child.

How an operation ends (the choice of OpenTelemetry's ``use_span``: a ``BaseException``
that is not an ``Exception`` is not a failure of the user's code):

* returned normally: end event ``completed`` with ``status: "ok"``;
* raised an ``Exception``: end event ``failed`` with ``status: "error"``,
  ``error_type`` (the class's qualified name) and ``error`` (its message);
* left by ``GeneratorExit`` (a generator closed early), ``asyncio.CancelledError``,
  ``KeyboardInterrupt`` or ``SystemExit``: end event ``completed`` with
  ``status: "cancelled"`` and ``cancelled_by`` (the exception's class name).

Every end event carries ``span_id``, ``parent_span_id`` (``null`` at a root), the
span's fields and its duration in milliseconds (monotonic clock), so the tree can be
rebuilt from the table.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping
from contextvars import Token
from typing import Any, NamedTuple

from . import _context, _forksafe
from ._errors import report_internal_error, safe_str
from ._log import emit, emit_deferred, emit_later
from ._payload import encode_span_ids

RESERVED = frozenset(
    {
        "span_id",
        "parent_span_id",
        "duration_ms",
        "elapsed_ms",
        "status",
        "error_type",
        "error",
        "cancelled_by",
        "function",
    }
)
"""Payload keys runlog writes itself; user fields may not use them."""

_ids = itertools.count(1)
_epoch = 0
"""Bumped in a forked child: spans of an older epoch belong to the parent process."""
_finish_lock = _forksafe.lock()
_NONE: Mapping[str, Any] = {}
_OK: Mapping[str, Any] = {"status": "ok"}
_get_current = _context.current.get
_set_current = _context.current.set
_reset_current = _context.current.reset


def _after_fork_in_child() -> None:
    global _ids, _epoch
    _ids = itertools.count(1)
    _epoch += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class EventNames(NamedTuple):
    """The event types one kind of span logs, and the name of its duration field."""

    started: str | None
    """Logged on entry, or ``None`` for spans that log only their end."""
    completed: str
    failed: str
    duration_key: str = "duration_ms"

    @classmethod
    def of_span(cls, name: str) -> EventNames:
        """``<name>.started``, ``<name>.completed`` and ``<name>.failed``."""
        return cls(f"{name}.started", f"{name}.completed", f"{name}.failed")

    @classmethod
    def single(cls, event_type: str) -> EventNames:
        """One event at the end, the same name whatever the outcome (``@traced_event``)."""
        return cls(None, event_type, event_type)


def check_fields(fields: Mapping[str, Any], where: str) -> None:
    """Raise ``ValueError`` if a user field would overwrite one that runlog writes."""
    clash = RESERVED.intersection(fields)
    if clash:
        raise ValueError(
            f"{where}: {', '.join(sorted(clash))} is set by runlog itself; "
            f"choose another field name"
        )


def current_span() -> Span | None:
    """The span events logged here belong to, or ``None`` outside any span."""
    span = _get_current()
    if span is None or span._epoch == _epoch:
        return span
    return None


def current_span_id() -> int | None:
    """The ``span_id`` of the current span, or ``None`` outside any span."""
    span = current_span()
    return None if span is None else span.span_id


class Span:
    """One operation, from its start to its one end event (see the module docstring)."""

    __slots__ = (
        "_active_ns",
        "_done",
        "_end_ns",
        "_epoch",
        "_parent",
        "_step_t0",
        "_t0",
        "fields",
        "names",
        "parent_span_id",
        "span_id",
    )
    names: EventNames
    fields: dict[str, Any]
    """Fields of the end event (and of the start event, for those given before it)."""
    span_id: int
    parent_span_id: int | None
    _parent: Span | None
    _epoch: int
    _done: bool
    _active_ns: int | None
    _step_t0: int
    _t0: int
    _end_ns: int

    def __init__(self, names: EventNames, fields: dict[str, Any] | None = None) -> None:
        """Begin timing now, under the current span; ``fields`` is kept, not copied."""
        parent = _get_current()
        if parent is not None and parent._epoch != _epoch:
            parent = None  # inherited from the process that forked this one
        self.names = names
        self.fields = {} if fields is None else fields
        self.span_id = next(_ids)
        self.parent_span_id = None if parent is None else parent.span_id
        self._parent = parent
        self._epoch = _epoch
        self._done = False
        self._active_ns = None
        self._step_t0 = self._end_ns = 0
        self._t0 = time.perf_counter_ns()

    def start(self) -> Span:
        """Log the start event, if this kind of span has one; return the span."""
        started = self.names.started
        if started is not None:
            try:
                if self.fields:
                    emit(started, self._payload(_NONE))
                else:  # the ids alone, written directly (see encode_span_ids)
                    emit(started, None, encode_span_ids(self.span_id, self.parent_span_id))
            except Exception as exc:  # runlog's own fault: never the user's code's
                report_internal_error(f"logging {started}", exc)
        return self

    def set(self, **fields: Any) -> None:
        """Add fields to the end event (``ValueError`` for a name runlog writes itself)."""
        check_fields(fields, "Span.set()")
        self.fields.update(fields)

    def elapsed_ms(self) -> float:
        """Milliseconds since the span began (monotonic clock)."""
        return _ms(time.perf_counter_ns() - self._t0)

    def stop(self) -> None:
        """Stop the clock now (the first call wins), before slow work that precedes the end.

        ``llm_call`` does this so that counting tokens never inflates ``latency_ms``.
        """
        if not self._end_ns:
            self._end_ns = time.perf_counter_ns()

    def _live_id(self) -> int | None:
        """``span_id``, or None for a span begun by the process this one was forked from."""
        return self.span_id if self._epoch == _epoch else None

    @property
    def done(self) -> bool:
        """Whether the end event has been logged (or given up)."""
        return self._done

    # -- current span ---------------------------------------------------------------
    def activate(self) -> Token[Span | None]:
        """Make this the current span; pass the token to :meth:`deactivate`."""
        if _context.needs_sync():
            _context.sync()
        return _set_current(self)

    def deactivate(self, token: Token[Span | None]) -> None:
        """Make the span that was current before :meth:`activate` current again."""
        try:
            _reset_current(token)
        except ValueError:  # a token from another context: see _context.detach
            _context.detach(token, self, self._parent)

    def enter_step(self) -> Token[Span | None]:
        """Activate for one step of a generator; only time inside steps is its duration."""
        if self._active_ns is None:
            self._active_ns = 0
        self._step_t0 = time.perf_counter_ns()
        return self.activate()

    def exit_step(self, token: Token[Span | None]) -> None:
        """End the step begun by :meth:`enter_step`."""
        self.deactivate(token)
        assert self._active_ns is not None
        self._active_ns += time.perf_counter_ns() - self._step_t0

    # -- the one end ----------------------------------------------------------------
    def end(self, exc: BaseException | None = None, fields: Mapping[str, Any] = _NONE) -> bool:
        """Finish, fail or cancel according to how the operation left (see module doc).

        Returns False if the span had already ended: the first end wins.
        """
        if exc is None:  # the common case, without the dispatch
            return self._close(self.names.completed, fields, _OK)
        event_type, outcome = self._outcome(exc)
        return self._close(event_type, fields, outcome)

    def end_later(
        self,
        exc: BaseException | None,
        complete: Callable[[], Mapping[str, Any]],
        announce: Callable[[], None] | None = None,
    ) -> bool:
        """End as :meth:`end` does, now, with the fields ``complete()`` returns later.

        ``complete`` runs on runlog's background thread (see :mod:`runlog._later`): for
        work too slow for the caller's thread, such as counting tokens; ``announce``
        before it, and before the others of its batch.  The event keeps this moment's
        timestamp, run and duration.  False if the span had already ended.
        """
        return self._end_off_thread(
            exc, complete, lambda event_type, build: emit_later(event_type, build, announce)
        )

    def end_deferred(
        self, exc: BaseException | None, complete: Callable[[], Mapping[str, Any]]
    ) -> bool:
        """End as :meth:`end` does, now, with the fields ``complete()`` returns when the
        event is written.

        ``complete`` runs on the writer thread (see :func:`runlog._log.emit_deferred`),
        so the caller pays for neither building nor encoding the payload, and the event
        keeps its place among the caller's others.  For quick work only (pricing, reading
        what was recorded); slow work goes to :meth:`end_later`.
        """
        return self._end_off_thread(exc, complete, emit_deferred)

    def _end_off_thread(
        self,
        exc: BaseException | None,
        complete: Callable[[], Mapping[str, Any]],
        log: Callable[[str, Callable[[], Mapping[str, Any] | None]], None],
    ) -> bool:
        end = self._end_ns or time.perf_counter_ns()
        if not self._claim():
            return False
        event_type, outcome = self._outcome(exc)
        own = dict(self.fields)  # as they are now: a set() after the end changes nothing

        def build() -> dict[str, Any]:
            try:
                fields = complete()
            except Exception as error:  # the event is logged all the same, without them
                report_internal_error(f"completing {event_type}", error, reraise=False)
                fields = _NONE
            return self._end_payload(fields, outcome, end, own)

        try:
            log(event_type, build)
        except Exception as error:
            report_internal_error(f"logging {event_type}", error)
        return True

    def finish(self, **fields: Any) -> bool:
        """Log the ``completed`` event with ``status: "ok"``; False if already ended."""
        return self._close(self.names.completed, fields, _OK)

    def fail(self, exc: BaseException, **fields: Any) -> bool:
        """Log the ``failed`` event for ``exc``; False if already ended."""
        return self._close(self.names.failed, fields, _failure(exc))

    def cancel(self, exc: BaseException | None = None, **fields: Any) -> bool:
        """Log the ``completed`` event with ``status: "cancelled"``; False if already ended."""
        return self._close(self.names.completed, fields, _cancellation(exc))

    def _outcome(self, exc: BaseException | None) -> tuple[str, Mapping[str, Any]]:
        """The end event's type and status fields for an operation left by ``exc``."""
        if exc is None:
            return self.names.completed, _OK
        if isinstance(exc, Exception):
            return self.names.failed, _failure(exc)
        return self.names.completed, _cancellation(exc)

    def _claim(self) -> bool:
        """Take the one end (True once); False too for a span of the pre-fork parent."""
        with _finish_lock:
            if self._done:
                return False
            self._done = True
        return self._epoch == _epoch

    def _close(
        self, event_type: str, fields: Mapping[str, Any], outcome: Mapping[str, Any]
    ) -> bool:
        end = self._end_ns or time.perf_counter_ns()
        if not self._claim():
            return False
        try:
            if outcome is _OK and not fields and not self.fields and self._plain_duration():
                duration = ((end - self._t0) // 1000) / 1000  # written directly: see start()
                emit(event_type, None, encode_span_ids(self.span_id, self.parent_span_id, duration))
            else:
                emit(event_type, self._end_payload(fields, outcome, end))
        except Exception as exc:  # runlog's own fault: never the user's code's
            report_internal_error(f"logging {event_type}", exc)
        return True

    def _plain_duration(self) -> bool:
        """Whether the end event's only timing field is ``duration_ms`` (not a generator's
        active time, not ``latency_ms``): the shape :func:`encode_span_ids` writes."""
        return self._active_ns is None and self.names.duration_key == "duration_ms"

    def _end_payload(
        self,
        fields: Mapping[str, Any],
        outcome: Mapping[str, Any],
        end: int,
        own: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The end event's payload; ``own``: the span's fields as they were at its end."""
        payload = self._payload(fields, own)
        if self._active_ns is None:
            payload[self.names.duration_key] = ((end - self._t0) // 1000) / 1000
        else:
            payload[self.names.duration_key] = _ms(self._active_ns)
            payload["elapsed_ms"] = _ms(end - self._t0)
        payload.update(outcome)
        return payload

    def _payload(
        self, fields: Mapping[str, Any], own: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Ids first, then the span's fields (``own``, else ``self.fields``) and ``fields``;
        the ids cannot be overwritten."""
        span_id, parent_span_id = self.span_id, self.parent_span_id
        if own is None:
            own = self.fields
        if not fields and not own:  # most spans: nothing to merge
            return {"span_id": span_id, "parent_span_id": parent_span_id}
        payload = {"span_id": span_id, "parent_span_id": parent_span_id, **own, **fields}
        payload["span_id"], payload["parent_span_id"] = span_id, parent_span_id
        return payload

    def __repr__(self) -> str:
        return f"<runlog.Span {self.names.completed} span_id={self.span_id}>"


def _failure(exc: BaseException) -> dict[str, Any]:
    return {"status": "error", "error_type": type(exc).__qualname__, "error": safe_str(exc)}


def _cancellation(exc: BaseException | None) -> dict[str, Any]:
    if exc is None:
        return {"status": "cancelled"}
    return {"status": "cancelled", "cancelled_by": type(exc).__qualname__}


def _ms(ns: int) -> float:
    return (ns // 1000) / 1000


__all__ = [
    "RESERVED",
    "EventNames",
    "Span",
    "check_fields",
    "current_span",
    "current_span_id",
    "safe_str",
]
