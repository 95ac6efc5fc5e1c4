"""Runs: a process's identity in the ``events`` table, and how it reaches child processes.

A run begins with its ``process.started`` row; that row's generated ``id`` becomes the
``run_id`` of everything the process logs.  The parent's run comes from
``PARENT_RUN_ID``, read once at start-up; from then on ``os.environ["PARENT_RUN_ID"]``
holds this process's own run_id, so ``subprocess``, ``os.exec*``, ``os.system`` and
``multiprocessing`` children inherit it with no change at their call sites (the
carrier idea of OpenTelemetry's environment propagator, applied to the process's own
environment).  A forked child is a new run whose parent is the forking run; it drops
the parent's connection, queue and writer thread without touching them.

Next to ``PARENT_RUN_ID`` goes the database: ``RUNLOG_DB`` holds the resolved database
(an absolute SQLite path, or a PostgreSQL URL whose password is in an owner-only
``passfile``, never in the environment), so one process tree writes one table whatever
the children's working directory.  How a run *ends* is :mod:`runlog._lifecycle`'s.

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

from . import _errors, _lifecycle, _propagation, _scrub, _spawn
from ._config import Config, resolve
from ._errors import ConfigurationError, StoreUnavailableError, forget_warning, warn_once
from ._later import later
from ._payload import encode
from ._store import Store, StoreBusy, StoreFault, open_store
from ._store._inherit import child_db
from ._writer import BatchWriter, Persister, Sink, SyncWriter

ENV_VAR = "PARENT_RUN_ID"
DB_VAR = "RUNLOG_DB"
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
        _scrub.use(_scrub.for_config(config.scrub))
        self.store: Store = open_store(config.db, lock_timeout=config.lock_timeout)
        self.persister = Persister(self.store, config.lock_timeout)
        self.sink: Sink = self._make_sink()
        self.run: Run | None = None
        self.cap = config.max_payload_bytes

    def _make_sink(self) -> Sink:
        # Created while the process ends (first event from an atexit handler, say):
        # there is no exit left to flush a queue, so write synchronously.
        ending = _lifecycle.life.phase is not _lifecycle.Phase.RUNNING
        if self.config.sync or ending or not threading.main_thread().is_alive():
            return SyncWriter(self.persister)
        return BatchWriter(
            self.persister,
            batch_size=self.config.batch_size,
            interval=self.config.flush_interval,
            queue_size=self.config.queue_size,
            backpressure_timeout=self.config.lock_timeout,
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
        later.reopen()  # a run after an earlier one ended (tests, re-init) may defer again
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
        payload = encode(_scrub.active().identity(identity), self.cap)
        ts = _now()
        run_id = self.persister.call(lambda: self.store.start_run(ts, parent_run_id, payload))
        self.run = Run(run_id, parent_run_id, cfg.role, cfg.instance_id, os.getpid(), explicit)
        _spawn.run_started(run_id, parent_run_id, ts)  # TRACEPARENT, next to PARENT_RUN_ID
        os.environ[ENV_VAR] = str(run_id)
        inherited_db = child_db(cfg.db, self.store)
        if inherited_db is not None:
            os.environ[DB_VAR] = inherited_db
        forget_warning("implicit-start")  # an outage is reported once; this one is over
        return self.run

    def end(self, exit_fields: dict[str, Any] | None) -> None:
        """End this runtime: flush, log ``process.exited`` (if given), close the writer.

        Every wait is bounded by ``lock_timeout`` from here on; what cannot be written
        by then is counted as dropped and reported once.
        """
        self.persister.give_up_at = _lifecycle.deadline(self.config.lock_timeout)
        # Events still being completed (tokens counted) go in before process.exited;
        # from here on they are completed on the thread that ends them.
        later.close(self.config.lock_timeout)
        run = self.run
        if exit_fields is not None and run is not None and run.pid == os.getpid():
            self.sink.flush(self.config.lock_timeout)  # so events_dropped counts the flush
            fields = dict(exit_fields)
            fields["events_dropped"] = self.dropped()
            payload = encode(fields, self.cap)
            self.sink.submit((_now(), run.run_id, run.parent_run_id, "process.exited", payload))
        self.close()
        if self.persister.dropped:
            warn_once(
                "exit-dropped",
                "runlog dropped %d event(s) in this run",
                self.persister.dropped,
            )

    def dropped(self) -> int:
        """Events of this process that could not be written (so far)."""
        return self.persister.dropped + _state.dropped_early

    def close(self) -> None:
        """Stop the writer (later events are written synchronously) and close the store."""
        self.sink.close(self.config.lock_timeout)
        self.store.close()


def _now() -> int:
    return time.time_ns()


class _State:
    """Process-wide: the runtime, and the parent run this process inherited."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.lock = threading.RLock()
        self.inherited: str | None = os.environ.get(ENV_VAR)
        self.inherited_db: str | None = os.environ.get(DB_VAR)
        self.forked_from: int | None = None
        self.retry_start_at = 0.0
        self.dropped_early = 0
        """Events dropped before any runtime existed (reported in process.exited)."""
        self.flushed_drops = 0
        """Drops already answered for by a ``flush()`` (it is honest about later ones)."""


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
            _lifecycle.life.prepare()  # hooked before the row exists: no exit goes unlogged
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
    scrub: bool | list[str] | tuple[str, ...] | None = None,
    **identity: Any,
) -> int:
    """Start this process's run: log ``process.started`` and return its id, the ``run_id``.

    Arguments override ``RUNLOG_*`` environment variables, which override defaults
    (an SQLite file ``runlog.db`` in the working directory).  Extra keyword arguments
    are added to the ``process.started`` payload.  ``thread_context=False`` stops
    threads and thread pools started inside a span from running in its context.
    ``scrub=False`` stores secrets as they are; a list of regular expressions adds key
    patterns to the default ones (README, "The data boundary").

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
            "scrub": scrub,
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
            old.end({"reason": "superseded", "exit_code": None})
        _lifecycle.life.prepare()  # hooked before the row exists: no exit goes unlogged
        try:
            run = runtime.start_run(parse_parent_run_id(_state.inherited), explicit=True)
        except (StoreBusy, StoreFault) as exc:
            raise StoreUnavailableError(
                f"runlog could not log process.started to {runtime.store.url}: {exc}"
            ) from None
        _state.runtime = runtime
        _current.set(run)
        return run.run_id


def current_run_id() -> int:
    """The ``run_id`` of the calling context (starting the run implicitly if needed).

    Raises :class:`StoreUnavailableError` if no run exists and none can be started.
    """
    return current_run().run_id


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) that puts a child under this run.

    It sets ``PARENT_RUN_ID`` to this run and ``RUNLOG_DB`` to the database this
    process writes, so the child writes the same table.  For launchers that build a
    child's environment by hand; ``subprocess`` and ``multiprocessing`` children
    inherit both without it.
    """
    result = dict(os.environ if env is None else env)
    result[ENV_VAR] = str(current_run_id())
    runtime = _state.runtime
    inherited_db = os.environ.get(DB_VAR)
    if runtime is not None:
        inherited_db = child_db(runtime.config.db, runtime.store) or inherited_db
    if inherited_db is not None:
        result[DB_VAR] = inherited_db
    return _spawn.under_current_span(result)  # TRACEPARENT, PARENT_SPAN_ID


