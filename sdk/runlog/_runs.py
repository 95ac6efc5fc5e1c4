"""Runs: a process's identity in the ``events`` table, and how it reaches child processes.

A run begins with its ``process.started`` row; that row's generated ``id`` becomes the
``run_id`` of everything the process logs.  The parent's run comes from
``PARENT_RUN_ID``, read once at start-up; from then on ``os.environ["PARENT_RUN_ID"]``
holds this process's own run_id, so ``subprocess``, ``os.exec*``, ``os.system`` and
``multiprocessing`` children inherit it with no change at their call sites (the
carrier idea of OpenTelemetry's environment propagator, applied to the process's own
environment).  A forked child is a new run whose parent is the forking run; it drops
the parent's connection, queue and writer thread without touching them.

The current run lives in a ContextVar, falling back to the process's run in threads
and tasks that never set one.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from . import _errors, _exit, _propagation, _spawn
from ._config import Config, resolve
from ._errors import ConfigurationError, StoreUnavailableError, warn_once
from ._payload import encode
from ._store import Store, StoreBusy, StoreFault, open_store
from ._writer import BatchWriter, Persister, Sink, SyncWriter

ENV_VAR = "PARENT_RUN_ID"
_MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class Run:
    """One run: the identity every event of a process carries."""

    run_id: int
    parent_run_id: int | None
    role: str
    instance_id: str | None
    pid: int
    explicit: bool
    """Started by ``init()`` (True) or implicitly by the first event (False)."""


def parse_parent_run_id(raw: str | None) -> int | None:
    """Read ``PARENT_RUN_ID``: absent or empty is a root run; malformed warns once."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if text.isascii() and text.isdigit() and 0 < int(text) <= _MAX_ID:
        return int(text)
    warn_once(
        f"bad-parent:{raw}",
        "ignoring malformed %s=%r (expected a positive 64-bit run id); "
        "this run is logged as a root run",
        ENV_VAR,
        raw,
    )
    return None


class Runtime:
    """Everything runlog holds for one process: settings, store, sink and its run."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store: Store = open_store(config.db)
        self.persister = Persister(self.store, config.lock_timeout)
        self.sink: Sink = self._make_sink()
        self.run: Run | None = None
        self.cap = config.max_payload_bytes

    def _make_sink(self) -> Sink:
        # Created while the interpreter shuts down (first event from an atexit handler,
        # say): exit hooks registered now would never run, so write synchronously.
        if self.config.sync or not threading.main_thread().is_alive():
            return SyncWriter(self.persister)
        return BatchWriter(
            self.persister,
            batch_size=self.config.batch_size,
            interval=self.config.flush_interval,
            queue_size=self.config.queue_size,
            backpressure_timeout=self.config.lock_timeout + 5.0,
        )

    def create_store(self) -> None:
        """Create file and schema, waiting out a lock; raise a clear error if impossible."""
        try:
            self.persister.call(self.store.create)
        except (StoreBusy, StoreFault) as exc:
            raise StoreUnavailableError(
                f"runlog cannot use its database {self.store.url}: {exc}"
            ) from None

    def start_run(self, parent_run_id: int | None, *, explicit: bool) -> Run:
        """Log ``process.started`` and adopt its id; raises StoreBusy/StoreFault on failure."""
        cfg = self.config
        identity: dict[str, Any] = {
            "role": cfg.role,
            "instance_id": cfg.instance_id,
            "pid": os.getpid(),
            "version": cfg.version,
            "host": socket.gethostname(),
            "argv": list(sys.argv),
            "python": platform.python_version(),
        }
        if _state.forked_from is not None:
            identity["forked_from_pid"] = _state.forked_from
        identity.update(cfg.identity)
        identity.update(_spawn.start_fields(parent_run_id))
        payload = encode(identity, self.cap)
        ts = _now()
        run_id = self.persister.call(lambda: self.store.start_run(ts, parent_run_id, payload))
        self.run = Run(run_id, parent_run_id, cfg.role, cfg.instance_id, os.getpid(), explicit)
        _spawn.run_started(run_id, parent_run_id, ts)  # TRACEPARENT, next to PARENT_RUN_ID
        os.environ[ENV_VAR] = str(run_id)
        _exit.watch_multiprocessing_child()
        return self.run

    def close(self) -> None:
        self.sink.close(self.config.lock_timeout + 5.0)
        self.store.close()


def _now() -> int:
    return time.time_ns()


class _State:
    """Process-wide: the runtime, and the parent run this process inherited."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.lock = threading.RLock()
        self.inherited: str | None = os.environ.get(ENV_VAR)
        self.forked_from: int | None = None
        self.retry_start_at = 0.0
        self.dropped_early = 0
        """Events dropped before any runtime existed (reported in process.exited)."""


