"""The current span at the moment a child process is started, carried into the child.

``PARENT_RUN_ID`` and ``TRACEPARENT`` for the run itself sit in ``os.environ`` from run
start (:mod:`runlog._propagation`), so every child inherits them.  The *span* current
in the spawning thread cannot live there: ``os.environ`` is one per process, and
rewriting it on every span start and end would cost every span two ``putenv`` calls
and still be wrong while two threads spawn at once.  So each way of starting a child
picks up the span where the child is made, in the spawning thread, and costs nothing
outside a span:

* ``subprocess`` (``Popen`` and everything built on it): a ``Popen`` started inside
  a span gets the span's ``TRACEPARENT`` and ``PARENT_SPAN_ID`` in a copy of its
  environment: of ``os.environ`` without an ``env``, or of an ``env`` derived from
  this run's (one that carries its ``PARENT_RUN_ID``: ``runlog.child_env()`` or a copy
  of ``os.environ``, made earlier or outside the span).  Any other ``env`` is left
  as the caller made it;
* ``os.exec*`` without an environment (``execv``, ``execl``, ``execlp``, ``execvp``):
  the variables are written into ``os.environ`` just before the image is replaced
  (in a forked child that has not started a run, the span it was forked in);
* ``os.fork`` (and multiprocessing's ``fork``): a ``before`` fork hook notes the span
  of the forking thread; the child takes it as its parent span;
* multiprocessing ``spawn`` and ``forkserver`` (and ``ProcessPoolExecutor``, whose
  workers are started by ``submit``): ``Process.start`` notes the span on the process
  object, which travels to the child with it; the child reads it when its run starts.
  multiprocessing is patched only once something imports it.

A span open when a child is started is that child run's ``parent_span_id``; for
reused workers (a pool) it is the span in which the worker was started.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from . import _forksafe, _propagation
from ._errors import report_internal_error

_STASH = "_runlog_parent_span"
_lock = _forksafe.lock()
_installed = False
_fork_spans: dict[int, int | None] = {}
"""The span of each thread that is forking right now (two threads may fork at once)."""


def _current_span() -> int | None:
    """The current span's id, importing nothing: this runs inside fork hooks too, where
    an import (``_span`` pulls in ``concurrent.futures``) would register fork hooks of its
    own half-way through the fork, and their ``after`` would run without their ``before``.
    """
    spans = sys.modules.get("runlog._span")
    if spans is None:
        return None  # no span can be open before the module that makes them is loaded
    span_id: int | None = spans.current_span_id()
    return span_id


def under_current_span(env: dict[str, str]) -> dict[str, str]:
    """``env`` (a child's, built by hand) with ``TRACEPARENT`` and ``PARENT_SPAN_ID`` for
    the current span, or the run's own span outside any (``runlog.child_env()``)."""
    return _propagation.apply(env, _current_span())


# -- run start ----------------------------------------------------------------------
def start_fields(parent_run_id: int | None) -> dict[str, Any]:
    """``process.started`` fields for the trace context this process was started in."""
    _adopt_multiprocessing_stash()
    return _propagation.start_fields(parent_run_id)


def run_started(run_id: int, parent_run_id: int | None, started_ns: int) -> None:
    """Publish the run's trace context to children (the run's own span)."""
    _propagation.run_started(run_id, parent_run_id, started_ns)


def _adopt_multiprocessing_stash() -> None:
    mp = sys.modules.get("multiprocessing")
    if mp is None:
        return
    stash = getattr(mp.current_process(), _STASH, None)
    if isinstance(stash, tuple) and len(stash) == 2 and stash != (None, None):
        header, span = stash  # (None, None): the parent had no run to pass on
        _propagation.inherit(header, span)


# -- the patches ----------------------------------------------------------------------
def _popen_init(wrapped: Callable[..., None], instance: Any, args: Any, kwargs: Any) -> None:
    span = _current_span()
    if span is not None:
        positional = len(args) > _ENV_AT
        env = args[_ENV_AT] if positional else kwargs.get("env")
        if env is None:
            env = os.environ
        elif env.get(_runs_var) is None or env.get(_runs_var) != os.environ.get(_runs_var):
            env = None  # an environment of the caller's own making: theirs to fill
        if env is not None:
            env = _propagation.apply(dict(env), span)
            if positional:
                args = (*args[:_ENV_AT], env, *args[_ENV_AT + 1 :])
            else:
                kwargs["env"] = env
    wrapped(*args, **kwargs)


_ENV_AT = 10
"""``env`` is ``Popen``'s 11th parameter."""
_runs_var = "PARENT_RUN_ID"


def _execv(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    span = _current_span()
    if span is not None:
        os.environ.update(_propagation.child_vars(span))
    else:  # fork, then exec before a run of its own: pass on what the fork inherited
        _propagation.export_inherited()
    return wrapped(*args, **kwargs)


def _process_start(wrapped: Callable[..., None], instance: Any, args: Any, kwargs: Any) -> None:
    span = _current_span()
    setattr(instance, _STASH, (_propagation.header_for(span), span))
    wrapped(*args, **kwargs)


def _patch(owner: Any, name: str, wrapper: Callable[..., Any]) -> None:
    import wrapt

    attr = getattr(owner, name)
    if not (isinstance(attr, wrapt.FunctionWrapper) and attr._self_wrapper is wrapper):
        wrapt.wrap_function_wrapper(owner, name, wrapper)


def _patch_subprocess(module: Any) -> None:
    _patch(module.Popen, "__init__", _popen_init)


def _patch_multiprocessing(module: Any) -> None:
    _patch(module.BaseProcess, "start", _process_start)


def install() -> None:
    """Patch the ways children start, once per process (multiprocessing when imported).

    Called when the first span becomes current: outside spans the run's variables in
    ``os.environ`` are all a child needs, so a process that never opens a span never
    pays for the patches (nor for importing wrapt).
    """
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    try:
        import wrapt

        _patch(os, "execv", _execv)
        wrapt.register_post_import_hook(_patch_subprocess, "subprocess")
        wrapt.register_post_import_hook(_patch_multiprocessing, "multiprocessing.process")
    except Exception as exc:
        report_internal_error("patching how child processes start", exc)


# -- fork -------------------------------------------------------------------------------
def _before_fork() -> None:
    try:
        _fork_spans[threading.get_ident()] = _current_span()
    except Exception:  # never let a fork fail for runlog's sake
        _fork_spans[threading.get_ident()] = None


def _after_fork_in_parent() -> None:
    _fork_spans.pop(threading.get_ident(), None)


def _after_fork_in_child() -> None:
    fork_span = _fork_spans.get(threading.get_ident())
    _fork_spans.clear()
    process = _propagation._process
    mp = sys.modules.get("multiprocessing")
    if mp is not None:  # a stash on this process's object was its own parent's
        vars(mp.current_process()).pop(_STASH, None)
    if process.run_id:
        _propagation.inherit(_propagation.header_for(fork_span), fork_span)
        process.run_id = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


__all__ = ["install", "run_started", "start_fields", "under_current_span"]
