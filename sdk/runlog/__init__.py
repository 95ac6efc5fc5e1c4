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

``import runlog`` imports nothing but this file: every process of an observed system
pays for it, most of them before they log anything.  Each public name is imported on
first use (PEP 562), so a process pays for what its first event needs when it logs it.
"""

from __future__ import annotations

import atexit
import sys
from importlib import import_module

TYPE_CHECKING = False  # not typing's: importing typing alone costs more than this file

__version__ = "0.1.0"

# name -> the private module that defines it (a module itself where the value is "")
_HOME = {
    "ConfigurationError": "._errors",
    "RunlogError": "._errors",
    "StoreUnavailableError": "._errors",
    "report_internal_error": "._errors",
    "instrument_anthropic": "._instrument",
    "instrument_openai": "._instrument",
    "uninstrument_anthropic": "._instrument",
    "uninstrument_openai": "._instrument",
    "LLMCall": "._llm",
    "llm_call": "._llm",
    "flush": "._log",
    "log_event": "._log",
    "child_env": "._runs",
    "current_run_id": "._runs",
    "init": "._runs",
    "Span": "._span",
    "current_span_id": "._span",
    "Event": "._store",
    "span": "._tracing",
    "traced_event": "._tracing",
    "patching": "",
    "state": "",
    "testing": "",
}

if TYPE_CHECKING:
    from typing import Any

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


def __getattr__(name: str) -> Any:
    """Import a public name on first use, then keep it as a plain module attribute."""
    try:
        home = _HOME[name]
    except KeyError:
        raise AttributeError(f"module 'runlog' has no attribute {name!r}") from None
    from . import _forksafe

    with _forksafe.IMPORT:  # a fork waits for it (the module's import lock is this thread's)
        value = import_module(home or f".{name}", __name__)
    if home:
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))


def _at_exit() -> None:
    """End the run at interpreter exit (registered at import: after every later hook),
    then let the token counter process go: the run's last counts are drained by now."""
    lifecycle = sys.modules.get("runlog._lifecycle")
    if lifecycle is not None:
        lifecycle.life.close()
    counter = sys.modules.get("runlog._counter")
    if counter is not None:
        counter.close()


atexit.register(_at_exit)

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
