"""A process's lifecycle: ``running → closing → closed``, and every way a run ends.

This module owns everything that ends a run — falling off the end of the program, an
unhandled exception, ``sys.exit``, SIGTERM/SIGINT, a multiprocessing child returning,
``init()`` superseding an implicit run — and fork.  :mod:`runlog._runs` keeps identity
and propagation only.  The rules (README.md, "Lifecycle guarantees"):

* **A signal handler does no I/O and takes no lock.**  It notes the signal, then either
  hands over to the handler the application installed (before or after ``init()``:
  ``signal.signal`` is wrapped so runlog stays in front) or, where the default
  disposition was in place, restores that disposition and wakes the *closer*, a
  thread of runlog's parked on a socket that is also the wakeup fd (so it wakes even
  when the main thread cannot run the handler yet).  The closer ends the run
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
import contextlib
import enum
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from . import (
    _forksafe,  # noqa: F401  (first: its fork hooks run before every other one)
    _threads,
)
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
_WATCHED = _threads.SIGNALS
_signal = signal.signal
_getsignal = signal.getsignal
_set_wakeup_fd = signal.set_wakeup_fd
Handler = Callable[[int, "FrameType | None"], Any] | int | None


class _Signals:
    """runlog's handler in front of whatever the application sets for SIGTERM/SIGINT.

    Python runs a handler only when the main thread next executes bytecode, so a
    signal that lands just before a blocking call (``time.sleep``'s syscall, or on
    another thread) would wait for that call to end, where the default disposition
    kills at once.  The C-level part of every Python handler writes the signal's
    number to the *wakeup fd*; runlog claims it (when nobody else has) so the closer
    thread wakes at once whatever the main thread is doing.  An application or event
    loop that sets its own wakeup fd gets it (and is told none was set, so Trio does
    not warn); runlog's comes back when they put theirs away.  Their loop wakes the
    main thread on a signal anyway, and runlog's handler then wakes the closer itself.
    """

    def __init__(self) -> None:
        self.chained: dict[int, Handler] = {}
        self.patched = False
        self.handler = self.handle  # one bound method, so identity checks hold
        self.wakeup = -1
        """The write end of the closer's socket while it is the wakeup fd (else -1)."""

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
        self._claim_wakeup()
        if not self.patched:
            self.patched = True
            signal.signal = self.signal
            signal.getsignal = self.getsignal
            signal.set_wakeup_fd = self.set_wakeup_fd
        return True

    def _claim_wakeup(self) -> None:
        fd = life.closer.wakeup_fd()
        if fd < 0 or self.wakeup == fd:
            return
        previous = _set_wakeup_fd(fd, warn_on_full_buffer=False)
        if previous != -1:  # the application's own: leave it in place
            _set_wakeup_fd(previous)
            return
        self.wakeup = fd

    def handle(self, signum: int, frame: FrameType | None) -> Any:
        life.exit.note_signal(signum)
        chained = self.chained.get(signum, signal.SIG_DFL)
        if callable(chained):
            return chained(signum, frame)  # the application's (or Python's SIGINT) handler
        _signal(signum, signal.SIG_DFL)  # first: a second signal, or the closer's, kills
        life.closer.release(signum)
        return None

    def takes(self, signum: int) -> bool:
        """Whether runlog ends the run for ``signum`` (its disposition is the default)."""
        return signum in self.chained and not callable(self.chained[signum])

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

    def set_wakeup_fd(self, fd: int, /, *, warn_on_full_buffer: bool = True) -> int:
        """``signal.set_wakeup_fd``: the caller's fd replaces runlog's, which returns
        when the caller sets -1; runlog's own is never reported as set."""
        previous = _set_wakeup_fd(fd, warn_on_full_buffer=warn_on_full_buffer)
        if fd == -1 and self.wakeup != -1:
            _set_wakeup_fd(self.wakeup, warn_on_full_buffer=False)
        return -1 if previous == self.wakeup and previous != -1 else previous

    def after_fork(self) -> None:
        """The child's closer gets a new socket: never write to the parent's."""
        if self.wakeup != -1:
            self.wakeup = -1
            with contextlib.suppress(ValueError):  # forked from a thread: not main here
                _set_wakeup_fd(-1)


# -- the closer thread -------------------------------------------------------------
class CloserPhase(enum.Enum):
    """The closer's life; only the closer thread moves it past ``PARKED``."""

    IDLE = "idle"
    """No closer thread (no run yet, or a forked child before its run)."""
    PARKED = "parked"
    """Waiting on its socket for a signal whose disposition is the default."""
    CLOSING = "closing"
    """Ending the run for a signal."""
    DONE = "done"
    """The run is ended; the signal is (being) re-sent to the main thread."""


class _Closer:
    """A parked thread that ends the run for a signal, then re-sends the signal.

    It wakes on a byte from its socket: the signal's number, written by Python's
    C-level handler (the socket is the wakeup fd) or by runlog's handler.  It then
    ends the run and sends the signal to the main thread, whose blocking call (if
    any) is interrupted, so runlog's handler runs, restores the default disposition
    and the process dies by the signal, as it would have without runlog.
    """

    def __init__(self) -> None:
        self.phase = CloserPhase.IDLE
        self._read: socket.socket | None = None
        self._write: socket.socket | None = None

    def start(self) -> None:
        if self.phase is not CloserPhase.IDLE:
            return
        read, write = socket.socketpair()
        write.setblocking(False)
        self._read, self._write = read, write
        thread = _threads.thread(self._run, "runlog-lifecycle", read)
        self.phase = CloserPhase.PARKED
        thread.start()

    def wakeup_fd(self) -> int:
        """The fd Python's C handler should write signal numbers to (-1: none)."""
        return -1 if self._write is None else self._write.fileno()

    def release(self, signum: int) -> None:
        """From runlog's handler, the default disposition restored: end the run."""
        phase, write = self.phase, self._write
        if phase is CloserPhase.IDLE or phase is CloserPhase.DONE or write is None:
            os.kill(os.getpid(), signum)  # nothing to flush, or flushed: die by it now
        elif phase is CloserPhase.PARKED:
            with contextlib.suppress(OSError):  # full: a byte is already waiting
                write.send(bytes([signum]))  # non-blocking, in-process: never waits

    def _run(self, read: socket.socket) -> None:
        while True:
            try:
                data = read.recv(64)
            except OSError:  # pragma: no cover - the socket is never closed under it
                return
            if not data:
                return
            signum = next((n for n in data if life.signals.takes(n)), None)
            if signum is not None:
                break
        self.phase = CloserPhase.CLOSING
        try:
            life.exit.note_signal(signum)  # the main thread's handler may not have run
            life.close()
        except BaseException as exc:  # pragma: no cover - the signal must still be re-sent
            report_internal_error("ending the run for a signal", exc, reraise=False)
        self.phase = CloserPhase.DONE
        # To the main thread: it interrupts a blocking call, so the handler runs (and
        # kills) even when the signal first landed where it could not.
        signal.pthread_kill(threading.main_thread().ident or 0, signum)

    def after_fork(self) -> None:
        """The parent's thread does not exist here, and its socket is the parent's."""
        self.phase = CloserPhase.IDLE
        for sock in (self._read, self._write):
            if sock is not None:
                sock.close()
        self._read = self._write = None


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
        self.signals.after_fork()  # first: no signal may write to a socket closed next
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
