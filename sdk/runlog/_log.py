"""``log_event``, the one logger every other part of runlog goes through, and ``flush``."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from . import _lifecycle
from ._current import current as _current_span
from ._later import later as _later
from ._payload import encode
from ._runs import NoRun, Run, Runtime, _state, current_run, get_runtime, note_dropped

_life = _lifecycle.life

_MAX_ID = 2**63 - 1
_get_span = _current_span.get


def check_event_type(event_type: object, where: str) -> None:
    """Raise at the call site for an event type that is not a name every backend can store."""
    if not isinstance(event_type, str):
        raise TypeError(
            f"{where} needs the event type as a str such as 'task.claimed', "
            f"got {type(event_type).__name__}"
        )
    if not event_type:
        raise ValueError(f"{where} needs a non-empty event type such as 'task.claimed'")
    if "\x00" in event_type:
        raise ValueError(f"{where}: event type {event_type!r} contains NUL, which no table stores")
    try:
        event_type.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{where}: event type {event_type!r} is not valid Unicode (a lone surrogate)"
        ) from None


def _check_id(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"runlog.log_event({name}=...) must be an int, got {type(value).__name__}")
    if not 0 < value <= _MAX_ID:
        raise ValueError(f"runlog.log_event({name}=...) must be a positive 64-bit id, got {value}")
    return value


def log_event(
    event_type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    run_id: int | None = None,
    parent_run_id: int | None = None,
) -> None:
    """Log one event of the current run (or, with ``run_id=``, exactly the run given).

    ``payload`` is any mapping; values JSON cannot hold are converted or stored as
    their ``repr`` (marked under ``_runlog``), and a payload past the size cap is
    truncated with a marker, so this never raises for what is inside the payload.
    A wrong ``event_type`` or ``payload`` type raises at once.  Inside a span the
    payload gets the span's ``span_id`` (unless it has one).  The event is queued
    for the background writer unless the process runs in sync mode.
    """
    if type(event_type) is not str or not event_type.isascii() or "\x00" in event_type:
        check_event_type(event_type, "runlog.log_event()")  # raises unless a fine non-ASCII name
    elif not event_type:
        check_event_type(event_type, "runlog.log_event()")
    if payload is not None and type(payload) is not dict and not isinstance(payload, Mapping):
        raise TypeError(
            f"runlog.log_event() payload must be a mapping such as a dict, "
            f"got {type(payload).__name__}"
        )
    if _life.hooks_pending:  # the first event came from a thread: try again from this one
        _life.install_signals()
    if run_id is None:
        if parent_run_id is not None:
            raise ValueError("runlog.log_event(parent_run_id=...) also needs run_id=...")
        span = _get_span()  # inside a span the event records it, so it can be placed there
        if span is not None and (payload is None or "span_id" not in payload):
            sid = span._live_id()
            if sid is not None:
                payload = {"span_id": sid} if payload is None else {**payload, "span_id": sid}
        emit(event_type, payload)
        return
    _check_id("run_id", run_id)
    if parent_run_id is not None:
        _check_id("parent_run_id", parent_run_id)
    try:
        runtime = _state.runtime or get_runtime()
    except NoRun:  # reported once where it happened; the event is counted as dropped
        note_dropped()
        return
    runtime.sink.submit(
        (time.time_ns(), run_id, parent_run_id, event_type, encode(payload, runtime.cap))
    )


def _here() -> tuple[Run, Runtime] | None:
    """The current run and its runtime; None (the event counted as dropped) without one."""
    if _life.hooks_pending:
        _life.install_signals()
    try:
        return current_run(), _state.runtime or get_runtime()
    except NoRun:  # reported once where it happened
        note_dropped()
        return None


def emit(event_type: str, payload: Mapping[str, Any] | None, encoded: str | None = None) -> None:
    """Log under the current run, without the call-site checks (runlog's own events).

    ``encoded``: the payload's text already made by :mod:`runlog._payload` (spans).
    """
    here = _here()
    if here is not None:
        run, runtime = here
        if encoded is None:
            encoded = encode(payload, runtime.cap)
        runtime.sink.submit((time.time_ns(), run.run_id, run.parent_run_id, event_type, encoded))


def emit_deferred(event_type: str, build: Callable[[], Mapping[str, Any] | None]) -> None:
    """Log under the current run an event whose payload ``build()`` makes when it is written.

    The event takes its place in the queue (and its timestamp and run) now; the writer
    thread calls ``build`` and encodes its result just before it writes the row, off the
    caller's thread (in sync mode, before this returns).  For payloads of runlog's own
    making that are quick to build: slow work belongs in :func:`emit_later`, which keeps
    the writer free.
    """
    here = _here()
    if here is not None:
        run, runtime = here
        cap = runtime.cap
        runtime.sink.submit(
            (
                time.time_ns(),
                run.run_id,
                run.parent_run_id,
                event_type,
                lambda: encode(build(), cap),
            )
        )


def emit_later(
    event_type: str,
    build: Callable[[], Mapping[str, Any] | None],
    announce: Callable[[], None] | None = None,
) -> None:
    """Log under the current run an event whose payload ``build()`` makes off this thread.

    The timestamp and run are this moment's; ``build`` runs on runlog's background
    thread (see :mod:`runlog._later`; ``announce`` first, with its batch's others), or
    right here in sync mode, where every event is committed before the call that logs
    it returns.
    """
    here = _here()
    if here is None:
        return
    run, runtime = here
    stamp = time.time_ns()

    def complete() -> None:
        payload = encode(build(), runtime.cap)
        runtime.sink.submit((stamp, run.run_id, run.parent_run_id, event_type, payload))

    if runtime.config.sync:
        complete()
    else:
        _later.submit(complete, announce)


def flush(timeout: float | None = None) -> bool:
    """Wait until every event logged so far is in the table.

    True only if every event logged since the previous ``flush()`` (or since the
    process started) is in the table; False on timeout, or if any of them was dropped
    (the database locked past ``lock_timeout``, unusable, or its file deleted).
    Dropped events are not waited for, so this returns even while the database is
    unusable.
    """
    if _life.hooks_pending:
        _life.install_signals()
    start = time.monotonic()
    completed = _later.drain(timeout)  # events still being completed come first
    if timeout is not None:
        timeout = max(0.0, timeout - (time.monotonic() - start))
    runtime = _state.runtime
    written = True if runtime is None else runtime.sink.flush(timeout)
    dropped = _state.dropped_early if runtime is None else runtime.dropped()
    honest = dropped == _state.flushed_drops
    _state.flushed_drops = dropped
    return completed and written and honest


__all__ = ["check_event_type", "emit", "emit_deferred", "emit_later", "flush", "log_event"]
