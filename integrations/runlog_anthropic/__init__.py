"""runlog's Anthropic integration: every Anthropic client call logged as an ``llm_call.*`` event.

::

    import runlog

    runlog.instrument_anthropic()     # or runlog_anthropic.instrument()
    client = Anthropic()              # clients made before instrumenting are covered too
    client.messages.create(model="claude-haiku-4-5", max_tokens=256, messages=[...])
    # -> llm_call.completed: provider "anthropic", model_name, latency_ms, input_tokens,
    #    output_tokens, cached_input_tokens, cache_write_input_tokens, reasoning_tokens,
    #    cost_usd, cost_source, finish_reason (the stop_reason), request_id, ...

Covered, for ``Anthropic`` and ``AsyncAnthropic`` alike: ``messages.create`` plain and
with ``stream=True``, the ``messages.stream(...)`` helper (``text_stream``,
``get_final_message()``, leaving early), ``beta.messages`` likewise, and the
``with_raw_response`` / ``with_streaming_response`` variants — tool use, extended
thinking and prompt caching included.  ``messages.count_tokens`` is left alone: it
generates nothing and costs nothing, so logging it as a call would only inflate call
counts.  A call that raises logs ``llm_call.failed`` (``error_type``, ``status_code``)
and re-raises the same exception; each retry the client makes is inside the one call.

Token numbers are Anthropic's own: ``input_tokens`` excludes the cache, whose reads
(``cached_input_tokens``, from ``cache_read_input_tokens``) and writes
(``cache_write_input_tokens``, from ``cache_creation_input_tokens``) come in addition;
``reasoning_tokens`` (``output_tokens_details.thinking_tokens``) are part of
``output_tokens``.  A stream's input and cache numbers come from ``message_start``, its
output from the cumulative ``message_delta``; a stream cut before that counts the
received text with tiktoken (an estimate: Claude's tokenizer is not public).  Content
capture is off by default (``capture_content=True`` logs ``input_content`` and
``output_content``); the API key and headers are never logged.

The core that does the patching, tracking and stream observing is provider-neutral
(:mod:`runlog_providers`); this package holds only the Messages endpoint table and
Anthropic's usage and stream events.  It imports ``anthropic`` only in :func:`instrument`.
"""

from __future__ import annotations

import importlib
import sys

_EXTRA = "pip install runlog[anthropic]"


def instrument(*, capture_content: bool = False) -> None:
    """Log every Anthropic call of this process (idempotent; a second call only updates options).

    Raises ``ImportError`` if the ``anthropic`` package is not installed.
    """
    try:
        importlib.import_module("anthropic")
    except ImportError as exc:
        raise ImportError(
            f"runlog's Anthropic integration needs the anthropic package: {_EXTRA} ({exc})"
        ) from exc
    from runlog_providers import Settings

    from . import _patch

    _patch.install(Settings(capture_content=bool(capture_content)))


def uninstrument() -> None:
    """Restore the Anthropic client's original request methods (idempotent).

    Streams already under way still log when they end.
    """
    patch = sys.modules.get(f"{__name__}._patch")
    if patch is not None:
        patch.uninstall()


__all__ = ["instrument", "uninstrument"]
