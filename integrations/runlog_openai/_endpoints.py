"""What each OpenAI endpoint tells about a call: its inputs, and the usage and text of replies.

One :class:`~runlog_providers.Endpoint` per URL path the integration logs.  Each knows
how to turn a request body into ``llm_call`` arguments (what tiktoken counts when usage
is missing), and how to read a complete reply or one streamed item into a
:class:`~runlog_providers.Reply`, the accumulator every call fills in, streamed or not
(defensively: see :mod:`runlog_providers._reply`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from operator import attrgetter
from typing import Any

from runlog_providers import Body, Endpoint, Reply, each
from runlog_providers import get as _get
from runlog_providers import items as _items


# -- usage ---------------------------------------------------------------------------
def _chat_usage(reply: Reply, usage: object) -> None:
    """Chat and legacy completions usage: ``prompt_tokens`` include the cached ones, and
    ``completion_tokens`` the reasoning ones (OpenAI's definitions, kept as they are)."""
    if usage is None:
        return
    reply.usage(usage, "prompt_tokens", "completion_tokens")
    reply.detail("cached_input_tokens", _get(_get(usage, "prompt_tokens_details"), "cached_tokens"))
    details = _get(usage, "completion_tokens_details")
    reply.detail("reasoning_tokens", _get(details, "reasoning_tokens"))
    reply.price(_get(usage, "cost"))  # OpenAI-compatible providers that report a price


def _responses_usage(reply: Reply, usage: object) -> None:
    """Responses usage: the same breakdown, under the Responses API's names."""
    if usage is None:
        return
    reply.usage(usage, "input_tokens", "output_tokens")
    reply.detail("cached_input_tokens", _get(_get(usage, "input_tokens_details"), "cached_tokens"))
    details = _get(usage, "output_tokens_details")
    reply.detail("reasoning_tokens", _get(details, "reasoning_tokens"))


def is_usage_chunk(chunk: object) -> bool:
    """The chunk ``include_usage`` adds at the end: no choices, only usage."""
    return getattr(chunk, "usage", None) is not None and not getattr(chunk, "choices", None)


# -- chat completions ----------------------------------------------------------------
def _chat_inputs(body: Body) -> dict[str, Any]:
    messages = body.get("messages")  # the counter skips entries that are not mappings
    return {"messages": messages} if isinstance(messages, (list, tuple)) else {}


def _chat_result(reply: Reply, obj: Any) -> bool:
    _chat_usage(reply, _get(obj, "usage"))
    reply.model(_get(obj, "model"))
    choices = _get(obj, "choices")
    texts = reply.wants_text()
    for choice in _items(choices):
        reply.finish(_get(choice, "finish_reason"))
        if not texts:
            continue
        message = _get(choice, "message")
        reply.add(_get(message, "content"))
        reply.add(_get(message, "refusal"))
        for call in _items(_get(message, "tool_calls")):
            function = _get(call, "function")
            reply.add(_get(function, "name"))
            reply.add(_get(function, "arguments"))
    return choices is not None


_CHOICES = attrgetter("choices")
_DELTA = attrgetter("delta")
_CONTENT = attrgetter("content")
_REFUSAL = attrgetter("refusal")
_TOOL_CALLS = attrgetter("tool_calls")
_FINISH = attrgetter("finish_reason")
_USAGE = attrgetter("usage")
_STR = frozenset({str})


class _Unusual(Exception):
    """A batch the quick reader leaves to the careful one."""


def _chat_items(reply: Reply, chunks: Sequence[Any]) -> bool:
    """Read chat chunks; whether one carried content.

    Runs over every chunk of every stream, a batch at a time, so the common batch
    (chunks of the client's models, text in ``delta.content``) is read by C code only:
    one pass of ``attrgetter`` per field over the whole batch, no Python per chunk.
    Anything else (a refusal, tool calls, a field missing or of another type) is read
    by :func:`_chat_items_careful`, which the quick reader equals on what it accepts
    (a property test checks): it changes nothing before it has accepted the batch.
    """
    try:
        choices = list(chain.from_iterable(map(_CHOICES, chunks)))
        deltas = list(map(_DELTA, choices))
        if any(map(_REFUSAL, deltas)) or any(map(_TOOL_CALLS, deltas)):
            raise _Unusual
        texts = list(filter(None, map(_CONTENT, deltas)))
        if texts and not _STR.issuperset(map(type, texts)):
            raise _Unusual
        reasons = list(filter(None, map(_FINISH, choices)))
        if reasons and not _STR.issuperset(map(type, reasons)):
            raise _Unusual
        usages = list(filter(None, map(_USAGE, chunks)))
    except Exception:  # an unusual batch: the careful reader, which never raises on shapes
        return _chat_items_careful(reply, chunks)
    reply.text += texts
    if reasons:
        reply.finish(reasons[0])  # the first is kept
    for usage in usages:
        _chat_usage(reply, usage)
    if reply.response_model is None:
        for chunk in chunks:
            reply.model(getattr(chunk, "model", None))
            if reply.response_model is not None:
                break
    return bool(texts)


def _chat_items_careful(reply: Reply, chunks: Sequence[Any]) -> bool:
    """Read chat chunks of any shape, field by field (``getattr`` with defaults)."""
    texts = reply.text
    before = len(texts)
    add = texts.append
    for chunk in chunks:
        usage = getattr(chunk, "usage", None)  # the usage chunk's, or include_usage's null
        if usage is not None:
            _chat_usage(reply, usage)
        if reply.response_model is None:
            reply.model(getattr(chunk, "model", None))
        for choice in getattr(chunk, "choices", None) or ():
            delta = getattr(choice, "delta", None)
            if delta is not None:
                text = getattr(delta, "content", None)
                if type(text) is str and text:
                    add(text)
                refusal = getattr(delta, "refusal", None)
                if refusal is not None:
                    reply.add(refusal)
                for call in getattr(delta, "tool_calls", None) or ():
                    function = getattr(call, "function", None)
                    reply.add(getattr(function, "name", None))
                    reply.add(getattr(function, "arguments", None))
            reason = getattr(choice, "finish_reason", None)
            if reason is not None:
                reply.finish(reason)
    return len(texts) > before


def _chunk_usage_and_model(reply: Reply, chunk: Any) -> None:
    """What chat and legacy completion chunks share: usage (last chunk) and the model."""
    usage = getattr(chunk, "usage", None)
    if usage is not None:
        _chat_usage(reply, usage)
    if reply.response_model is None:
        reply.model(getattr(chunk, "model", None))


# -- legacy completions --------------------------------------------------------------
def _completions_inputs(body: Body) -> dict[str, Any]:
    prompt = body.get("prompt")
    return {"prompt": prompt} if isinstance(prompt, (str, list, tuple)) else {}


def _completions_result(reply: Reply, obj: Any) -> bool:
    _chat_usage(reply, _get(obj, "usage"))
    reply.model(_get(obj, "model"))
    choices = _get(obj, "choices")
    texts = reply.wants_text()
    for choice in _items(choices):
        reply.finish(_get(choice, "finish_reason"))
        if texts:
            reply.add(_get(choice, "text"))
    return choices is not None


def _completion_item(reply: Reply, chunk: Any) -> bool:
    content = False
    for choice in getattr(chunk, "choices", None) or ():
        content = reply.add(getattr(choice, "text", None)) or content
        reason = getattr(choice, "finish_reason", None)
        if reason is not None:
            reply.finish(reason)
    _chunk_usage_and_model(reply, chunk)
    return content


# -- embeddings ----------------------------------------------------------------------
def _embeddings_inputs(body: Body) -> dict[str, Any]:
    given = body.get("input")
    return {"prompt": given} if isinstance(given, (str, list, tuple)) else {}


def _embeddings_result(reply: Reply, obj: Any) -> bool:
    _chat_usage(reply, _get(obj, "usage"))
    reply.output_tokens = 0
    reply.model(_get(obj, "model"))
    return True


def _no_items(reply: Reply, items: Sequence[Any]) -> bool:
    return False


# -- responses -----------------------------------------------------------------------
_ITEM_KEYS = frozenset({"role", "content", "name", "arguments", "output"})


def _responses_inputs(body: Body) -> dict[str, Any]:
    """The input as chat messages, so tiktoken counts it the way it counts chat."""
    messages: list[Mapping[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        messages.append({"role": "system", "content": instructions})
    given = body.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    for item in _items(given):
        if isinstance(item, Mapping):  # keep what the model reads, not ids and types
            messages.append({k: v for k, v in item.items() if k in _ITEM_KEYS})
    return {"messages": messages}


def _responses_content(body: Body) -> Any:
    instructions = body.get("instructions")
    given = body.get("input")
    return given if instructions is None else {"instructions": instructions, "input": given}


def _responses_status(reply: Reply, response: Any) -> None:
    """Usage, model and why it stopped: the incomplete reason, else the status."""
    _responses_usage(reply, _get(response, "usage"))
    reply.model(_get(response, "model"))
    reply.finish(_get(_get(response, "incomplete_details"), "reason"))
    reply.finish(_get(response, "status"))


def _responses_result(reply: Reply, response: Any) -> bool:
    _responses_status(reply, response)
    output = _get(response, "output")
    for item in _items(output if reply.wants_text() else None):
        kind = _get(item, "type")
        if kind == "message":
            for part in _items(_get(item, "content")):
                reply.add(_get(part, "text"))
                reply.add(_get(part, "refusal"))
        elif kind == "function_call":
            reply.add(_get(item, "name"))
            reply.add(_get(item, "arguments"))
    return output is not None


_TEXT_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
    }
)
_END_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _responses_item(reply: Reply, event: Any) -> bool:
    kind = getattr(event, "type", None)
    if kind in _TEXT_EVENTS:
        return reply.add(getattr(event, "delta", None))
    if kind == "response.output_item.added":
        item = getattr(event, "item", None)
        return getattr(item, "type", None) == "function_call" and reply.add(
            getattr(item, "name", None)
        )
    if kind in _END_EVENTS:
        _responses_status(reply, getattr(event, "response", None))
    elif kind == "response.created":
        reply.model(getattr(getattr(event, "response", None), "model", None))
    return False


CHAT = Endpoint(
    "chat",
    _chat_inputs,
    lambda body: body.get("messages"),
    _chat_result,
    _chat_items,
    usage_option=True,
)
COMPLETIONS = Endpoint(
    "completions",
    _completions_inputs,
    lambda body: body.get("prompt"),
    _completions_result,
    each(_completion_item),
    usage_option=True,
)
EMBEDDINGS = Endpoint(
    "embeddings",
    _embeddings_inputs,
    lambda body: body.get("input"),
    _embeddings_result,
    _no_items,
    has_output=False,
)
RESPONSES = Endpoint(
    "responses",
    _responses_inputs,
    _responses_content,
    _responses_result,
    each(_responses_item),
)

ENDPOINTS: dict[str, Endpoint] = {
    "/chat/completions": CHAT,
    "/completions": COMPLETIONS,
    "/embeddings": EMBEDDINGS,
    "/responses": RESPONSES,
}
"""Endpoints by the path the client posts to (``FinalRequestOptions.url``)."""


__all__ = [
    "CHAT",
    "COMPLETIONS",
    "EMBEDDINGS",
    "ENDPOINTS",
    "RESPONSES",
    "is_usage_chunk",
]
