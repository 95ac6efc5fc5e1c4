"""Events completed off the caller's thread: one daemon thread does the slow last step.

An LLM call that reported no usage has its tokens counted with tiktoken: by a helper
process (:mod:`runlog._counter`), each count a round trip and the first one the
helper's start, or in this process, where the first count loads an encoding (about
250 ms; up to ``LOAD_TIMEOUT`` while a file downloads).  That must land neither inside
the user's span nor on an event loop.  So the call's end is settled on the caller's
thread — which end won, the duration, the timestamp and the run — and the event is
completed (counted, priced) and logged here, the same event it would have been.

Guarantees:

* **nothing is lost**: ``runlog.flush()`` and the process's exit wait for the work
  pending here before they flush the writer;
* **bounded**: past :data:`LIMIT` pending items the caller does the work itself
  (back-pressure, never a drop), and so it does when no thread can start (interpreter
  shutdown) or once the process's run has ended;
* **fork-safe**: a forked child forgets the parent's pending work (the parent logs
  it) and starts its own thread when it needs one.

Batches.  The thread takes what is pending :data:`GATHER` seconds after the first item
arrived (at once when ``flush()`` or the exit waits, or :data:`BATCH` items are in),
and first runs each item's ``announce`` step, then each item: calls that end close
together tell the tokenizer what they will count, and the helper counts them all in
one round trip instead of one each.  The events keep their timestamps.

The phases are explicit (:class:`Phase`); the thread starts on the first item.
"""

from __future__ import annotations

import enum
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable

from . import _threads
from ._errors import report_internal_error

LIMIT = 10_000
"""Items pending at most; past it the caller completes its own event."""
GATHER = 0.2
"""Seconds the thread lets work gather after the first item, to do it as one batch.

Each batch is one request to the token counter, another process: on a small machine
its every wake-up takes a core from the program, whose threads then run with cold
caches.  So the helper wakes at most about five times a second, however many calls
end: side by side in one process (30 rounds of 20 counted 50-chunk streams), the
process's extra CPU per stream was +1,011 us at 50 ms, +616 us at 200 ms and +586 us
at 1 s, most of the difference on the main thread.  A counted call's event reaches the
table up to this much later than others (its timestamp is its own); ``flush()`` and
the exit do not wait for the gathering."""
BATCH = 256
"""Items taken at most at a time (a batch's counts are one request)."""

Work = Callable[[], None]


class Phase(enum.Enum):
    """The thread's life: none yet, running, or closed for good (work runs inline)."""

    IDLE = "idle"
    RUNNING = "running"
    CLOSED = "closed"


class Later:
    """A queue of event-completing work and the one thread that runs it, in order."""

    def __init__(self) -> None:
        self.phase = Phase.IDLE
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._submitted = 0
        self._done = 0
        self._waiting = 0
        """Threads in :meth:`drain`: the batch is not left to gather while they wait."""
        self._generation = 0
        """Bumped for each thread started: an older thread that wakes up stops."""

    def submit(self, work: Work, announce: Work | None = None) -> None:
        """Run ``work`` on the thread (or now, on this one, when it cannot wait), after
        ``announce`` and the other items' of its batch (see the module docstring)."""
        if self.phase is not Phase.RUNNING and not self._start():
            _run(work)
            return
        with self._cond:
            if self._submitted - self._done >= LIMIT:  # queued, and taken but not done
                inline = True
            else:
                inline = False
                self._queue.append(_Item(work, announce))
                self._submitted += 1
                if len(self._queue) == 1 or len(self._queue) >= BATCH:
                    self._cond.notify_all()
        if inline:
            _run(work)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until the work submitted before this call is done; False on timeout."""
        if self._submitted == self._done:  # the common case: nothing pending, no lock
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            self._waiting += 1
            self._cond.notify_all()  # a batch gathering: take it now
            try:
                while self._done < target:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    if self.phase is not Phase.RUNNING:  # the thread is gone: do it here
                        self._run_queued_locked()
                        break
                    self._cond.wait(remaining if remaining is not None else 1.0)
            finally:
                self._waiting -= 1
        return True

    def close(self, timeout: float) -> bool:
        """Finish what is pending (within ``timeout``); from now on work runs inline."""
        drained = self.drain(timeout)
        with self._cond:
            self.phase = Phase.CLOSED
            self._cond.notify_all()
            if not drained:  # the thread is stuck: the caller completes the rest itself
                self._run_queued_locked()
        return drained

    def reopen(self) -> None:
        """A new run in this process (``init()`` after an end): work may queue again."""
        with self._cond:
            if self.phase is Phase.CLOSED:
                self.phase = Phase.IDLE

    def after_fork(self) -> None:
        """In a forked child: the parent's pending work and thread are the parent's."""
        self._queue = deque()
        self._cond = threading.Condition(threading.Lock())
        self._submitted = self._done = self._waiting = 0
        if self.phase is Phase.RUNNING:
            self.phase = Phase.IDLE

    def _start(self) -> bool:
        with self._cond:
            if self.phase is Phase.RUNNING:
                return True
            if self.phase is Phase.CLOSED:
                return False
            self._generation += 1
            thread = _threads.thread(self._loop, "runlog-later", self._generation)
            try:
                thread.start()
            except RuntimeError:  # no new threads: the interpreter is shutting down
                return False
            self.phase = Phase.RUNNING
            return True

    def _loop(self, generation: int) -> None:
        queue, cond = self._queue, self._cond
        while True:
            with cond:
                if not self._running(generation):
                    return
                if not queue:
                    cond.wait()
                    continue
                gathered = time.monotonic() + GATHER
                while len(queue) < BATCH and not self._waiting and self._running(generation):
                    remaining = gathered - time.monotonic()
                    if remaining <= 0:
                        break
                    cond.wait(remaining)
                batch = list(itertools.islice(queue, BATCH))
            for item in batch:  # announced, but left queued: a stuck item holds no other
                announce, item.announce = item.announce, None
                if announce is not None:
                    _run(announce)
            for _ in batch:
                with cond:
                    if not (queue and self._running(generation)):
                        break
                    work = queue.popleft().work
                _run(work)
                with cond:
                    self._done += 1
                    if self._waiting:  # only drain() waits for work to be done
                        cond.notify_all()

    def _running(self, generation: int) -> bool:
        """Not closed, nor superseded by a newer thread after a reopen."""
        return self.phase is Phase.RUNNING and generation == self._generation

    def _run_queued_locked(self) -> None:
        while self._queue:
            work = self._queue.popleft().work
            _run(work)
            self._done += 1


class _Item:
    """One item of work and its announcement, which runs first (then it is ``None``)."""

    __slots__ = ("announce", "work")

    def __init__(self, work: Work, announce: Work | None) -> None:
        self.work = work
        self.announce = announce


def _run(work: Work) -> None:
    try:
        work()
    except Exception as exc:  # runlog's own fault: reported, never raised into the app
        report_internal_error("completing an event", exc, reraise=False)


later = Later()
"""The process's one queue (it starts over in a forked child)."""

__all__ = ["BATCH", "GATHER", "LIMIT", "Later", "Phase", "later"]