_state = _State()
_current: ContextVar[Run | None] = ContextVar("runlog_current_run", default=None)


def get_runtime() -> Runtime:
    """The process's runtime, created from the environment on first use.

    Without ``init()`` there is no caller to hand a configuration error to, so a bad
    setting or an unusable database is reported once and raises :class:`NoRun`, which
    ``log_event`` absorbs (counting the event as dropped); it is retried after a pause.
    """
    runtime = _state.runtime
    if runtime is not None:
        return runtime
    with _state.lock:
        if _state.runtime is None:
            _check_retry_pause()
            try:
                runtime = Runtime(resolve({}))
                runtime.create_store()
            except (ConfigurationError, StoreUnavailableError) as exc:
                raise _start_failed(exc) from None
            _state.runtime = runtime
            _exit.install(_finish)
        return _state.runtime


class NoRun(StoreUnavailableError):
    """No run could be started implicitly: the database is unusable for now."""


_RETRY_START_S = 5.0


def _check_retry_pause() -> None:
    if time.monotonic() < _state.retry_start_at:
        raise NoRun("runlog could not start this process's run yet")


def _start_failed(exc: Exception) -> NoRun:
    """Note a failed implicit start: report once, pause retries.

    The pause keeps an application that logs often from waiting out a lock on every
    call while the database is unusable; events in that window count as dropped.
    """
    _state.retry_start_at = time.monotonic() + _RETRY_START_S
    warn_once("implicit-start", "runlog could not start this process's run: %s", exc)
    return NoRun(str(exc))


def current_run() -> Run:
    """The run of the calling context, starting the process's run implicitly if needed."""
    run = _current.get()
    if run is not None and run.pid == _pid:
        return run
    runtime = _state.runtime
    if runtime is not None and runtime.run is not None:
        return runtime.run
    return _start_implicit()


def _start_implicit() -> Run:
    """Start the process's run on its first event."""
    runtime = get_runtime()
    with _state.lock:
        if runtime.run is None:
            _check_retry_pause()
            try:
                runtime.start_run(parse_parent_run_id(_state.inherited), explicit=False)
            except (StoreBusy, StoreFault) as exc:
                raise _start_failed(exc) from None
        assert runtime.run is not None
        return runtime.run


