"""What each OpenAI endpoint tells about a call: its inputs, and the usage and text of replies.

One :class:`Endpoint` per URL path the integration logs.  Each knows how to turn a
request body into ``llm_call`` arguments (what tiktoken counts when usage is missing),
and how to read a complete reply or one streamed item into a :class:`Reply`, the
accumulator every call fills in, streamed or not.

Replies are read defensively: a field of an unexpected type is skipped, never an error,
so a provider that answers in an odd shape (or a caller who asked for a ``dict``
instead of a model) still gets its call back unchanged.  Complete replies may be
models or plain mappings; streamed items are read with ``getattr`` only, the fast path
for the many small chunks of a stream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class Reply:
    """What the response said so far: usage, finish reason, model, generated text."""

    __slots__ = (
        "finish_reason",
        "input_tokens",
        "keep_text",
        "output_tokens",
        "response_model",
        "text",
    )

    def __init__(self, keep_text: bool = False) -> None:
        self.keep_text = keep_text
        """Keep the text even when usage counts the output (content capture)."""
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.finish_reason: str | None = None
        self.response_model: str | None = None
        self.text: list[str] = []

    def add(self, text: object) -> bool:
        """Append generated ``text`` if it is a non-empty string; say whether it was."""
        if type(text) is str and text:
            self.text.append(text)
            return True
        return False

    def wants_text(self) -> bool:
        """Whether a complete reply's text is needed: to count it, or to capture it."""
        return self.keep_text or self.output_tokens is None

    def usage(self, usage: object, input_key: str, output_key: str) -> None:
        """Take the token numbers of a usage object (or mapping) that has them."""
        if usage is None:
            return
        count_in, count_out = _count(_get(usage, input_key)), _count(_get(usage, output_key))
        if count_in is not None:
            self.input_tokens = count_in
        if count_out is not None:
            self.output_tokens = count_out

    def finish(self, reason: object) -> None:
        """Keep the first finish reason given."""
        if self.finish_reason is None and type(reason) is str and reason:
            self.finish_reason = reason

    def model(self, model: object) -> None:
        """Keep the first model name the reply gives."""
        if self.response_model is None and type(model) is str and model:
            self.response_model = model


Body = Mapping[str, Any]


@dataclass(frozen=True)
class Endpoint:
    """How to log calls of one endpoint."""

    operation: str
    """``operation`` of the event: chat, completions, embeddings, responses."""
    inputs: Callable[[Body], dict[str, Any]]
    """``llm_call`` arguments (``messages=`` or ``prompt=``) for tiktoken to count."""
    content: Callable[[Body], Any]
    """What the request sends to the model, logged only with content capture."""
    result: Callable[[Reply, Any], bool]
    """Read a complete reply (usage, model, finish reason, text); False if it has not
    the endpoint's shape (then its output is unknown rather than empty)."""
    item: Callable[[Reply, Any], bool]
    """Read one streamed item; True if it carried generated content (a first token)."""
    has_output: bool = True
    """False for embeddings, whose output is vectors, never tokens."""
    usage_option: bool = False
    """Streams accept ``stream_options={"include_usage": True}``."""


# -- reading helpers -----------------------------------------------------------------
_MISSING = object()


def _get(obj: object, name: str) -> Any:
    """``obj[name]`` for mappings, else ``obj.name``; ``None`` when missing."""
    if type(obj) is dict:
        return obj.get(name)
    value = getattr(obj, name, _MISSING)
    if value is _MISSING:
        return obj.get(name) if isinstance(obj, Mapping) else None
    return value


def _items(value: object) -> list[Any] | tuple[Any, ...]:
    """``value`` if it is a list or tuple, else nothing to iterate."""
    return value if isinstance(value, (list, tuple)) else ()


def _count(value: object) -> int | None:
    """A token count: a non-negative int (not a bool), else ``None``."""
    if type(value) is int and value >= 0:
        return value
    return None


