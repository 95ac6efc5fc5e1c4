"""``instrument_openai()`` / ``instrument_anthropic()``: the doors from runlog to its integrations.

runlog never imports an integration (or the library it instruments) until asked, so
``import runlog`` stays cheap; the integrations themselves build only on runlog's
public API (``llm_call``).  Instrumenting also imports :mod:`runlog._llm` (with the
token counting's client) and loads the price table, so that neither is paid for on the
first call's path: an import holds the GIL while it runs, on whatever thread the first
call runs, an event loop's included.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from . import _llm, _prices  # noqa: F401  (_llm: imported here, see the docstring)


def _integration(package: str, library: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ImportError(
            f"runlog.instrument_{library}() needs the {library} package and runlog's "
            f"integration for it: pip install 'runlog[{extra}]' ({exc})"
        ) from exc


def instrument_openai(**options: Any) -> None:
    """Log every OpenAI client call as ``llm_call.completed`` / ``llm_call.failed``.

    Idempotent.  Options: ``stream_usage=True`` asks streaming chat calls for exact
    usage (hiding the extra chunk from the caller); ``capture_content=True`` records
    prompts and completions (off by default: they may hold personal data).
    """
    _integration("runlog_openai", "openai", "openai").instrument(**options)
    _prices.load()


def uninstrument_openai() -> None:
    """Restore the OpenAI client's original methods."""
    _integration("runlog_openai", "openai", "openai").uninstrument()


def instrument_anthropic(**options: Any) -> None:
    """Log every Anthropic client call as ``llm_call.completed`` / ``llm_call.failed``.

    Idempotent.  Option: ``capture_content=True`` records prompts and completions (off
    by default: they may hold personal data).
    """
    _integration("runlog_anthropic", "anthropic", "anthropic").instrument(**options)
    _prices.load()


def uninstrument_anthropic() -> None:
    """Restore the Anthropic client's original methods."""
    _integration("runlog_anthropic", "anthropic", "anthropic").uninstrument()


__all__ = [
    "instrument_anthropic",
    "instrument_openai",
    "uninstrument_anthropic",
    "uninstrument_openai",
]
