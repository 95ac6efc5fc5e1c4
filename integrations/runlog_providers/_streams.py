"""Streams: watch the items go by, and end the call when the stream ends, closes or dies.

The user keeps the very ``Stream`` / ``AsyncStream`` object the library made: no proxy
around it and no subclass, so its type, attributes, ``with`` blocks, ``close()``,
``response`` and the helpers built on it behave exactly as without runlog.  (The
clients' one supported hook, the ``stream_cls`` argument of ``request()``, would hand
the caller a subclass instead of the class it asked for, so it is not used.)  Two
attributes of the stream are swapped in place, the same in every client generated from
this base (``openai`` 1.x-3.x, ``anthropic``):

* ``_iterator`` (where ``__iter__``, ``__next__``, ``__aiter__`` and ``__anext__`` all
  draw from) becomes an observer that passes every item on untouched, in order, while
  the tracker reads them (one by one up to the first token, then in batches), ending
  the call at the end of the stream or failing it when iteration raises;
* ``response`` becomes a :class:`TrackedResponse`, a transparent proxy whose
  ``close()`` / ``aclose()`` end the call.  Every way of stopping a stream early closes
  that response: ``Stream.close()`` and its ``with`` block, the stream helpers (OpenAI's
  ``.stream()``, Anthropic's ``messages.stream()``, which close ``raw_stream.response``
  themselves, bypassing ``Stream.close``), and ``with_streaming_response`` blocks.  Raw
  responses get the same proxy as their ``http_response``, so the stream they parse
  later is covered too.

A stream nobody closes ends when it is garbage-collected (``weakref.finalize`` on the
stream, which goes with or before its response: openai's stream holds its generator in
a cycle, so the collector frees both together; anthropic's generator runs on a copy of
the stream, so the stream is freed at once while the response lives on in a generator
that asyncio closes later; a raw response is watched itself).  The finalizer may run
inside a garbage collection, on any thread, maybe while that thread holds a lock of
runlog's writer, so it only queues the call (``SimpleQueue.put`` is safe there) for a
daemon thread, the reaper, which logs it in the context the request was made in.
"""

from __future__ import annotations

import contextvars
import functools
import gc
import itertools
import os
import signal
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

import wrapt

from ._report import report

if TYPE_CHECKING:
    from ._tracker import Tracker

    _Proxy = wrapt.ObjectProxy[Any]
else:
    _Proxy = wrapt.ObjectProxy


class TrackedResponse(_Proxy):
    """An HTTP response whose closing ends the call; everything else is the response's."""

    def __init__(self, wrapped: Any, tracker: Tracker) -> None:
        super().__init__(wrapped)
        self._self_tracker = tracker

    def close(self) -> Any:
        """End the call (unless the stream itself is closing at its end), then close."""
        self._self_tracker.closing(self.__wrapped__)
        return self.__wrapped__.close()

    async def aclose(self) -> Any:
        """The async twin of :meth:`close`."""
        self._self_tracker.closing(self.__wrapped__)
        return await self.__wrapped__.aclose()


def track(response: Any, tracker: Tracker) -> Any:
    """``response`` as a :class:`TrackedResponse` whose collection ends the call."""
    if isinstance(response, TrackedResponse):
        return response
    _watch(response, tracker)
    return TrackedResponse(response, tracker)


def _watch(obj: Any, tracker: Tracker) -> None:
    """End the call as abandoned when ``obj`` is collected first."""
    if tracker.context is None:
        tracker.context = contextvars.copy_context()
    tracker.finalizers.append(weakref.finalize(obj, _reaper.abandoned, tracker))
    _reaper.start()


def instrument(stream: Any, tracker: Tracker) -> None:
    """Observe ``stream`` in place (see the module docstring)."""
    response = stream.response
    try:  # the stream is enough: it goes with (or before) its response
        _watch(stream, tracker)
    except TypeError:  # no weak references to it: its response will do
        stream.response = track(response, tracker)
    else:
        if not isinstance(response, TrackedResponse):  # a raw response's is tracked already
            stream.response = TrackedResponse(response, tracker)
    source = getattr(stream, "_iterator", None)
    if source is None:  # not a Stream as we know it: the call ends at close or collection
        return
    if hasattr(source, "__anext__"):
        observer: Any = _observe_async(source, tracker)
    else:
        observer = _observe(source, tracker)
    tracker.observer = weakref.ref(observer)
    stream._iterator = observer


