"""Anthropic's Messages API as pure functions: request body and behaviour in, reply out.

``POST /v1/messages`` answers a ``Message`` (text, or a ``tool_use`` block when the
request offers tools, after a ``thinking`` block when it enables extended thinking), or
with ``stream: true`` the real event sequence: ``message_start`` (which carries the
input and cache usage, and ``output_tokens: 1``), a ``ping``, per content block
``content_block_start`` / ``content_block_delta``\\* / ``content_block_stop``, then
``message_delta`` (the stop reason and the cumulative ``output_tokens``) and
``message_stop``.  ``POST /v1/messages/count_tokens`` answers ``input_tokens``.  The
shapes follow the ``anthropic`` package's types, field for field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._behaviour import Behaviour
from ._replies import Event, Exchange, Output, Reply, _generate

SIGNATURE = "c3RhbmQtaW4gc2lnbmF0dXJl"
"""The ``signature`` of thinking blocks (opaque to clients)."""


def _usage(behaviour: Behaviour, output_tokens: int, thinking: bool) -> dict[str, Any]:
    """Anthropic usage: cache reads and writes are in addition to ``input_tokens``; with
    thinking, ``output_tokens_details.thinking_tokens`` are part of ``output_tokens``."""
    usage: dict[str, Any] = {
        "input_tokens": behaviour.input_tokens,
        "cache_creation_input_tokens": behaviour.cache_write_tokens,
        "cache_read_input_tokens": behaviour.cached_input_tokens,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    if thinking:
        usage["output_tokens_details"] = {"thinking_tokens": behaviour.reasoning_tokens}
    return usage


def _choice(choice: object) -> object:
    """Anthropic's tool_choice in the shared decision's terms."""
    if not isinstance(choice, Mapping):
        return None
    kind = choice.get("type")
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        return {"name": choice.get("name")}
    return None


def _answered(messages: object) -> bool:
    """The conversation ends with a tool result (so the model answers in text)."""
    if not isinstance(messages, list) or not messages:
        return False
    content = messages[-1].get("content") if isinstance(messages[-1], Mapping) else None
    return isinstance(content, list) and any(
        isinstance(block, Mapping) and block.get("type") == "tool_result" for block in content
    )


def _thinks(body: Mapping[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")


def messages(ex: Exchange) -> Reply:
    """POST /v1/messages."""
    body = ex.body
    tools = {
        str(t["name"]): t.get("input_schema") or {}
        for t in body.get("tools") or []
        if isinstance(t, Mapping) and "name" in t and t.get("type") in (None, "custom")
    }
    output = _generate(
        ex.behaviour,
        tools,
        _choice(body.get("tool_choice")),
        answered=_answered(body.get("messages")),
        schema=None,
    )
    thinking = ex.behaviour.thinking if _thinks(body) else None
    if ex.stream:
        return _events(ex, output, thinking)
    return _message(ex, output, thinking)


def count_tokens(ex: Exchange) -> Reply:
    """POST /v1/messages/count_tokens."""
    return {"input_tokens": ex.behaviour.input_tokens}


def _stop_reason(ex: Exchange, output: Output) -> str:
    return ex.behaviour.finish_reason or ("end_turn" if output.tool is None else "tool_use")


def _head(ex: Exchange) -> dict[str, Any]:
    return {
        "id": ex.ident("msg_"),
        "type": "message",
        "role": "assistant",
        "model": ex.model,
    }


def _tool_block(ex: Exchange, output: Output, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": ex.ident("toolu_"), "name": output.tool, "input": arguments}


def _message(ex: Exchange, output: Output, thinking: str | None) -> dict[str, Any]:
    """A complete Message."""
    content: list[dict[str, Any]] = []
    if thinking is not None:
        content.append({"type": "thinking", "thinking": thinking, "signature": SIGNATURE})
    if output.tool is None:
        content.append({"type": "text", "text": output.text, "citations": None})
    else:
        content.append(_tool_block(ex, output, json.loads(output.text)))
    message = {
        **_head(ex),
        "content": content,
        "stop_reason": _stop_reason(ex, output),
        "stop_sequence": None,
    }
    if ex.behaviour.usage:
        message["usage"] = _usage(ex.behaviour, ex.behaviour.output_tokens, thinking is not None)
    return message


def _events(ex: Exchange, output: Output, thinking: str | None) -> list[Event]:
    """The event sequence of a streamed Message (see the module docstring)."""
    behaviour = ex.behaviour
    events: list[Event] = []

    def add(name: str, data: dict[str, Any], delta: bool = False) -> None:
        events.append(Event({"type": name, **data}, name=name, delta=delta))

    start = {**_head(ex), "content": [], "stop_reason": None, "stop_sequence": None}
    if behaviour.usage:
        start["usage"] = _usage(behaviour, 1, False)
    add("message_start", {"message": start})
    add("ping", {})
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if thinking is not None:
        pieces = Output(thinking).pieces(None)
        deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces]
        deltas.append({"type": "signature_delta", "signature": SIGNATURE})
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, deltas))
    pieces = output.pieces(behaviour.chunks)
    if output.tool is None:
        text_deltas = [{"type": "text_delta", "text": p} for p in pieces]
        blocks.append(({"type": "text", "text": "", "citations": None}, text_deltas))
    else:
        json_deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        blocks.append((_tool_block(ex, output, {}), json_deltas))
    for index, (block, deltas) in enumerate(blocks):
        add("content_block_start", {"index": index, "content_block": block})
        for delta in deltas:
            content = delta["type"] != "signature_delta"
            add("content_block_delta", {"index": index, "delta": delta}, delta=content)
        add("content_block_stop", {"index": index})
    stop = {"stop_reason": _stop_reason(ex, output), "stop_sequence": None}
    finish: dict[str, Any] = {"delta": stop}
    if behaviour.usage:
        finish["usage"] = {"output_tokens": behaviour.output_tokens}
        if thinking is not None:
            finish["usage"]["output_tokens_details"] = {
                "thinking_tokens": behaviour.reasoning_tokens
            }
    add("message_delta", finish)
    add("message_stop", {})
    return _cut(events, behaviour.error_after)


def _cut(events: list[Event], error_after: int | None) -> list[Event]:
    """The events up to ``error_after`` content deltas, then an ``error`` event."""
    if error_after is None:
        return events
    kept: list[Event] = []
    sent = 0
    for event in events:
        if event.delta:
            if sent == error_after:
                break
            sent += 1
        kept.append(event)
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return [*kept, Event(error, name="error")]


_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """Anthropic's error JSON for ``status``."""
    kind = _ERRORS.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message or "Stand-in error."}}


ENDPOINTS = {
    "/v1/messages": messages,
    "/v1/messages/count_tokens": count_tokens,
}

__all__ = ["ENDPOINTS", "SIGNATURE", "count_tokens", "error_body", "messages"]