def init(
    role: str | None = None,
    instance_id: str | None = None,
    version: str | None = None,
    db: str | None = None,
    *,
    sync: bool | None = None,
    lock_timeout: float | None = None,
    max_payload_bytes: int | None = None,
    queue_size: int | None = None,
    thread_context: bool | None = None,
    **identity: Any,
) -> int:
    """Start this process's run: log ``process.started`` and return its id, the ``run_id``.

    Arguments override ``RUNLOG_*`` environment variables, which override defaults
    (an SQLite file ``runlog.db`` in the working directory).  Extra keyword arguments
    are added to the ``process.started`` payload.  ``thread_context=False`` stops
    threads and thread pools started inside a span from running in its context.

    Raises :class:`ConfigurationError` for a bad setting or unusable path,
    :class:`StoreUnavailableError` if the database stays locked or unreachable past
    ``lock_timeout``, and ``RuntimeError`` if the process already called ``init()``.
    """
    config = resolve(
        {
            "role": role,
            "instance_id": instance_id,
            "version": version,
            "db": db,
            "sync": sync,
            "lock_timeout": lock_timeout,
            "max_payload_bytes": max_payload_bytes,
            "queue_size": queue_size,
            "thread_context": thread_context,
        },
        identity,
    )
    with _state.lock:
        old = _state.runtime
        if old is not None and old.run is not None and old.run.explicit:
            raise RuntimeError(
                f"runlog.init() was already called in this process (run_id "
                f"{old.run.run_id}); call it once, at start-up"
            )
        runtime = Runtime(config)
        runtime.create_store()
        if old is not None:
            # Events were logged before init(): end that implicit run cleanly.
            _finish(old, reason="superseded", exit_code=None)
        try:
            run = runtime.start_run(parse_parent_run_id(_state.inherited), explicit=True)
        except (StoreBusy, StoreFault) as exc:
            raise StoreUnavailableError(
                f"runlog could not log process.started to {runtime.store.url}: {exc}"
            ) from None
        _state.runtime = runtime
        _current.set(run)
        _exit.install(_finish)
        return run.run_id


def current_run_id() -> int:
    """The ``run_id`` of the calling context (starting the run implicitly if needed).

    Raises :class:`StoreUnavailableError` if no run exists and none can be started.
    """
    return current_run().run_id


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) with ``PARENT_RUN_ID`` set to this run.

    For launchers that build a child's environment by hand; ``subprocess`` and
    ``multiprocessing`` children inherit the variable without it.
    """
    result = dict(os.environ if env is None else env)
    result[ENV_VAR] = str(current_run_id())
    return _spawn.under_current_span(result)  # TRACEPARENT, PARENT_SPAN_ID


def _finish(runtime: Runtime | None = None, **exit_fields: Any) -> None:
    """End the run: log ``process.exited``, write everything, close the store."""
    runtime = runtime or _state.runtime
    if runtime is None:
        return
    run = runtime.run
    if run is not None and run.pid == os.getpid():
        fields = dict(exit_fields)
        fields["events_dropped"] = runtime.persister.dropped + _state.dropped_early
        runtime.sink.submit(
            (_now(), run.run_id, run.parent_run_id, "process.exited", encode(fields, runtime.cap))
        )
    runtime.close()
    if runtime.persister.dropped:
        warn_once(
            "exit-dropped",
            "runlog dropped %d event(s) in this run",
            runtime.persister.dropped,
        )


# -- fork -------------------------------------------------------------------------
_pid = os.getpid()


def _after_fork_in_child() -> None:
    global _pid
    parent_pid, _pid = _pid, os.getpid()
    _state.lock = threading.RLock()
    _errors.after_fork()
    _state.forked_from = parent_pid
    _state.retry_start_at = 0.0
    _state.dropped_early = 0
    runtime = _state.runtime
    if runtime is None:
        return
    if runtime.run is not None:
        _state.inherited = str(runtime.run.run_id)
    runtime.store.abandon()
    runtime.sink.abandon()
    runtime.persister.dropped = 0
    runtime.run = None
    _exit.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def note_dropped() -> None:
    """Count one event that could not even be queued (no run could be started)."""
    runtime = _state.runtime
    if runtime is not None:
        runtime.persister.dropped += 1
    else:
        _state.dropped_early += 1


def reset_for_tests() -> None:
    """Close the runtime without logging ``process.exited`` and forget the run (tests only)."""
    runtime, _state.runtime = _state.runtime, None
    if runtime is not None:
        runtime.close()
    _current.set(None)
    _propagation.reset_for_tests()
    _state.retry_start_at = 0.0
    _state.dropped_early = 0
    if _state.inherited is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = _state.inherited


__all__ = [
    "ENV_VAR",
    "ConfigurationError",
    "Run",
    "Runtime",
    "child_env",
    "current_run",
    "current_run_id",
    "get_runtime",
    "init",
    "parse_parent_run_id",
]
