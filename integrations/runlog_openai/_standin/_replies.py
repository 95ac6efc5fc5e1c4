"""The OpenAI endpoints as pure functions: request body and behaviour in, reply out.

A reply is either a JSON body or a list of server-sent ``Event``s; the HTTP layer sends
either without knowing the endpoint. Each endpoint first decides what the model
"generates" (an ``Output``: text, or a tool call with JSON arguments, or structured
JSON) and then renders it in its own shape, streamed or not. The shapes follow the
``openai`` package's types, field for field, so the real client parses them.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import json
import re
import struct
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from ._behaviour import Behaviour
from ._schema import sample

FINGERPRINT = "fp_standin"
EMBEDDING_DIMENSIONS = 8
_JSON_OBJECT = {"type": "object", "properties": {"text": {"type": "string"}}}


@dataclasses.dataclass(frozen=True)
class Event:
    """One server-sent event; ``delta`` marks content, which ``chunk_delay`` paces."""

    data: Mapping[str, Any] | str
    name: str | None = None
    delta: bool = False


Reply: TypeAlias = dict[str, Any] | list[Event]
DONE = Event("[DONE]")


@dataclasses.dataclass(frozen=True)
class Exchange:
    """One request as the reply builders see it: body, behaviour, and a serial number."""

    number: int
    body: Mapping[str, Any]
    behaviour: Behaviour
    created: int

    @property
    def model(self) -> str:
        """The model the reply names: the behaviour's override, else the requested one."""
        return self.behaviour.model or str(self.body.get("model") or "standin-model")

    @property
    def stream(self) -> bool:
        """Whether the client asked for server-sent events."""
        return self.body.get("stream") is True

    @property
    def stream_usage(self) -> bool:
        """Whether a chat or completions stream ends with a usage chunk."""
        options = self.body.get("stream_options") or {}
        return self.behaviour.usage and options.get("include_usage") is True

    def finish_reason(self, output: Output) -> str:
        """Why chat and completions stopped: the behaviour's override, else the output's."""
        return self.behaviour.finish_reason or output.finish_reason

    def ident(self, prefix: str) -> str:
        """A deterministic id such as ``chatcmpl-standin000003``."""
        return f"{prefix}standin{self.number:06d}"


@dataclasses.dataclass(frozen=True)
class Output:
    """What the model generates: ``text``, or a call of ``tool`` with ``text`` as arguments."""

    text: str
    tool: str | None = None

    @property
    def finish_reason(self) -> str:
        """Chat's and completions' reason for stopping."""
        return "stop" if self.tool is None else "tool_calls"

    def pieces(self, chunks: int | None) -> list[str]:
        """``text`` cut into stream deltas: per word, or into ``chunks`` even parts."""
        if chunks is None:
            return re.split(r"(?<=\s)(?=\S)", self.text)
        size, extra = divmod(len(self.text), chunks)
        bounds = [i * size + min(i, extra) for i in range(chunks + 1)]
        return [self.text[a:b] for a, b in itertools.pairwise(bounds)]


def _generate(
    behaviour: Behaviour,
    tools: Mapping[str, Mapping[str, Any]],
    choice: object,
    answered: bool,
    schema: Mapping[str, Any] | None,
) -> Output:
    """The shared decision: call a tool if offered and still due, else structured or text.

    ``choice`` is the request's tool_choice; ``answered`` says the conversation already
    ends with a tool result (so a model that may choose answers in text instead).
    """
    forced = _forced_tool(choice)
    due = choice == "required" or forced is not None or not answered
    if tools and behaviour.call_tools and choice != "none" and due:
        name = forced if forced is not None and forced in tools else next(iter(tools))
        return Output(json.dumps(sample(tools[name])), tool=name)
    if schema is not None:
        return Output(json.dumps(sample(schema)))
    return Output(behaviour.reply)


def _forced_tool(choice: object) -> str | None:
    """The function name a tool_choice object names (chat or Responses form), if any."""
    if not isinstance(choice, Mapping):
        return None
    function = choice.get("function")
    name = function.get("name") if isinstance(function, Mapping) else choice.get("name")
    return str(name) if name else None


