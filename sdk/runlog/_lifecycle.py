"""A process's lifecycle: ``running → closing → closed``, and every way a run ends.

This module owns everything that ends a run — falling off the end of the program, an
unhandled exception, ``sys.exit``, SIGTERM/SIGINT, a multiprocessing child returning,
``init()`` superseding an implicit run — and fork.  :mod:`runlog._runs` keeps identity
and propagation only.  The rules (README.md, "Lifecycle guarantees"):

* **A signal handler does no I/O and takes no lock.**  It notes the signal, then either
  hands over to the handler the application installed (before or after ``init()``:
  ``signal.signal`` is wrapped so runlog stays in front) or, where the default
  disposition was in place, restores that disposition and releases the *closer*, a
  thread of runlog's parked on a lock only it waits for.  The closer ends the run
  (flush, ``process.exited``), bounded by ``lock_timeout``, then re-sends the signal,
  so the process dies by it and its parent sees that status.  The application keeps
  running for those milliseconds and its ``finally`` blocks do not run — as with the
  default disposition, where they would not run either.  A second signal kills at once.
* **After close nothing is queued to a stopped thread**: the writer writes
  synchronously (or counts the event as dropped).  runlog's ``atexit`` hook is
  registered at ``import runlog``, so it runs after every hook registered later;
  events from hooks that run after it still reach the table.
* **Exit codes are observed**: ``sys.exit``, ``exit()`` and ``quit()`` tag the
  ``SystemExit`` they raise with a witness that commits the code only when the
  exception is released at the top of the interpreter (it ended the process), not when
  the application caught it; the excepthook sees unhandled exceptions; a
  multiprocessing child's exit is read from the exception in flight when
  multiprocessing runs its finalizers.
"""

from __future__ import annotations

import builtins
import enum
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from . import _forksafe  # noqa: F401  (first: its fork hooks run before every other one)
from ._errors import report_internal_error, safe_str

if TYPE_CHECKING:
    from ._runs import Runtime


class Phase(enum.Enum):
    """Where the process is in its life, as far as runlog is concerned."""

    RUNNING = "running"
    """Events are logged as usual (batched or synchronously)."""
    CLOSING = "closing"
    """The run is ending: ``process.exited`` and the final flush are under way."""
    CLOSED = "closed"
    """``process.exited`` is written; later events are written synchronously."""


# -- the exit, as observed -------------------------------------------------------
class ExitRecord:
    """What is known of how the process is ending; turned into ``process.exited``."""

    def __init__(self) -> None:
        self.exception: BaseException | None = None
        self.signal: int | None = None
        self.code: int | None = None
        """The code of a ``SystemExit`` that ended the process (None: none seen)."""

    def note_exception(self, exc: BaseException) -> None:
        self.exception = exc

    def note_signal(self, signum: int) -> None:
        self.signal = signum  # a plain assignment: safe inside a signal handler

    def fields(self) -> dict[str, Any]:
        """``reason`` and ``exit_code`` (and the details) for ``process.exited``."""
        fields: dict[str, Any] = {"reason": "normal", "exit_code": 0}
        exc = self.exception
        if self.signal is not None:
            name = signal.Signals(self.signal).name
            fields.update(reason="signal", signal=name, exit_code=128 + self.signal)
        if isinstance(exc, KeyboardInterrupt) and self.code is None:
            # Python ends an unhandled KeyboardInterrupt by re-raising SIGINT.
            fields.update(reason="signal", signal="SIGINT", exit_code=128 + signal.SIGINT)
        elif exc is not None:
            fields.update(
                reason="exception",
                exit_code=1,
                error_type=type(exc).__qualname__,
                error=safe_str(exc, 2000),
            )
        if self.code is not None:
            fields["exit_code"] = self.code
        return fields


