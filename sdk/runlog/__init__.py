"""runlog: every event of a multi-process Python system in one SQL table, ``events``.

Quick use::

    import runlog

    runlog.init(role="worker", instance_id="worker-3", version="1.4.2")
    runlog.log_event("task.claimed", {"task_id": 7})

    @runlog.traced_event("task.handled")
    def handle(task): ...

    with runlog.span("task", task_id=7):
        with runlog.llm_call("gpt-4o-mini", messages=messages) as call:
            ...
            call.record(input_tokens=12, output_tokens=40)

Everything public is listed in ``__all__``; modules whose names start with ``_`` are
private and may change in any release.
"""

from __future__ import annotations

from . import patching, state
from ._errors import (
    ConfigurationError,
    RunlogError,
    StoreUnavailableError,
    report_internal_error,
)
from ._instrument import (
    instrument_anthropic,
    instrument_openai,
    uninstrument_anthropic,
    uninstrument_openai,
)
from ._llm import LLMCall, llm_call
from ._log import flush, log_event
from ._runs import child_env, current_run_id, init
from ._span import Span, current_span_id
from ._store import Event
from ._tracing import span, traced_event

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "Event",
    "LLMCall",
    "RunlogError",
    "Span",
    "StoreUnavailableError",
    "__version__",
    "child_env",
    "current_run_id",
    "current_span_id",
    "flush",
    "init",
    "instrument_anthropic",
    "instrument_openai",
    "llm_call",
    "log_event",
    "patching",
    "report_internal_error",
    "span",
    "state",
    "traced_event",
    "uninstrument_anthropic",
    "uninstrument_openai",
]
