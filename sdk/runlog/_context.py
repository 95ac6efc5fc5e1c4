"""The current span, and how it follows work into threads and thread pools.

The current span lives in one ``ContextVar``, :data:`current`: setting it returns a
token, and resetting with the token puts back what was there (the ``attach``/``detach``
pair of OpenTelemetry's context; :func:`detach` is the reset that never raises).
asyncio copies the context into every task it creates, so a span is already the parent
across ``await``, ``create_task`` and ``gather``.

Threads are different: a ``threading.Thread`` starts in an empty context, and a
``ThreadPoolExecutor`` worker runs every work item in the worker's own context, so
spans would be lost there, the most common complaint about tracing SDKs.
:func:`install` patches ``Thread.start`` and ``ThreadPoolExecutor.submit`` (with
:class:`runlog.patching.Patches`) so that, while a span is current, the new thread,
or the submitted work item, runs in a copy of the starter's context: what
``asyncio.to_thread`` does, and Python 3.14's ``Thread(context=...)``.  The copy is
made per work item, because pool threads are reused.  ``loop.run_in_executor`` goes
through ``submit`` and is covered as well.  Outside a span both calls are left as they
were, at the cost of one ``ContextVar.get``.

runlog applies the process's setting by itself when the first span becomes current
after a runtime is created (:func:`sync`): installed by default, removed when
``RUNLOG_THREAD_CONTEXT=0`` (``Config.thread_context``).  Not covered: threads started
with ``_thread.start_new_thread`` and pools other than ``ThreadPoolExecutor``.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import Token
from typing import TYPE_CHECKING, Any

from . import _runs, _spawn
from ._current import current
from ._errors import report_internal_error
from .patching import Patches

if TYPE_CHECKING:
    from ._runs import Runtime
    from ._span import Span

_synced: Runtime | None = None
"""The runtime whose ``thread_context`` setting is in force."""


def detach(token: Token[Span | None], span: Span | None, parent: Span | None) -> None:
    """Undo ``current.set(span)``, which returned ``token``; never raises.

    A token from another context (a ``with span()`` around a ``yield``, resumed by
    someone else) cannot be reset; then the span is only taken off this context.
    """
    try:
        current.reset(token)
    except ValueError:
        if current.get() is span:
            current.set(parent)


# -- thread propagation -------------------------------------------------------------
def _thread_start(
    wrapped: Callable[..., None], instance: threading.Thread, args: Any, kwargs: Any
) -> None:
    if current.get() is not None:
        instance.run = _in_context(instance, contextvars.copy_context())  # type: ignore[method-assign]
    wrapped(*args, **kwargs)


def _in_context(thread: threading.Thread, context: contextvars.Context) -> Callable[[], None]:
    """``thread.run`` run inside ``context``, for the instance (subclasses' ``run`` too)."""
    run = thread.run

    def run_in_context() -> None:
        try:
            context.run(run)
        finally:
            # Drop the instance attribute: it closes a thread -> closure -> thread cycle.
            vars(thread).pop("run", None)

    return run_in_context


def _pool_submit(
    wrapped: Callable[..., Future[Any]], instance: ThreadPoolExecutor, args: Any, kwargs: Any
) -> Future[Any]:
    if current.get() is None:
        return wrapped(*args, **kwargs)
    run = contextvars.copy_context().run
    # A worker thread that submit() starts must not inherit this span for its life.
    token = current.set(None)
    try:
        return wrapped(run, *args, **kwargs)
    finally:
        current.reset(token)


_PATCHES = Patches(
    (threading.Thread, "start", _thread_start),
    (ThreadPoolExecutor, "submit", _pool_submit),
)
install = _PATCHES.install
"""Run threads and pool work started inside a span in the starter's context (idempotent)."""
uninstall = _PATCHES.uninstall
"""Undo :func:`install`, leaving alone anything patched over it later (idempotent)."""
installed = _PATCHES.installed
"""Whether thread propagation is in force."""


def sync() -> None:
    """Apply the current runtime's ``thread_context`` setting, once per runtime; never raises."""
    global _synced
    try:
        runtime = _runs.get_runtime()
    except _runs.NoRun:  # an unusable database: reported once, where the run failed
        return
    except Exception as exc:
        report_internal_error("reading the thread_context setting", exc)
        return
    if _synced is runtime:
        return
    _synced = runtime
    _spawn.install()  # children started inside a span learn it (nothing to do outside one)
    if runtime.config.thread_context:
        install()
    else:
        uninstall()


def needs_sync() -> bool:
    """True until :func:`sync` has seen the process's current runtime (cheap)."""
    runtime = _runs._state.runtime
    return runtime is None or runtime is not _synced


__all__ = [
    "current",
    "detach",
    "install",
    "installed",
    "needs_sync",
    "sync",
    "uninstall",
]
