"""Getting events into the store: retries, drop accounting, and the background batcher.

:class:`Persister` is the one core that talks to the store.  It waits out a lock held
by another process (back-off for ``lock_timeout`` seconds), and only then gives a
batch up, counting it in ``dropped`` and reporting the outage once through the
``runlog`` logger; writing resumes by itself when the store works again.

A server that cannot be reached at all (:class:`StoreUnreachable`, PostgreSQL) is
different from a lock: the background writer keeps the batch in hand and retries for
as long as the outage lasts, while new events wait in the queue up to its bound; past
the bound they are counted as dropped rather than blocking the application for the
length of the outage.  Sync mode and ``init()`` keep the ``lock_timeout`` bound.

Two thin sinks sit on top of it:

* :class:`BatchWriter` (the default) — ``submit`` is a ``deque.append`` on the caller's
  thread; a daemon thread writes batches in one transaction (on SQLite, one multi-row
  ``INSERT`` that runs without the GIL; the caller hands the GIL back to it when the
  statement should be done, see ``_hand_off``).  No lock is taken on the hot path.
  A full queue blocks the caller (back-pressure) instead of silently dropping.  Its
  phases are explicit (:class:`WriterPhase`): once closed, ``submit`` writes
  synchronously, so nothing is queued to a thread that has stopped.
* :class:`SyncWriter` — ``submit`` commits before it returns (``init(sync=True)``).

Once shutdown has set ``give_up_at``, every wait (a lock, an unreachable server,
back-pressure) ends by then: the interpreter's exit never hangs.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Protocol, TypeVar

from . import _threads
from ._errors import forget_warning, logger, report_internal_error, warn_once
from ._payload import UNBUILDABLE
from ._store import Row, Store, StoreBusy, StoreFault, StoreUnreachable

T = TypeVar("T")

Submitted = tuple[int, int, "int | None", str, "str | Callable[[], str]"]
"""A row as the sinks take it: its payload the JSON text, or a function that makes the
text (:func:`runlog._log.emit_deferred`), which the writer calls when it writes the row:
the event's place in the table is taken when it is logged, its payload made off the
caller's thread."""

_OUTAGE = "store-outage"
_HANDOFF_CHECK = 31
"""While a write is under way, the caller looks at the clock every 32 events."""
_HANDOFF_RETRY_NS = 200_000
"""A handoff too early (the statement still running) is tried again this much later."""


def _give_up_gil() -> None:
    """Release the GIL for a moment (a zero sleep blocks briefly: the writer wakes)."""
    time.sleep(0)


class Persister:
    """Write to the store with retries; never raise; count what could not be written."""

    def __init__(self, store: Store, lock_timeout: float) -> None:
        self.store = store
        self.lock_timeout = lock_timeout
        self.dropped = 0
        self.unreachable = False
        """True while the background writer waits out an unreachable server."""
        self.give_up_at: float | None = None
        """Set at shutdown: stop waiting out an outage at this monotonic time."""
        self._failing = False

    def call(self, work: Callable[[], T]) -> T:
        """Run ``work``, retrying while the store is busy; raise its last error after the wait."""
        deadline = time.monotonic() + self.lock_timeout
        if self.give_up_at is not None:
            deadline = min(deadline, self.give_up_at)
        delay = 0.005
        while True:
            try:
                return work()
            except StoreBusy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.5)

    def write(self, submitted: Sequence[Submitted], *, outlast_outages: bool = False) -> bool:
        """Write ``rows`` in one transaction; on failure count them as dropped.

        ``outlast_outages``: wait out an unreachable server however long it takes
        (the background writer), re-sending the same rows so the store can tell a
        batch it already committed.
        """
        rows = _ready(submitted)
        try:
            try:
                self.store.write(rows)
            except StoreBusy as exc:  # the common case is the first try: no retry machinery
                if outlast_outages and isinstance(exc, StoreUnreachable):
                    self._outlast(rows)
                else:
                    self.call(lambda: self.store.write(rows))
        except (StoreBusy, StoreFault) as exc:
            self._drop(len(rows), exc)
            return False
        except Exception as exc:
            self._drop(len(rows), exc)
            report_internal_error("writing events", exc, reraise=False)
            return False
        if self.store.lost:  # committed to a file that then vanished: count, never hide
            self.dropped += self.store.lost
            self.store.lost = 0
        if self._failing:
            self._failing = False
            forget_warning(_OUTAGE)
            logger.warning(
                "runlog is writing to %s again (%d events dropped so far)",
                self.store.url,
                self.dropped,
            )
        return True

    def _outlast(self, rows: Sequence[Row]) -> None:
        """Retry ``rows`` until the server answers (or shutdown's deadline passes)."""
        self.unreachable = True
        warn_once(
            _OUTAGE + "-unreachable",
            "runlog cannot reach %s; events are kept in memory and written when it is back",
            self.store.url,
        )
        delay = 0.05
        try:
            while True:
                try:
                    self.call(lambda: self.store.write(rows))
                    return
                except StoreUnreachable:
                    if self.give_up_at is not None and time.monotonic() >= self.give_up_at:
                        raise
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
        finally:
            self.unreachable = False
            forget_warning(_OUTAGE + "-unreachable")

    def verify(self) -> bool:
        """Ask the store to check what it committed is still there; count any loss."""
        with suppress(StoreBusy, StoreFault):  # the next write meets the fault and reports it
            self.store.verify()
        if self.store.lost:
            self.dropped += self.store.lost
            self.store.lost = 0
        return True

    def _drop(self, count: int, exc: BaseException) -> None:
        self.dropped += count
        self._failing = True
        warn_once(
            _OUTAGE,
            "runlog could not write %d event(s) to %s and dropped them: %s "
            "(reported once; writing resumes when the database is usable)",
            count,
            self.store.url,
            exc,
        )