def exit_code(code: object) -> int:
    """The process exit status a ``SystemExit`` with ``code`` produces (as CPython does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return int(code)
    return 1


class _ExitWitness:
    """Rides on a ``SystemExit``; commits its code if the exception ends the process.

    A ``SystemExit`` that reaches the top of the interpreter is released by C code
    with no Python frame on the stack; one the application caught is released inside
    its frames.  The code stays pending until then, so a caught ``sys.exit(4)`` is not
    mistaken for the process's exit.
    """

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code

    def __del__(self) -> None:
        if sys._getframe().f_back is None:
            life.exit.code = self.code


def _tag(exc: SystemExit) -> None:
    exc._runlog_exit = _ExitWitness(exit_code(exc.code))  # type: ignore[attr-defined]


def _tracked_sys_exit(original: Callable[..., Any]) -> Callable[..., Any]:
    def exit(status: object = None) -> Any:
        try:
            return original(status)
        except SystemExit as exc:
            _tag(exc)
            raise

    exit.__doc__ = original.__doc__
    exit.__wrapped__ = original  # type: ignore[attr-defined]
    return exit


class _TrackedQuitter:
    """``exit()`` / ``quit()`` of the interactive builtins, tagging their SystemExit."""

    def __init__(self, quitter: Any) -> None:
        self.__wrapped__ = quitter

    def __repr__(self) -> str:
        return repr(self.__wrapped__)

    def __call__(self, code: object = None) -> None:
        try:
            self.__wrapped__(code)
        except SystemExit as exc:
            _tag(exc)
            raise


# -- signals ---------------------------------------------------------------------
_WATCHED = (signal.SIGTERM, signal.SIGINT)
_signal = signal.signal
_getsignal = signal.getsignal
Handler = Callable[[int, "FrameType | None"], Any] | int | None


class _Signals:
    """runlog's handler in front of whatever the application sets for SIGTERM/SIGINT."""

    def __init__(self) -> None:
        self.chained: dict[int, Handler] = {}
        self.patched = False
        self.handler = self.handle  # one bound method, so identity checks hold

    def install(self) -> bool:
        """Put runlog's handler in place (main thread only); True once it is."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in _WATCHED:
            current = _getsignal(signum)
            if current is self.handler or current in (signal.SIG_IGN, None):
                continue
            self.chained[signum] = current
            _signal(signum, self.handler)
        if not self.patched:
            self.patched = True
            signal.signal = self.signal
            signal.getsignal = self.getsignal
        return True

    def handle(self, signum: int, frame: FrameType | None) -> Any:
        life.exit.note_signal(signum)
        chained = self.chained.get(signum, signal.SIG_DFL)
        if callable(chained):
            return chained(signum, frame)  # the application's (or Python's SIGINT) handler
        _signal(signum, signal.SIG_DFL)
        life.closer.release(signum)
        return None

    def _ours(self, signum: object) -> bool:
        return (
            isinstance(signum, int)
            and signum in self.chained
            and _getsignal(signum) is self.handler
            and threading.current_thread() is threading.main_thread()
        )

    def signal(self, signalnum: int, handler: Handler) -> Handler:
        """``signal.signal``: a watched signal's new handler runs behind runlog's note."""
        if self._ours(signalnum) and (callable(handler) or handler == signal.SIG_DFL):
            previous, self.chained[signalnum] = self.chained[signalnum], handler
            return previous
        if self._ours(signalnum):  # SIG_IGN (or a bad value, which the original refuses)
            previous = self.chained[signalnum]
            _signal(signalnum, handler)
            del self.chained[signalnum]
            return previous
        return _signal(signalnum, handler)

    def getsignal(self, signalnum: int) -> Handler:
        """``signal.getsignal``: what the application set, not runlog's handler."""
        if self._ours(signalnum):
            return self.chained[signalnum]
        return _getsignal(signalnum)


# -- the closer thread -------------------------------------------------------------
class _Closer:
    """A parked thread that ends the run for a signal, then re-sends the signal."""

    def __init__(self) -> None:
        self._gate: threading.Lock | None = None
        self._signum: int = signal.SIGTERM

    def start(self) -> None:
        if self._gate is not None:
            return
        gate = threading.Lock()
        gate.acquire()
        thread = threading.Thread(
            target=self._run, args=(gate,), name="runlog-lifecycle", daemon=True
        )
        thread.start()
        self._gate = gate

    def release(self, signum: int) -> None:
        """From the signal handler: wake the closer (a lock release: no I/O, no wait)."""
        self._signum = signum
        gate, self._gate = self._gate, None
        if gate is None:  # nothing runs that could flush: die by the signal now
            os.kill(os.getpid(), signum)
            return
        gate.release()

    def _run(self, gate: threading.Lock) -> None:
        gate.acquire()
        try:
            life.close()
        except BaseException as exc:  # pragma: no cover - the signal must still be re-sent
            report_internal_error("ending the run for a signal", exc, reraise=False)
        os.kill(os.getpid(), self._signum)

    def after_fork(self) -> None:
        self._gate = None  # the parent's thread does not exist here