BATCH = 16
"""Items held before they are read together (see :func:`_observe`).  Few: held items
outlive the garbage collector's young-generation passes (each a few chunks' parsing
apart), which then walk and promote them; 16 against 64 cut a 50-chunk stream's
iteration by about a quarter, side by side."""


def _observe(source: Iterator[Any], tracker: Tracker) -> Iterator[Any]:
    """Every item of ``source``, but those the tracker hides; the call ends with the stream.

    Items are read one by one until the first token (its time is the call's
    ``time_to_first_token_ms``), then kept and read :data:`BATCH` at a time, and at
    the end.  Between two items the client parses for tens of microseconds, which
    leaves runlog's code and data out of the CPU's caches: any Python code of ours per
    item costs about three times what it costs warm.  So after the first token no code
    of ours runs per item: C iterators keep each item as it passes
    (``filterfalse(pending.append, ...)``: ``append`` returns ``None``, so every item
    goes on) and ``yield from`` hands it on, a batch at a time.

    The stream closes its response itself at its end, inside ``next()``; that close
    is told apart from the user's by this generator running (see
    :meth:`Tracker.closing`).  A stream that is garbage-collected half-way is left to
    the finalizers (see above).
    """
    try:
        for item in source:  # one by one up to the first token
            if tracker.take(item):
                yield item
            if tracker.pending is not None:
                break
        else:
            tracker.end("done")
            return
        if tracker.hide is not None:  # a changed request: each item is looked at
            for item in source:
                if tracker.seen(item):
                    yield item
        else:
            ended: list[bool] = []
            tail = itertools.chain(source, iter(functools.partial(ended.append, True), None))
            kept = itertools.filterfalse(tracker.pending.append, tail)
            while not ended:
                yield from itertools.islice(kept, BATCH)
                tracker.catch_up()
    except GeneratorExit:  # closed half-way: the close or the collection ends the call
        raise
    except BaseException as exc:
        tracker.failed(exc)
        raise
    tracker.end("done")


async def _observe_async(source: AsyncIterator[Any], tracker: Tracker) -> AsyncIterator[Any]:
    """The ``async`` twin of :func:`_observe`.  An async generator cannot delegate to
    C iterators, so each item after the first token costs an append here."""
    try:
        async for item in source:
            if tracker.take(item):
                yield item
            if tracker.pending is not None:
                break
        else:
            tracker.end("done")
            return
        if tracker.hide is not None:
            async for item in source:
                if tracker.seen(item):
                    yield item
        else:
            pending = tracker.pending
            append = pending.append
            async for item in source:
                append(item)
                if len(pending) >= BATCH:
                    tracker.catch_up()
                yield item
    except GeneratorExit:
        raise
    except BaseException as exc:
        tracker.failed(exc)
        raise
    tracker.end("done")


class _Reaper:
    """Ends the calls of abandoned streams on a daemon thread, away from the collector."""

    def __init__(self) -> None:
        self._queue: SimpleQueue[Tracker | threading.Event] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Make sure the thread runs (called where starting a thread is safe)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="runlog-stream-reaper", daemon=True
                )
                self._thread.start()

    def abandoned(self, tracker: Tracker) -> None:
        """The finalizer of a stream or its response: queue its call (reentrant-safe).

        The call is marked at once, so that the stream's own clean-up in the same
        collection (its generators close the response) leaves the ending to us.  With
        the collector off (as during the interpreter's exit, when ``weakref`` runs the
        remaining finalizers) no collection can be under way: end the call here.
        """
        tracker.doom()
        if gc.isenabled():
            self._queue.put(tracker)
        else:
            tracker.abandon()

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until every call queued before now has ended; False on timeout."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return self._queue.empty()
        marker = threading.Event()
        self._queue.put(marker)
        return marker.wait(timeout)

    def _run(self) -> None:
        if hasattr(signal, "pthread_sigmask"):  # signals are the program's (as runlog's threads)
            signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT))
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                item.abandon()
            except Exception as exc:  # never let the thread die
                report("an LLM client", "ending an abandoned stream", exc, reraise=False)

    def after_fork(self) -> None:
        """In a forked child: the thread is the parent's, and so may be the queue's state."""
        self._queue = SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()


_reaper = _Reaper()
settle = _reaper.settle

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reaper.after_fork)


__all__ = ["BATCH", "TrackedResponse", "instrument", "settle", "track"]
