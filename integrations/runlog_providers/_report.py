"""The integrations' own faults go through runlog's one reporting function.

A bug of ours must never break the user's call: it is logged through the ``runlog``
logger, and the call goes on as if uninstrumented.  Under runlog's test suite
(``RUNLOG_RAISE_INTERNAL_ERRORS=1``) it raises instead, so our bugs fail our tests.
"""

from __future__ import annotations

from runlog import report_internal_error


def report(label: str, context: str, exc: BaseException, *, reraise: bool = True) -> None:
    """Report a fault of the ``label`` integration (raises under runlog's tests, unless
    ``reraise`` is False: on a thread of ours, where raising would only end the thread)."""
    report_internal_error(f"instrumenting {label} ({context})", exc, reraise=reraise)


__all__ = ["report"]
