"""Errors runlog raises, and the one place where runlog reports its own faults.

Two kinds of trouble are kept apart (DESIGN.md section 6):

* programming errors at a call site and misconfiguration at ``init()`` raise at once,
  with a message that says what to do (``TypeError``, ``ValueError``,
  :class:`ConfigurationError`);
* runtime faults (a locked or vanished database, a bug of runlog's own) never raise
  into the host program.  They go through :func:`report_internal_error` or
  :func:`warn_once`, which log through the ``runlog`` logger.  Under runlog's own
  test suite ``RUNLOG_RAISE_INTERNAL_ERRORS=1`` makes internal errors raise instead, so
  our bugs fail our tests rather than hide in a log.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque

logger = logging.getLogger("runlog")

_reported: set[str] = set()
_internal_error_count = 0
_reported_lock = threading.Lock()
_internal_errors: deque[BaseException] = deque(maxlen=100)
"""The most recent internal errors (capped: a fault that repeats must not grow memory)."""


class RunlogError(Exception):
    """Base class of the errors runlog raises on purpose."""


class ConfigurationError(RunlogError, ValueError):
    """``init()`` was given (or found in the environment) a setting it cannot use."""


class StoreUnavailableError(RunlogError):
    """The database could not be reached or written when ``init()`` needed it."""


def _raise_internal() -> bool:
    return os.environ.get("RUNLOG_RAISE_INTERNAL_ERRORS", "") not in ("", "0")


def report_internal_error(context: str, exc: BaseException, *, reraise: bool = True) -> None:
    """Report a fault inside runlog: log it in production, raise it under our tests.

    Every report is also recorded (the last 100, without their frames), so runlog's
    test suite can fail a test whose internal error happened on the writer thread
    (``reraise=False``), where raising would only kill the thread.
    """
    global _internal_error_count
    _internal_error_count += 1
    _internal_errors.append(exc)
    if reraise and _raise_internal():
        raise exc
    logger.error("runlog internal error while %s", context, exc_info=exc)
    exc.__traceback__ = None  # keep the record, not every frame it pinned


def internal_errors() -> list[BaseException]:
    """The last internal errors seen in this process, oldest first (for runlog's own tests)."""
    return list(_internal_errors)


def internal_error_count() -> int:
    """How many internal errors this process has reported (not capped)."""
    return _internal_error_count


def safe_str(exc: BaseException, limit: int | None = None) -> str:
    """The exception's message (cut at ``limit``), even when its ``__str__`` is broken."""
    try:
        return str(exc)[:limit]
    except Exception:
        return f"<unprintable {type(exc).__qualname__}>"


def warn_once(key: str, message: str, *args: object) -> bool:
    """Log ``message`` as a warning the first time ``key`` is seen; return whether it was.

    Runtime faults tend to repeat once per event; one line in the log is enough.
    """
    with _reported_lock:
        if key in _reported:
            return False
        _reported.add(key)
    logger.warning(message, *args)
    return True


def after_fork() -> None:
    """In a forked child: a thread of the parent may have held the lock at fork time."""
    global _reported_lock
    _reported_lock = threading.Lock()


def forget_warning(key: str) -> None:
    """Allow the warning ``key`` to be logged again (after the fault has cleared)."""
    with _reported_lock:
        _reported.discard(key)


__all__ = [
    "ConfigurationError",
    "RunlogError",
    "StoreUnavailableError",
    "after_fork",
    "forget_warning",
    "internal_error_count",
    "internal_errors",
    "logger",
    "report_internal_error",
    "safe_str",
    "warn_once",
]