def _ready(rows: Sequence[Submitted]) -> Sequence[Row]:
    """``rows`` with every deferred payload made; a payload that cannot be made becomes
    the whole-payload ``repr`` mark, so the event is still written."""
    for row in rows:
        if type(row[4]) is not str:
            break
    else:
        return rows  # type: ignore[return-value]  # every payload is text already
    return [row if type(row[4]) is str else _made(row) for row in rows]  # type: ignore[misc]


def _made(row: Submitted) -> Row:
    stamp, run_id, parent_run_id, event_type, make = row
    try:
        payload = make() if callable(make) else UNBUILDABLE
    except Exception as exc:  # runlog's own fault: the event is kept, without its payload
        report_internal_error(f"making the payload of {event_type}", exc, reraise=False)
        payload = UNBUILDABLE
    return stamp, run_id, parent_run_id, event_type, payload


class Sink(Protocol):
    """Where ``log_event`` hands its rows."""

    persister: Persister

    def submit(self, row: Submitted) -> None: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def close(self, timeout: float | None = None) -> bool: ...

    def closed(self) -> bool: ...

    def abandon(self) -> None: ...


class SyncWriter:
    """Commit each event before ``log_event`` returns."""

    def __init__(self, persister: Persister) -> None:
        self.persister = persister
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, row: Submitted) -> None:
        with self._lock:
            self.persister.write((row,))

    def flush(self, timeout: float | None = None) -> bool:
        """Everything is written already; check the file still holds it."""
        return self.persister.verify()

    def close(self, timeout: float | None = None) -> bool:
        self._closed = True  # nothing to stop: later events are written as before
        return True

    def closed(self) -> bool:
        return self._closed

    def abandon(self) -> None:
        """In a forked child: another thread of the parent may have held the lock."""
        self._lock = threading.Lock()


class _Stop:
    """Queue marker: write what came before, then end the thread."""


_STOP = _Stop()


class WriterPhase(enum.Enum):
    """A :class:`BatchWriter`'s life: idle until the first event, running, closed."""

    IDLE = "idle"
    RUNNING = "running"
    CLOSED = "closed"
    """The thread has stopped: ``submit`` writes synchronously."""


Item = Submitted | threading.Event | _Stop


