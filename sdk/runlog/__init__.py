"""runlog: every event of a multi-process Python system in one SQL table, ``events``.

Quick use::

    import runlog

    runlog.init(role="worker", instance_id="worker-3", version="1.4.2")
    runlog.log_event("task.claimed", {"task_id": 7})

Everything public is listed in ``__all__``; modules whose names start with ``_`` are
private and may change in any release.
"""

from __future__ import annotations

from ._errors import ConfigurationError, RunlogError, StoreUnavailableError
from ._log import flush, log_event
from ._runs import child_env, current_run_id, init
from ._store import Event

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "Event",
    "RunlogError",
    "StoreUnavailableError",
    "__version__",
    "child_env",
    "current_run_id",
    "flush",
    "init",
    "log_event",
]
