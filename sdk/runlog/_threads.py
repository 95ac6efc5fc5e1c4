"""runlog's own threads: daemons that never take the signals meant for the program.

A signal sent to a process goes to any one of its threads that does not block it.
Python runs the handler on the main thread only, when it next runs bytecode, so a
SIGTERM the kernel hands to runlog's writer while the main thread sleeps would leave
the program's own handler waiting until the sleep ends (minutes), where without
runlog's threads the sleep would have been interrupted at once.  So each of runlog's
threads blocks the signals runlog watches before it runs: they land on the program's
threads, as they would without runlog.  (runlog's closer still wakes for them: Python's
C handler writes the number to its socket, the wakeup fd, from whichever thread
received the signal.)
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals runlog ends the run for (see :mod:`runlog._lifecycle`)."""


def thread(target: Callable[..., object], name: str, *args: Any) -> threading.Thread:
    """A daemon thread (not started) that blocks :data:`SIGNALS`, then runs ``target``."""
    return threading.Thread(target=_quiet, args=(target, *args), name=name, daemon=True)


def _quiet(target: Callable[..., object], *args: Any) -> None:
    if hasattr(signal, "pthread_sigmask"):  # POSIX
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    target(*args)


__all__ = ["SIGNALS", "thread"]