def is_usage_chunk(chunk: object) -> bool:
    """The chunk ``include_usage`` adds at the end: no choices, only usage."""
    return getattr(chunk, "usage", None) is not None and not getattr(chunk, "choices", None)


# -- chat completions ----------------------------------------------------------------
def _chat_inputs(body: Body) -> dict[str, Any]:
    messages = body.get("messages")  # the counter skips entries that are not mappings
    return {"messages": messages} if isinstance(messages, (list, tuple)) else {}


def _chat_result(reply: Reply, obj: Any) -> bool:
    reply.usage(_get(obj, "usage"), "prompt_tokens", "completion_tokens")
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


def _chat_item(reply: Reply, chunk: Any) -> bool:
    content = False
    for choice in getattr(chunk, "choices", None) or ():
        delta = getattr(choice, "delta", None)
        if delta is not None:
            content = reply.add(getattr(delta, "content", None)) or content
            content = reply.add(getattr(delta, "refusal", None)) or content
            for call in getattr(delta, "tool_calls", None) or ():
                function = getattr(call, "function", None)
                content = reply.add(getattr(function, "name", None)) or content
                content = reply.add(getattr(function, "arguments", None)) or content
        reason = getattr(choice, "finish_reason", None)
        if reason is not None:
            reply.finish(reason)
    _chunk_usage_and_model(reply, chunk)
    return content


def _chunk_usage_and_model(reply: Reply, chunk: Any) -> None:
    """What chat and legacy completion chunks share: usage (last chunk) and the model."""
    usage = getattr(chunk, "usage", None)
    if usage is not None:
        reply.usage(usage, "prompt_tokens", "completion_tokens")
    if reply.response_model is None:
        reply.model(getattr(chunk, "model", None))


# -- legacy completions --------------------------------------------------------------
def _completions_inputs(body: Body) -> dict[str, Any]:
    prompt = body.get("prompt")
    return {"prompt": prompt} if isinstance(prompt, (str, list, tuple)) else {}


def _completions_result(reply: Reply, obj: Any) -> bool:
    reply.usage(_get(obj, "usage"), "prompt_tokens", "completion_tokens")
    reply.model(_get(obj, "model"))
    choices = _get(obj, "choices")
    texts = reply.wants_text()
    for choice in _items(choices):
        reply.finish(_get(choice, "finish_reason"))
        if texts:
            reply.add(_get(choice, "text"))
    return choices is not None


def _completions_item(reply: Reply, chunk: Any) -> bool:
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
    reply.usage(_get(obj, "usage"), "prompt_tokens", "completion_tokens")
    reply.output_tokens = 0
    reply.model(_get(obj, "model"))
    return True


def _no_items(reply: Reply, item: Any) -> bool:
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
    reply.usage(_get(response, "usage"), "input_tokens", "output_tokens")
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
    _chat_item,
    usage_option=True,
)
COMPLETIONS = Endpoint(
    "completions",
    _completions_inputs,
    lambda body: body.get("prompt"),
    _completions_result,
    _completions_item,
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
    _responses_item,
)

ENDPOINTS: dict[str, Endpoint] = {
    "/chat/completions": CHAT,
    "/completions": COMPLETIONS,
    "/embeddings": EMBEDDINGS,
    "/responses": RESPONSES,
}
"""Endpoints by the path the client posts to (``FinalRequestOptions.url``)."""


def endpoint_for(method: object, url: object) -> Endpoint | None:
    """The endpoint a request goes to, or ``None`` for requests that are not model calls."""
    if type(url) is not str:
        return None
    endpoint = ENDPOINTS.get(url) or ENDPOINTS.get("/" + url.strip("/"))
    if endpoint is None or str(method).lower() != "post":
        return None
    return endpoint


__all__ = [
    "CHAT",
    "COMPLETIONS",
    "EMBEDDINGS",
    "ENDPOINTS",
    "RESPONSES",
    "Endpoint",
    "Reply",
    "endpoint_for",
    "is_usage_chunk",
]
