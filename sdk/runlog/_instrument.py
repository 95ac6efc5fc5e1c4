"""``instrument_openai()``: the one door from runlog to its OpenAI integration.

runlog never imports an integration (or the library it instruments) until asked, so
``import runlog`` stays cheap; the integration itself builds only on runlog's public
API (``llm_call``).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

_EXTRA = "pip install 'runlog[openai]'"


def _integration() -> ModuleType:
    try:
        return importlib.import_module("runlog_openai")
    except ImportError as exc:
        raise ImportError(
            f"runlog.instrument_openai() needs the openai package and runlog's OpenAI "
            f"integration: {_EXTRA} ({exc})"
        ) from exc


def instrument_openai(**options: Any) -> None:
    """Log every OpenAI client call as ``llm_call.completed`` / ``llm_call.failed``.

    Idempotent.  Options: ``stream_usage=True`` asks streaming chat calls for exact
    usage (hiding the extra chunk from the caller); ``capture_content=True`` records
    prompts and completions (off by default: they may hold personal data).
    """
    _integration().instrument(**options)


def uninstrument_openai() -> None:
    """Restore the OpenAI client's original methods."""
    _integration().uninstrument()


__all__ = ["instrument_openai", "uninstrument_openai"]
