"""runlog's OpenAI integration: every OpenAI client call logged as an ``llm_call.*`` event.

::

    import runlog

    runlog.instrument_openai()        # or runlog_openai.instrument()
    client = OpenAI()                 # clients made before instrumenting are covered too
    client.chat.completions.create(model="gpt-4o-mini", messages=[...])
    # -> llm_call.completed: model_name, latency_ms, input_tokens, output_tokens,
    #    token_source, operation, stream, response_model, finish_reason, request_id, ...

Covered, for ``OpenAI`` and ``AsyncOpenAI`` alike: ``chat.completions.create``
(streamed or not, tool calls), ``chat.completions.parse`` and ``.stream()``,
``responses.create`` / ``.parse`` / ``.stream()``, ``embeddings.create``, legacy
``completions.create``, and the ``with_raw_response`` / ``with_streaming_response``
variants of all of them.  A call that raises logs ``llm_call.failed`` (``error_type``,
``status_code``) and re-raises the same exception.

Token numbers come from the response's usage when it has any, else from tiktoken over
the request's input and the received text (``token_source`` says which).  A stream's
call is logged once, when the stream ends, is closed, or is garbage-collected, with
what was received until then; ``stream_end`` says which (``done``, ``closed``,
``abandoned``) and ``time_to_first_token_ms`` when the first generated text arrived.
The user gets the very objects the library returns, chunk for chunk.

Options of :func:`instrument`:

- ``stream_usage=True``: streaming chat and completions requests without
  ``stream_options.include_usage`` get it, so their usage is exact; the extra final
  chunk (empty ``choices``) and the ``usage: null`` it adds to the other chunks are
  hidden, so the caller sees exactly what it would have seen without it.  A stream cut
  before that chunk falls back to tiktoken.
- ``capture_content=True``: also log ``input_content`` (messages, input or prompt as
  sent) and ``output_content`` (the generated text).  Off by default, as prompts may
  hold personal data.  Headers and the API key are never logged.

The patch, the call tracker and the stream observers are the provider-neutral core's
(:mod:`runlog_providers`); this package holds OpenAI's endpoint table, usage reading
(with the breakdown: ``cached_input_tokens`` part of ``input_tokens``,
``reasoning_tokens`` part of ``output_tokens``) and its stream handling.

Testing without the real API: ``runlog_openai.standin`` serves the OpenAI endpoints on
127.0.0.1 with known usage, delays and errors (see its docstring).  It imports neither
``openai`` nor ``httpx``, and neither does this package until :func:`instrument` runs.
"""

from __future__ import annotations

import importlib

_EXTRA = "pip install runlog[openai]"


def instrument(*, stream_usage: bool = False, capture_content: bool = False) -> None:
    """Log every OpenAI call of this process (idempotent; a second call only updates options).

    Raises ``ImportError`` if the ``openai`` package is not installed.
    """
    try:
        importlib.import_module("openai")
    except ImportError as exc:
        raise ImportError(
            f"runlog's OpenAI integration needs the openai package: {_EXTRA} ({exc})"
        ) from exc
    from . import _patch

    _patch.install(
        _patch.Settings(stream_usage=bool(stream_usage), capture_content=bool(capture_content))
    )


def uninstrument() -> None:
    """Restore the OpenAI client's original request methods (idempotent).

    Streams already under way still log when they end.
    """
    import sys

    patch = sys.modules.get(f"{__name__}._patch")
    if patch is not None:
        patch.uninstall()


__all__ = ["instrument", "uninstrument"]
