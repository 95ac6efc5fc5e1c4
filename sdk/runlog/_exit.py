"""Ending a run: ``process.exited`` on normal exit, unhandled exception and SIGTERM/SIGINT.

The process must end exactly as it would without runlog, so every hook here chains to
what was there before and changes nothing else:

* ``sys.excepthook`` notes the exception (a ``KeyboardInterrupt`` is SIGINT), then the
  previous hook prints the traceback as usual;
* ``sys.exit`` is wrapped only to learn the exit code;
* SIGTERM: if the application installed a handler, it still runs (we note the signal
  first); if the default was in place, runlog flushes, restores the default and
  re-sends the signal, so the parent still sees "killed by SIGTERM";
* ``atexit`` finally logs ``process.exited`` and writes everything queued;
* a ``multiprocessing`` child started by fork leaves through ``os._exit``, skipping
  ``atexit``; a multiprocessing finalizer covers it.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

Finish = Callable[..., None]

_finish: Finish | None = None
_installed = False
_done = False
_done_lock = threading.Lock()
_info: dict[str, Any] = {"reason": "normal", "exit_code": 0}
_previous: dict[int, Any] = {}


def install(finish: Finish) -> None:
    """Hook process exit once per process; ``finish(**fields)`` ends the run."""
    global _finish, _installed
    _finish = finish
    if _installed:
        return
    _installed = True
    atexit.register(_at_exit)
    previous_hook = sys.excepthook

    def excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        note_exception(exc)
        previous_hook(kind, exc, tb)

    sys.excepthook = excepthook
    _wrap_sys_exit()
    _install_signal(signal.SIGTERM)


def note_exception(exc: BaseException) -> None:
    """Record the exception that is ending the process."""
    if isinstance(exc, KeyboardInterrupt):
        _info.update(reason="signal", signal="SIGINT", exit_code=128 + signal.SIGINT)
    else:
        _info.update(
            reason="exception",
            exit_code=1,
            error_type=type(exc).__qualname__,
            error=_safe_str(exc),
        )


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)[:2000]
    except Exception:
        return f"<unprintable {type(exc).__qualname__}>"


def _wrap_sys_exit() -> None:
    original = sys.exit

    def exit(status: object = None) -> Any:
        if status is None:
            code = 0
        elif isinstance(status, int):
            code = status
        else:
            code = 1
        _info["exit_code"] = code
        return original(status)  # type: ignore[arg-type]

    exit.__doc__ = original.__doc__
    exit.__wrapped__ = original  # type: ignore[attr-defined]
    sys.exit = exit


def _install_signal(signum: signal.Signals) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    current = signal.getsignal(signum)
    if current is signal.SIG_IGN or current is None:
        return
    _previous[signum] = current
    signal.signal(signum, _on_signal)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    _info.update(reason="signal", signal=name, exit_code=128 + signum)
    previous = _previous.get(signum)
    if callable(previous):
        previous(signum, frame)  # the application's handler decides what happens
        return
    finish_once()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def finish_once() -> None:
    """Log ``process.exited`` with what is known of the exit, at most once per process."""
    global _done
    with _done_lock:
        if _done or _finish is None:
            return
        _done = True
    _finish(**_info)


def _at_exit() -> None:
    finish_once()


def after_fork() -> None:
    """In a forked child: a new run, a new exit to record."""
    global _done, _done_lock
    _done = False
    _done_lock = threading.Lock()
    _info.clear()
    _info.update(reason="normal", exit_code=0)


def watch_multiprocessing_child() -> None:
    """In a multiprocessing child, end the run from multiprocessing's own exit path.

    Such a child leaves through ``os._exit`` (fork, forkserver), which skips
    ``atexit``; multiprocessing runs its finalizers first.  Called when a run starts,
    which is after multiprocessing has reset its finalizer registry in the child.
    """
    mp = sys.modules.get("multiprocessing")
    if mp is None or mp.parent_process() is None:
        return
    import multiprocessing.util as util

    util.Finalize(None, finish_once, exitpriority=-100)


__all__ = [
    "after_fork",
    "finish_once",
    "install",
    "note_exception",
    "watch_multiprocessing_child",
]