class BatchWriter:
    """Queue events on the caller's thread; write them in batches on a daemon thread."""

    def __init__(
        self,
        persister: Persister,
        *,
        batch_size: int,
        interval: float,
        queue_size: int,
        backpressure_timeout: float,
    ) -> None:
        self.persister = persister
        self._batch_size = batch_size
        self._interval = interval
        self._queue_size = queue_size
        self._limit = queue_size
        """The back-pressure bound in force: what the writer can commit in one interval
        (measured), within [batch_size, queue_size], so a SIGKILL costs about one
        interval of history however fast the application logs."""
        self._threshold = min(batch_size, queue_size)
        self._backpressure_timeout = backpressure_timeout
        self._queue: deque[Item] = deque()
        self._wake = threading.Event()
        self._room = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._phase_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self.phase = WriterPhase.IDLE
        self._running = False
        """``phase is RUNNING``, as one attribute read for the hot path."""
        self._handoff_at = 0
        """While a write is under way: when its statement should be done (perf_counter
        ns), so the caller hands the GIL over then (see ``_hand_off``); 0 otherwise."""
        self._next_handoff = 0
        """The caller's side: no new handoff before this (one per retry interval)."""
        self._ns_per_row = 5_000
        """The writer's CPU per row in its last full batch (the statement's pace)."""

    # -- caller side ----------------------------------------------------------------
    def submit(self, row: Submitted) -> None:
        queue = self._queue
        queue.append(row)
        if not self._running:  # idle (start the thread) or closed (write it now)
            self._not_running()
            return
        pending = len(queue)
        if self._handoff_at and not pending & _HANDOFF_CHECK:
            self._hand_off()
        if pending >= self._threshold:  # one comparison on the hot path
            if pending >= self._batch_size and not self._wake.is_set():
                self._wake.set()
            if pending >= self._limit:
                if not self.persister.unreachable:
                    self._wait_for_room()
                elif pending >= self._queue_size:  # an outage fills the whole queue, then sheds
                    self._shed(queue)

    def _hand_off(self) -> None:
        """Let the writer have the GIL back once its statement should have finished.

        The statement runs without the GIL; to continue, the writer must take it back
        from this thread, which runs Python and would hold it for the interpreter's
        switch interval (5 ms) each time: about half the writer's time, on a busy
        caller.  A short sleep gives it over at once (a ``sched_yield`` would not: this
        thread takes the GIL again before the writer wakes up).
        """
        now = time.perf_counter_ns()
        if now >= self._handoff_at and now >= self._next_handoff:
            self._next_handoff = now + _HANDOFF_RETRY_NS
            _give_up_gil()

    def _not_running(self) -> None:
        with self._phase_lock:
            if self.phase is WriterPhase.IDLE:
                thread = _threads.thread(self._run, "runlog-writer")
                thread.start()
                self._thread = thread
                self.phase = WriterPhase.RUNNING
                self._running = True
                return
        # Closed: anything queued now (this row, or one that raced the close) is written
        # here, synchronously; a row appended after a drain is seen by its own submitter.
        self._write_queued()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything submitted before the call is written (or given up).

        While the server is unreachable this returns False after ``lock_timeout``
        (or ``timeout``) rather than for as long as the outage lasts.
        """
        thread = self._thread
        if not self._running or thread is None or not thread.is_alive():
            self._write_queued()
            self.persister.verify()
            return not self._queue
        done = threading.Event()
        self._queue.append(done)
        self._wake.set()
        start = time.monotonic()
        while not done.wait(0.05):
            waited = time.monotonic() - start
            if timeout is not None and waited >= timeout:
                return False
            if self.persister.unreachable and waited >= self.persister.lock_timeout:
                return False
            if not thread.is_alive():
                self._write_queued()
                return done.is_set()
        self.persister.verify()
        return True

    def _shed(self, queue: deque[Item]) -> None:
        """The server is down and the queue full: drop the newest event, counted."""
        try:
            item = queue.pop()
        except IndexError:
            return
        if not isinstance(item, tuple):  # a flush or stop marker that just arrived
            queue.append(item)
            return
        self.persister.dropped += 1
        warn_once(
            "queue-full-unreachable",
            "runlog's queue is full while %s is unreachable; dropping new events "
            "(counted in process.exited)",
            self.persister.store.url,
        )

    def close(self, timeout: float | None = None) -> bool:
        """Write what is queued and stop the thread; from now on ``submit`` writes itself.

        Bounded by ``timeout``: rows the thread could not write by then are written (or
        counted as dropped) here, within the persister's ``give_up_at``.
        """
        # Held throughout: an event submitted meanwhile waits here, then is written
        # after everything queued before it (one drainer at a time keeps the order).
        with self._sync_lock:
            with self._phase_lock:
                self.phase = WriterPhase.CLOSED
                self._running = False
                thread = self._thread
            if self.persister.give_up_at is None:
                self.persister.give_up_at = time.monotonic() + self.persister.lock_timeout
            stopped = True
            if thread is not None and thread.is_alive():
                self._queue.append(_STOP)
                self._wake.set()
                thread.join(timeout)
                stopped = not thread.is_alive()
            if stopped:
                self._drain(stop_at_marker=False)
            else:  # the thread is stuck past the bound: what it still holds is given up
                self._give_up_queued()
        return stopped

    def closed(self) -> bool:
        return self.phase is WriterPhase.CLOSED

    def _write_queued(self) -> None:
        """Write everything queued, on the calling thread (the writer is not running)."""
        with self._sync_lock:
            self._drain(stop_at_marker=False)

    def _give_up_queued(self) -> None:
        queue, count = self._queue, 0
        while queue:
            item = queue.popleft()
            if isinstance(item, tuple):
                count += 1
            elif isinstance(item, threading.Event):
                item.set()
        if count:
            self.persister.dropped += count
            warn_once("close-gave-up", "runlog gave up %d queued event(s) at exit", count)

    def _wait_for_room(self) -> None:
        """Back-pressure: block the caller until the writer has made room."""
        deadline = time.monotonic() + self._backpressure_timeout
        give_up_at = self.persister.give_up_at
        if give_up_at is not None:
            deadline = min(deadline, give_up_at)
        with self._room:
            while len(self._queue) >= self._limit:
                remaining = deadline - time.monotonic()
                if self.persister.unreachable or not self._running:
                    return  # an outage: the queue takes up to queue_size, then sheds
                if remaining <= 0:
                    warn_once(
                        "backpressure",
                        "runlog's event queue stayed full for %.0fs; continuing "
                        "without waiting for it (events stay queued)",
                        self._backpressure_timeout,
                    )
                    return
                self._room.wait(min(remaining, 1.0))

    # -- writer thread --------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                if self._drain(stop_at_marker=True):
                    return
            except Exception as exc:  # never let the writer thread die
                report_internal_error("draining the event queue", exc, reraise=False)

    def _drain(self, *, stop_at_marker: bool) -> bool:
        """Write everything queued; honour markers in order; True at the stop marker."""
        queue, batch, size = self._queue, [], self._batch_size
        while queue:
            try:
                item = queue.popleft()
            except IndexError:  # another drainer took the last one
                break
            if isinstance(item, tuple):
                batch.append(item)
                if len(batch) >= size:
                    self._made_room()  # the caller may go on while this batch is written
                    self._write(batch)
                    batch = []
                continue
            if batch:
                self._write(batch)
                batch = []
            if item is _STOP:
                if stop_at_marker:
                    return True
                continue
            assert isinstance(item, threading.Event)
            item.set()
        if batch:
            self._write(batch)
        return False

    def _write(self, batch: list[Submitted]) -> None:
        start, cpu = time.perf_counter_ns(), time.thread_time_ns()
        self._handoff_at = start + len(batch) * self._ns_per_row
        try:
            written = self.persister.write(batch, outlast_outages=self._running)
        finally:
            self._handoff_at = 0
        elapsed_ns = time.perf_counter_ns() - start
        if written and len(batch) >= self._batch_size:  # a full batch: the writer's pace
            self._ns_per_row = (time.thread_time_ns() - cpu) // len(batch)
            per_interval = int(len(batch) * self._interval * 1e9 / max(elapsed_ns, 1))
            self._limit = max(self._batch_size, min(self._queue_size, per_interval))
        self._made_room()

    def _made_room(self) -> None:
        with self._room:
            self._room.notify_all()

    def abandon(self) -> None:
        """Forget queued rows and the thread (in a forked child: both are the parent's)."""
        self._queue = deque()
        self._thread = None
        self._wake = threading.Event()
        self._room = threading.Condition(threading.Lock())
        self._phase_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        if self.phase is WriterPhase.RUNNING:
            self.phase = WriterPhase.IDLE
        self._running = False
        self._handoff_at = 0  # a write the parent had under way is not this process's


__all__ = ["BatchWriter", "Persister", "Sink", "SyncWriter", "WriterPhase"]
