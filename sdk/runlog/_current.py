"""The current span: one ``ContextVar``, in a module of its own so that ``log_event``
can read it without importing the thread-propagation machinery of :mod:`runlog._context`."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._span import Span

current: ContextVar[Span | None] = ContextVar("runlog_current_span", default=None)

__all__ = ["current"]