def _format_schema(fmt: object) -> Mapping[str, Any] | None:
    """The JSON schema a response format asks for (chat or Responses form), if any."""
    if not isinstance(fmt, Mapping):
        return None
    if fmt.get("type") == "json_object":
        return _JSON_OBJECT
    if fmt.get("type") != "json_schema":
        return None
    inner = fmt.get("json_schema", fmt)
    schema = inner.get("schema") if isinstance(inner, Mapping) else None
    return schema if isinstance(schema, Mapping) else {}


def _chat_usage(behaviour: Behaviour) -> dict[str, Any]:
    """Chat and completions usage, with the detail objects the API includes."""
    usage = _openai_usage(behaviour)
    return usage if behaviour.cost is None else {**usage, "cost": behaviour.cost}


def _openai_usage(behaviour: Behaviour) -> dict[str, Any]:
    return {
        "prompt_tokens": behaviour.input_tokens,
        "completion_tokens": behaviour.output_tokens,
        "total_tokens": behaviour.input_tokens + behaviour.output_tokens,
        "prompt_tokens_details": {
            "cached_tokens": behaviour.cached_input_tokens,
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": behaviour.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _with_usage(body: dict[str, Any], behaviour: Behaviour, usage: object) -> dict[str, Any]:
    """``body`` with ``usage`` added, unless the behaviour leaves usage out."""
    return {**body, "usage": usage} if behaviour.usage else body


# --- chat completions --------------------------------------------------------------


def chat_completions(ex: Exchange) -> Reply:
    """POST /v1/chat/completions."""
    body = ex.body
    tools = {
        t["function"]["name"]: t["function"].get("parameters") or {}
        for t in body.get("tools") or []
        if t.get("type") == "function"
    }
    messages = body.get("messages") or [{}]
    output = _generate(
        ex.behaviour,
        tools,
        body.get("tool_choice"),
        answered=messages[-1].get("role") == "tool",
        schema=_format_schema(body.get("response_format")),
    )
    return _chat_events(ex, output) if ex.stream else _chat_body(ex, output)


def _chat_head(ex: Exchange) -> dict[str, Any]:
    """The fields every chat completion and chunk starts with."""
    stream = ex.stream
    return {
        "id": ex.ident("chatcmpl-"),
        "object": "chat.completion.chunk" if stream else "chat.completion",
        "created": ex.created,
        "model": ex.model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def _tool_call(ex: Exchange, output: Output, arguments: str) -> dict[str, Any]:
    """A chat tool call of ``output.tool`` carrying ``arguments``."""
    function = {"name": output.tool, "arguments": arguments}
    return {"id": ex.ident("call_"), "type": "function", "function": function}


def _chat_body(ex: Exchange, output: Output) -> dict[str, Any]:
    """A non-streamed chat completion."""
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    if output.tool is None:
        message.update(content=output.text, annotations=[])
    else:
        message["tool_calls"] = [_tool_call(ex, output, output.text)]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": ex.finish_reason(output),
    }
    body = {**_chat_head(ex), "choices": [choice]}
    return _with_usage(body, ex.behaviour, _chat_usage(ex.behaviour))


def _chat_events(ex: Exchange, output: Output) -> list[Event]:
    """A chat stream: role chunk, content deltas, finish chunk, usage chunk, [DONE]."""
    head = _chat_head(ex)
    if ex.stream_usage:
        head["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None, content: bool = False) -> Event:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return Event({**head, "choices": [choice]}, delta=content)

    pieces = output.pieces(ex.behaviour.chunks)
    first: dict[str, Any]
    deltas: list[dict[str, Any]]
    if output.tool is None:
        first = {"role": "assistant", "content": "", "refusal": None}
        deltas = [{"content": piece} for piece in pieces]
    else:
        call = {"index": 0, **_tool_call(ex, output, "")}
        first = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
        deltas = [{"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in pieces]
    events = [chunk(first), *(chunk(d, content=True) for d in deltas)]
    events.append(chunk({}, ex.finish_reason(output)))
    if ex.stream_usage:
        events.append(Event({**head, "choices": [], "usage": _chat_usage(ex.behaviour)}))
    return [*events, DONE]


# --- legacy completions ------------------------------------------------------------


def completions(ex: Exchange) -> Reply:
    """POST /v1/completions (the legacy text completions)."""
    head = {
        "id": ex.ident("cmpl-"),
        "object": "text_completion",
        "created": ex.created,
        "model": ex.model,
        "system_fingerprint": FINGERPRINT,
    }

    def choice(text: str, finish: str | None) -> dict[str, Any]:
        return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}

    text = ex.behaviour.reply
    finish = ex.finish_reason(Output(text))
    if not ex.stream:
        body = {**head, "choices": [choice(text, finish)]}
        return _with_usage(body, ex.behaviour, _chat_usage(ex.behaviour))
    pieces = Output(text).pieces(ex.behaviour.chunks)
    events = [Event({**head, "choices": [choice(p, None)]}, delta=True) for p in pieces]
    events.append(Event({**head, "choices": [choice("", finish)]}))
    if ex.stream_usage:
        events.append(Event({**head, "choices": [], "usage": _chat_usage(ex.behaviour)}))
    return [*events, DONE]


# --- embeddings --------------------------------------------------------------------


def embeddings(ex: Exchange) -> Reply:
    """POST /v1/embeddings: one deterministic unit-free vector per input, by its text."""
    raw = ex.body.get("input", "")
    single = isinstance(raw, str) or (bool(raw) and all(isinstance(t, int) for t in raw))
    inputs = [raw] if single else list(raw)
    dimensions = int(ex.body.get("dimensions") or EMBEDDING_DIMENSIONS)
    as_base64 = ex.body.get("encoding_format") == "base64"
    data = [
        {"object": "embedding", "index": i, "embedding": _vector(item, dimensions, as_base64)}
        for i, item in enumerate(inputs)
    ]
    body = {"object": "list", "data": data, "model": ex.model}
    usage = {"prompt_tokens": ex.behaviour.input_tokens, "total_tokens": ex.behaviour.input_tokens}
    return _with_usage(body, ex.behaviour, usage)


def _vector(item: object, dimensions: int, as_base64: bool) -> list[float] | str:
    """Float32 values in [-1, 1) derived from a hash of ``item``; base64 if asked."""
    seed = json.dumps(item).encode()
    raw = [
        int.from_bytes(hashlib.sha256(b"%d:%s" % (i, seed)).digest()[:4], "little") / 2**31 - 1
        for i in range(dimensions)
    ]
    packed = struct.pack(f"<{dimensions}f", *raw)
    if as_base64:
        return base64.b64encode(packed).decode("ascii")
    return list(struct.unpack(f"<{dimensions}f", packed))


# --- responses ---------------------------------------------------------------------


def responses(ex: Exchange) -> Reply:
    """POST /v1/responses."""
    body = ex.body
    tools = {
        t["name"]: t.get("parameters") or {}
        for t in body.get("tools") or []
        if t.get("type") == "function"
    }
    items = body.get("input")
    last = items[-1] if isinstance(items, list) and items else {}
    output = _generate(
        ex.behaviour,
        tools,
        body.get("tool_choice"),
        answered=isinstance(last, Mapping) and last.get("type") == "function_call_output",
        schema=_format_schema((body.get("text") or {}).get("format")),
    )
    item = _response_item(ex, output, output.text, "completed")
    if not ex.stream:
        return _response_object(ex, "completed", [item])
    return _response_events(ex, output, item)


def _response_usage(behaviour: Behaviour) -> dict[str, Any]:
    """Responses usage: input/output tokens and their detail objects."""
    return {
        "input_tokens": behaviour.input_tokens,
        "input_tokens_details": {
            "cached_tokens": behaviour.cached_input_tokens,
            "cache_write_tokens": 0,
        },
        "output_tokens": behaviour.output_tokens,
        "output_tokens_details": {"reasoning_tokens": behaviour.reasoning_tokens},
        "total_tokens": behaviour.input_tokens + behaviour.output_tokens,
    }


def _response_object(ex: Exchange, status: str, output: list[Any]) -> dict[str, Any]:
    """A Response object; usage only once it is completed (and the behaviour has usage)."""
    body = ex.body
    completed = status == "completed"
    response = {
        "id": ex.ident("resp_"),
        "object": "response",
        "created_at": ex.created,
        "status": status,
        "completed_at": ex.created if completed else None,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "model": ex.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "user": body.get("user"),
    }
    usage = _response_usage(ex.behaviour) if completed else None
    return {**response, "usage": usage} if ex.behaviour.usage else response


def _text_part(text: str) -> dict[str, Any]:
    """An ``output_text`` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _response_item(ex: Exchange, output: Output, text: str, status: str) -> dict[str, Any]:
    """The output item for ``output``: a message, or a function call; ``text`` so far."""
    if output.tool is not None:
        return {
            "id": ex.ident("fc_"),
            "type": "function_call",
            "status": status,
            "arguments": text,
            "call_id": ex.ident("call_"),
            "name": output.tool,
        }
    content = [_text_part(text)] if status == "completed" else []
    return {
        "id": ex.ident("msg_"),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _response_events(ex: Exchange, output: Output, item: dict[str, Any]) -> list[Event]:
    """The Responses stream: lifecycle events around the item's added/delta/done events."""
    events: list[Event] = []

    def add(name: str, fields: dict[str, Any], delta: bool = False) -> None:
        data = {"type": name, "sequence_number": len(events), **fields}
        events.append(Event(data, name=name, delta=delta))

    at = {"item_id": item["id"], "output_index": 0}
    text_at = {**at, "content_index": 0}
    opening = {"response": _response_object(ex, "in_progress", [])}
    add("response.created", opening)
    add("response.in_progress", opening)
    added = _response_item(ex, output, "", "in_progress")
    add("response.output_item.added", {"output_index": 0, "item": added})
    pieces = output.pieces(ex.behaviour.chunks)
    if output.tool is None:
        add("response.content_part.added", {**text_at, "part": _text_part("")})
        for piece in pieces:
            add("response.output_text.delta", {**text_at, "delta": piece, "logprobs": []}, True)
        add("response.output_text.done", {**text_at, "text": output.text, "logprobs": []})
        add("response.content_part.done", {**text_at, "part": _text_part(output.text)})
    else:
        for piece in pieces:
            add("response.function_call_arguments.delta", {**at, "delta": piece}, True)
        add("response.function_call_arguments.done", {**at, "arguments": output.text})
    add("response.output_item.done", {"output_index": 0, "item": item})
    add("response.completed", {"response": _response_object(ex, "completed", [item])})
    return events


# --- errors and routing ------------------------------------------------------------

_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "The stand-in was told to reject this request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", "unknown_url", "Unknown request URL."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (stand-in)."),
    500: ("server_error", None, "The server had an error while processing your request."),
}


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """OpenAI's error JSON for ``status``; ``message`` replaces the stock text."""
    default = ("invalid_request_error" if status < 500 else "server_error", None, "Stand-in error.")
    kind, code, stock = _ERRORS.get(status, default)
    return {"error": {"message": message or stock, "type": kind, "param": None, "code": code}}


ENDPOINTS: dict[str, Callable[[Exchange], Reply]] = {
    "/v1/chat/completions": chat_completions,
    "/v1/completions": completions,
    "/v1/embeddings": embeddings,
    "/v1/responses": responses,
}

__all__ = [
    "DONE",
    "EMBEDDING_DIMENSIONS",
    "ENDPOINTS",
    "FINGERPRINT",
    "Event",
    "Exchange",
    "Output",
    "Reply",
    "chat_completions",
    "completions",
    "embeddings",
    "error_body",
    "responses",
]
