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

The phases are explicit (:class:`Phase`); the thread starts on the first item.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable

from ._errors import report_internal_error

LIMIT = 10_000
"""Items pending at most; past it the caller completes its own event."""

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
        self._queue: deque[Work] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._submitted = 0
        self._done = 0
        self._generation = 0
        """Bumped for each thread started: an older thread that wakes up stops."""

    def submit(self, work: Work) -> None:
        """Run ``work`` on the thread (or now, on this one, when it cannot wait)."""
        if self.phase is not Phase.RUNNING and not self._start():
            _run(work)
            return
        with self._cond:
            if len(self._queue) >= LIMIT:
                inline = True
            else:
                inline = False
                self._queue.append(work)
                self._submitted += 1
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
            while self._done < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if self.phase is not Phase.RUNNING:  # the thread is gone: do it here
                    self._run_queued_locked()
                    break
                self._cond.wait(remaining if remaining is not None else 1.0)
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
        self._submitted = self._done = 0
        if self.phase is Phase.RUNNING:
            self.phase = Phase.IDLE

    def _start(self) -> bool:
        with self._cond:
            if self.phase is Phase.RUNNING:
                return True
            if self.phase is Phase.CLOSED:
                return False
            self._generation += 1
            thread = threading.Thread(
                target=self._loop, args=(self._generation,), name="runlog-later", daemon=True
            )
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
                while True:  # closed, or a newer thread took over after a reopen: stop
                    if self.phase is not Phase.RUNNING or generation != self._generation:
                        return
                    if queue:
                        break
                    cond.wait()
                work = queue.popleft()
            _run(work)
            with cond:
                self._done += 1
                cond.notify_all()

    def _run_queued_locked(self) -> None:
        while self._queue:
            work = self._queue.popleft()
            _run(work)
            self._done += 1


def _run(work: Work) -> None:
    try:
        work()
    except Exception as exc:  # runlog's own fault: reported, never raised into the app
        report_internal_error("completing an event", exc, reraise=False)


later = Later()
"""The process's one queue (it starts over in a forked child)."""

__all__ = ["LIMIT", "Later", "Phase", "later"]