# -- the lifecycle -------------------------------------------------------------------
class Lifecycle:
    """The one process-wide lifecycle: its phase, its exit record, its hooks."""

    def __init__(self) -> None:
        self.phase = Phase.RUNNING
        self.exit = ExitRecord()
        self.signals = _Signals()
        self.closer = _Closer()
        self.hooks_pending = True
        """True until the signal handlers are in place (they need the main thread)."""
        self.end_run: Callable[[dict[str, Any]], None] | None = None
        """Set by :mod:`runlog._runs`: how the process's runtime (if any) is ended."""
        self.runtime: Callable[[], Runtime | None] = lambda: None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._process_hooks = False
        self._mp_watched = False

    def prepare(self) -> None:
        """A run is about to start: make sure every way the process can end is hooked.

        Called before ``process.started`` is written, so there is no moment at which
        the row exists and a SIGTERM would still kill by the default disposition,
        leaving the run without its ``process.exited``.  A signal that lands before
        the row exists ends nothing and still kills by the signal.
        """
        if self.phase is not Phase.RUNNING:
            return  # started during the exit itself: written synchronously, nothing to hook
        if not self._process_hooks:
            self._process_hooks = True
            self._hook_process()
        self.closer.start()
        self.install_signals()
        if not self._mp_watched and _in_multiprocessing_child():
            # Called after multiprocessing reset its finalizer registry in the child.
            import multiprocessing.util as util

            self._mp_watched = True
            util.Finalize(None, self._multiprocessing_exit, exitpriority=-100)

    def install_signals(self) -> None:
        """Install the signal handlers if this is the main thread (retried until it is)."""
        if self.hooks_pending and self.signals.install():
            self.hooks_pending = False

    def _hook_process(self) -> None:
        previous_hook = sys.excepthook

        def excepthook(
            kind: type[BaseException], exc: BaseException, tb: TracebackType | None
        ) -> None:
            self.exit.note_exception(exc)
            previous_hook(kind, exc, tb)

        sys.excepthook = excepthook
        if not hasattr(sys.exit, "__wrapped__"):
            sys.exit = _tracked_sys_exit(sys.exit)
        for name in ("exit", "quit"):
            quitter = getattr(builtins, name, None)
            if quitter is not None and not isinstance(quitter, _TrackedQuitter):
                setattr(builtins, name, _TrackedQuitter(quitter))

    def _multiprocessing_exit(self) -> None:
        """multiprocessing's finalizers run inside its ``finally``: the target's exception
        (if any) is still in flight, and decides ``Process.exitcode``."""
        exc = sys.exc_info()[1]
        if isinstance(exc, SystemExit):
            self.exit.code = exit_code(exc.code)
        elif exc is not None:  # multiprocessing turns any other exception into exit code 1
            self.exit.note_exception(exc)
            self.exit.code = 1
        self.close()

    def close(self) -> None:
        """End the process's run once: ``running → closing → closed``.

        Any caller after the first waits until the first is done (bounded), so the
        interpreter never finalizes under a flush in progress.
        """
        with self._lock:
            phase = self.phase
            if phase is Phase.RUNNING:
                self.phase = Phase.CLOSING
        if phase is not Phase.RUNNING:
            if phase is Phase.CLOSING and threading.current_thread() is not _closing_thread:
                runtime = self.runtime()
                self._closed.wait(5.0 if runtime is None else runtime.config.lock_timeout + 1)
            return
        _set_closing_thread()
        try:
            if self.end_run is not None:
                self.end_run(self.exit.fields())
        finally:
            self.phase = Phase.CLOSED
            self._closed.set()

    def after_fork(self) -> None:
        """In a forked child: a new run, a new exit to record, no closer thread yet."""
        self.phase = Phase.RUNNING
        self.exit = ExitRecord()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.closer.after_fork()
        self.hooks_pending = True
        self._mp_watched = False

    def reset_for_tests(self) -> None:
        """Start over as if nothing had ended (runlog's tests run many runs in one process)."""
        self.phase = Phase.RUNNING
        self.exit = ExitRecord()
        self._closed = threading.Event()


_closing_thread: threading.Thread | None = None


def _set_closing_thread() -> None:
    global _closing_thread
    _closing_thread = threading.current_thread()


def _in_multiprocessing_child() -> bool:
    mp = sys.modules.get("multiprocessing")
    return mp is not None and mp.parent_process() is not None


def deadline(timeout: float) -> float:
    """The monotonic time at which a wait of ``timeout`` seconds ends."""
    return time.monotonic() + timeout


life = Lifecycle()
"""The process's lifecycle (it starts over in a forked child: :meth:`Lifecycle.after_fork`)."""
# runlog/__init__.py registers the atexit hook at `import runlog`, so that it runs after
# every hook registered later; it calls life.close().

_fork_hooks: list[Callable[[], None]] = []


def on_fork(hook: Callable[[], None]) -> None:
    """Run ``hook`` in a forked child, after the lifecycle has started over."""
    _fork_hooks.append(hook)


def _after_fork_in_child() -> None:
    life.after_fork()
    for hook in _fork_hooks:
        hook()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["ExitRecord", "Lifecycle", "Phase", "deadline", "exit_code", "life", "on_fork"]
