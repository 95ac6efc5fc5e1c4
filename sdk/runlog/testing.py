"""Capture runlog events in a temporary database, for tests of code that uses runlog.

::

    from runlog.testing import capture

    def test_claims_a_task():
        with capture() as events:
            claim_next_task()
        (event,) = events.of_type("task.claimed")
        assert event.payload["task_id"] == 7

Inside the block the process logs, synchronously, to a fresh SQLite file under a run of
its own, and so do the child processes it starts there (they inherit the capture's
``PARENT_RUN_ID`` and ``RUNLOG_DB``): a supervisor's workers are captured with it.  The
events stay readable after the block, and runlog is back to what it was before (its
run, its database, what its children inherit).

A pytest fixture is three lines::

    @pytest.fixture
    def events():
        with capture() as captured:
            yield captured
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import _propagation, _runs, _scrub
from ._config import resolve
from ._store import Event, Reader


class Capture:
    """The events logged inside a :func:`capture` block."""

    def __init__(self, runtime: _runs.Runtime, db_path: Path) -> None:
        self._runtime = runtime
        self.db_path = db_path
        assert runtime.run is not None
        self.run_id = runtime.run.run_id
        self._final: list[Event] | None = None

    def all(self) -> list[Event]:
        """Every event captured so far (after the block: all of them), in order."""
        if self._final is not None:
            return list(self._final)
        self._runtime.sink.flush()
        return Reader(self._runtime.store).events()

    def of_type(self, event_type: str) -> list[Event]:
        """The events of one type, in order."""
        return [e for e in self.all() if e.event_type == event_type]

    def _close(self) -> None:
        self._final = self.all()

    def types(self) -> list[str]:
        """The event types in order, without ``process.started``: handy in assertions."""
        return [e.event_type for e in self.all() if e.event_type != "process.started"]


@contextmanager
def capture(role: str = "test", **settings: Any) -> Iterator[Capture]:
    """Log to a temporary database (sync mode) for the duration of the block."""
    state = _runs._state
    saved_env = {name: os.environ.get(name) for name in (_runs.ENV_VAR, _runs.DB_VAR)}
    scrubber = _scrub.active()  # the new runtime sets its own; the application's comes back
    saved_trace = _propagation.snapshot()
    with tempfile.TemporaryDirectory(prefix="runlog-capture-") as folder:
        db_path = Path(folder) / "events.db"
        config = resolve({"db": str(db_path), "role": role, "sync": True, **settings})
        runtime = _runs.Runtime(config)
        runtime.create_store()
        with state.lock:
            previous, state.runtime = state.runtime, runtime
        token = _runs._current.set(runtime.start_run(None, explicit=True))
        captured = Capture(runtime, db_path)
        try:
            yield captured
        finally:
            captured._close()
            _runs._current.reset(token)
            with state.lock:
                state.runtime = previous
            runtime.close()
            _scrub.use(scrubber)
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            _propagation.restore(saved_trace)


__all__ = ["Capture", "capture"]
