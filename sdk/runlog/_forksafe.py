"""Fork safety: what a forked child inherits from runlog's other threads, made usable.

A forked child has one thread, the one that forked.  Whatever another thread held at
that moment stays held in the child, by a thread that does not exist there, and the
first call that needs it waits forever.  Two kinds of thing can be held:

* **a Python lock of runlog's.**  Each one is made by :func:`lock` (or passed to
  :func:`register`), and the child puts them all back to unlocked before any other of
  runlog's fork hooks runs (this module's hooks are registered first, so its
  ``after_in_child`` runs first).  The state they guard is reset by the hooks of the
  modules that own it (queues, phases, connections).
* **a C library's own mutex**: SQLite's allocator and VFS locks, taken on every call
  that runs without the GIL (a batch ``INSERT`` is one long ``sqlite3_step``); an
  import under way (its module lock).  These cannot be reset from Python.  So such a
  call runs inside a :class:`Section`, and a fork waits until no other thread is in
  one, holding new ones off until the fork is made.  The wait is bounded
  (:data:`FORK_WAIT_S`): a library still in use then is *tainted* in the child
  (:func:`tainted`), and runlog does not call it there (the store refuses, counts are
  unavailable) rather than hang on its mutex.
"""

from __future__ import annotations

import os
import threading
import weakref

TYPE_CHECKING = False  # typing itself is not imported: runlog/__init__ imports this module
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, TypeVar

    T = TypeVar("T")

FORK_WAIT_S = 5.0
"""How long a fork waits for runlog's calls into a C library (or an import) to finish."""

_registered: weakref.WeakSet[Any] = weakref.WeakSet()
"""Locks, conditions and events reset to unlocked in a forked child."""
_gate = threading.Condition(threading.Lock())
"""Guards :data:`_busy`; held by a forking thread from its wait until the fork is made."""
_busy: dict[tuple[int, str], int] = {}
"""(thread ident, library) -> sections of that thread in that library, now."""
_depth: dict[int, int] = {}
"""Thread ident -> sections that thread is in, now (of any library)."""
_forking = False
"""A fork is waiting for the sections under way: new ones wait for it (no starving)."""
_held = False
_pending: frozenset[str] = frozenset()
"""In the forking thread: libraries another thread was still in when it forked."""
_tainted: frozenset[str] = frozenset()


def lock() -> threading.Lock:
    """A ``threading.Lock`` that a forked child gets back unlocked."""
    new = threading.Lock()
    _registered.add(new)
    return new


def register(obj: T) -> T:
    """Reset ``obj`` (a lock, RLock, Condition or Event) to unlocked in a forked child."""
    _registered.add(obj)
    return obj


class Section:
    """``with section:`` around a call into a C library that a fork must not land in.

    Entering waits while a fork is waiting for the sections already under way (a busy
    writer would otherwise start its next batch before the fork sees none), unless the
    thread is in a section already (nested: the fork is waiting for that one).
    """

    __slots__ = ("library",)

    def __init__(self, library: str) -> None:
        self.library = library

    def __enter__(self) -> None:
        me = threading.get_ident()
        with _gate:
            while _forking and me not in _depth:
                _gate.wait()
            key = (me, self.library)
            _busy[key] = _busy.get(key, 0) + 1
            _depth[me] = _depth.get(me, 0) + 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        me = threading.get_ident()
        with _gate:
            _drop(_busy, (me, self.library))  # absent: entered before this process forked
            if not _drop(_depth, me) and _forking:
                _gate.notify_all()


def _drop(counts: dict[Any, int], key: Any) -> int:
    """Count one fewer for ``key``; what is left."""
    left = counts.pop(key, 1) - 1
    if left > 0:
        counts[key] = left
    return left


def tainted(library: str) -> bool:
    """True in a child forked while another thread was (past the bound) in ``library``."""
    return library in _tainted


def _others_busy(me: int) -> frozenset[str]:
    return frozenset(library for ident, library in list(_busy) if ident != me)


def _before_fork() -> None:
    """Wait until no other thread is in a section, then hold the gate across the fork."""
    global _held, _forking, _pending
    me = threading.get_ident()
    _held = _gate.acquire(timeout=FORK_WAIT_S)
    if _held:
        _forking = True
        _gate.wait_for(lambda: not _others_busy(me), timeout=FORK_WAIT_S)
    _pending = _others_busy(me)


def _after_fork_in_parent() -> None:
    global _forking
    if _held:
        _forking = False
        _gate.notify_all()
        _gate.release()


def _after_fork_in_child() -> None:
    global _tainted, _held, _forking
    for obj in list(_registered):
        obj._at_fork_reinit()
    _gate._at_fork_reinit()  # type: ignore[attr-defined]
    _busy.clear()
    _depth.clear()
    _held = _forking = False
    _tainted = _tainted | _pending  # a grandchild inherits the same held mutex


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )

IMPORT = Section("import")
"""runlog's imports on first use (``runlog.log_event`` and the like, on any thread): a
child forked in the middle of one would wait forever on that module's import lock.
Past the bound the child is on its own: an import cannot be refused."""

__all__ = ["FORK_WAIT_S", "IMPORT", "Section", "lock", "register", "tainted"]