def _end_process_run(exit_fields: dict[str, Any]) -> None:
    """The lifecycle's last step: end the process's runtime with what it observed.

    Under the start lock, so a signal that lands while ``process.started`` is being
    written ends the run once it has begun, never half-way (and never misses it).
    """
    with _state.lock:
        runtime = _state.runtime
        if runtime is not None:
            runtime.end(exit_fields)


_lifecycle.life.end_run = _end_process_run
_lifecycle.life.runtime = lambda: _state.runtime


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
    later.after_fork()
    runtime = _state.runtime
    if runtime is None:
        return
    if runtime.run is not None:
        _state.inherited = str(runtime.run.run_id)
    runtime.store.abandon()
    runtime.sink.abandon()
    runtime.persister.dropped = 0
    runtime.persister.give_up_at = None
    runtime.run = None
    if runtime.sink.closed():  # forked during the parent's exit: the child still has one
        runtime.sink = runtime._make_sink()


_lifecycle.on_fork(_after_fork_in_child)


def note_dropped() -> None:
    """Count one event that could not even be queued (no run could be started)."""
    runtime = _state.runtime
    if runtime is not None:
        runtime.persister.dropped += 1
    else:
        _state.dropped_early += 1


def started_run() -> Run | None:
    """The calling context's run if one has started; never starts one (for readers)."""
    run = _current.get()
    if run is not None and run.pid == _pid:
        return run
    runtime = _state.runtime
    return None if runtime is None else runtime.run


def reset_for_tests() -> None:
    """Close the runtime without logging ``process.exited`` and forget the run (tests only)."""
    runtime, _state.runtime = _state.runtime, None
    if runtime is not None:
        runtime.close()
    _current.set(None)
    _propagation.reset_for_tests()
    _state.retry_start_at = 0.0
    _state.dropped_early = 0
    _state.flushed_drops = 0
    _lifecycle.life.reset_for_tests()
    for name, value in ((ENV_VAR, _state.inherited), (DB_VAR, _state.inherited_db)):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


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
    "started_run",
]
