"""What the Messages API tells about a call: its inputs, usage, stop reason and text.

One :class:`~runlog_providers.Endpoint`, for ``/v1/messages`` (and the beta path).  A
complete ``Message`` carries its usage; a stream tells it in two parts, input and cache
tokens in ``message_start`` (whose ``output_tokens`` is a placeholder, so not taken),
the cumulative output in ``message_delta`` (newer API versions repeat the input
numbers there too: taken when present).  Generated content — text, thinking, tool-use
names and JSON arguments — is collected for the first token's time, for tiktoken when
usage is missing, and for content capture.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from runlog_providers import Body, Endpoint, Reply, each, get, items

_TEXTS = ("text", "thinking")


def _inputs(body: Body) -> dict[str, Any]:
    """The system prompt and messages as chat messages, for tiktoken to count."""
    messages: list[Mapping[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str):
        messages.append({"role": "system", "content": system})
    elif isinstance(system, (list, tuple)):
        messages.append({"role": "system", "content": _flatten(system)})
    for message in items(body.get("messages")):
        if isinstance(message, Mapping):
            content = message.get("content")
            text = content if isinstance(content, str) else _flatten(items(content))
            messages.append({"role": str(message.get("role") or "user"), "content": text})
    return {"messages": messages}


def _flatten(blocks: Any) -> str:
    """The text of content blocks: text, tool results, tool inputs."""
    parts: list[str] = []
    for block in blocks:
        if not isinstance(block, Mapping):
            continue
        for key in ("text", "thinking"):
            if isinstance(block.get(key), str):
                parts.append(block[key])
        content = block.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, (list, tuple)):
            parts.append(_flatten(content))
        if "input" in block:
            parts.append(json.dumps(block["input"], default=str))
    return "\n".join(parts)


def _content(body: Body) -> Any:
    system = body.get("system")
    given = body.get("messages")
    return given if system is None else {"system": system, "messages": given}


def _usage(reply: Reply, usage: Any, output: bool) -> None:
    """Anthropic usage, as Anthropic defines it (cache tokens beside ``input_tokens``)."""
    if usage is None:
        return
    reply.detail("input_tokens", get(usage, "input_tokens"))
    if output:
        reply.detail("output_tokens", get(usage, "output_tokens"))
    reply.detail("cached_input_tokens", get(usage, "cache_read_input_tokens"))
    reply.detail("cache_write_input_tokens", get(usage, "cache_creation_input_tokens"))
    reply.detail("reasoning_tokens", get(get(usage, "output_tokens_details"), "thinking_tokens"))


def _result(reply: Reply, message: Any) -> bool:
    _usage(reply, get(message, "usage"), output=True)
    reply.model(get(message, "model"))
    reply.finish(get(message, "stop_reason"))
    content = get(message, "content")
    if reply.wants_text():
        for block in items(content):
            for key in _TEXTS:
                reply.add(get(block, key))
            if get(block, "type") == "tool_use":
                reply.add(get(block, "name"))
                reply.add(_json(get(block, "input")))
    return content is not None


def _json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return None


def _item(reply: Reply, event: Any) -> bool:
    kind = getattr(event, "type", None)
    if kind == "content_block_delta":
        delta = getattr(event, "delta", None)
        kind = getattr(delta, "type", None)
        if kind == "text_delta":
            return reply.add(getattr(delta, "text", None))
        if kind == "thinking_delta":
            return reply.add(getattr(delta, "thinking", None))
        if kind == "input_json_delta":
            return reply.add(getattr(delta, "partial_json", None))
        return False
    if kind == "content_block_start":
        block = getattr(event, "content_block", None)
        if getattr(block, "type", None) == "tool_use":
            return reply.add(getattr(block, "name", None))
        return reply.add(getattr(block, "text", None))
    if kind == "message_delta":
        reply.finish(getattr(getattr(event, "delta", None), "stop_reason", None))
        _usage(reply, getattr(event, "usage", None), output=True)
    elif kind == "message_start":
        message = getattr(event, "message", None)
        reply.model(getattr(message, "model", None))
        _usage(reply, getattr(message, "usage", None), output=False)
    return False


MESSAGES = Endpoint("chat", _inputs, _content, _result, each(_item))

ENDPOINTS: dict[str, Endpoint] = {
    "/v1/messages": MESSAGES,
    "/v1/messages?beta=true": MESSAGES,
}
"""Endpoints by the path the client posts to.  ``/v1/messages/count_tokens`` is not one:
counting generates nothing and costs nothing (see the package docstring)."""

__all__ = ["ENDPOINTS", "MESSAGES"]
