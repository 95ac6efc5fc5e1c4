"""What the stand-in replies: one frozen ``Behaviour`` and its text forms.

A behaviour can be changed from three places: the test (server defaults and a queue of
one-shot changes), the request (``x-standin-<field>`` headers) and the command line
(``--<field>``). The last two arrive as text, so one function turns text into field
values; the field types drive it, and a new field needs no new parsing code.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

HEADER_PREFIX = "x-standin-"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NONE = frozenset({"", "none", "null"})


def _field(default: Any, help: str) -> Any:
    """A dataclass field with a one-line ``help`` (shown by the command line)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """How the stand-in answers a request; every field has a harmless default.

    Content: ``reply`` is the generated text (tool-call arguments and structured output
    are generated from the request's JSON schema instead). A stream carries it in
    ``chunks`` content deltas (``None``: one delta per word); their concatenation is
    always exactly the text, so with more chunks than characters some deltas are empty.

    ``finish_reason`` overrides what chat and completions replies say (``"length"``
    makes ``.parse()`` raise ``LengthFinishReasonError``).

    Usage: the numbers every endpoint reports (``input_tokens`` is chat's
    ``prompt_tokens``, ``output_tokens`` its ``completion_tokens``), with the breakdown
    each API reports as it defines it: OpenAI's ``cached_tokens`` and
    ``reasoning_tokens`` are parts of input and output; Anthropic's
    ``cache_read_input_tokens`` (``cached_input_tokens``) and
    ``cache_creation_input_tokens`` (``cache_write_tokens``) come in addition to its
    ``input_tokens``. ``usage=False`` leaves usage out of every response and stream, as
    a provider without usage would.

    Timing: ``delay`` seconds pass before the status line (latency, and part of the
    time to first token); ``chunk_delay`` seconds pass before each content delta.

    Failures: ``status`` other than 200 answers with the API's error JSON (``retry_after``
    adds a ``retry-after-ms`` header so retrying clients retry at once); ``hang`` never
    answers (client timeouts); ``hang_after`` / ``disconnect_after`` stall or drop a
    stream after that many content deltas; ``error_after`` sends an Anthropic ``error``
    event (``overloaded_error``) in place of the stream's rest after that many.
    """

    reply: str = _field("Hello from the stand-in server.", "the generated text")
    chunks: int | None = _field(None, "content deltas per stream (none: one per word)")
    input_tokens: int = _field(12, "usage: prompt / input tokens")
    output_tokens: int = _field(7, "usage: completion / output tokens")
    cached_input_tokens: int = _field(
        0, "usage: cached input (OpenAI: part of input; Anthropic: cache reads, in addition)"
    )
    cache_write_tokens: int = _field(0, "usage: Anthropic cache_creation_input_tokens")
    reasoning_tokens: int = _field(0, "usage: OpenAI reasoning tokens (part of output)")
    cost: float | None = _field(None, "chat usage: a price in USD, as some compatible APIs send")
    thinking: str = _field(
        "Let me think about that.", "Anthropic: the thinking block when a request enables it"
    )
    usage: bool = _field(True, "report usage at all")
    model: str | None = _field(None, "model named in replies (none: the requested one)")
    call_tools: bool = _field(True, "call a function tool when the request offers one")
    finish_reason: str | None = _field(
        None, "chat and completions finish reason (none: stop, or tool_calls)"
    )
    delay: float = _field(0.0, "seconds before the response starts")
    chunk_delay: float = _field(0.0, "seconds before each content delta of a stream")
    status: int = _field(200, "HTTP status; 400-599 answer OpenAI's error JSON")
    retry_after: float | None = _field(None, "seconds sent as retry-after-ms on errors")
    hang: bool = _field(False, "never answer (for client timeouts)")
    hang_after: int | None = _field(None, "stall a stream after this many content deltas")
    disconnect_after: int | None = _field(None, "cut a stream after this many content deltas")
    error_after: int | None = _field(
        None, "Anthropic: an error event after this many content deltas"
    )

    def __post_init__(self) -> None:
        """Reject values no test means, so a typo fails loudly instead of silently."""
        checks = {
            "chunks must be >= 1 or None": self.chunks is None or self.chunks >= 1,
            "token counts must be >= 0": min(
                self.input_tokens,
                self.output_tokens,
                self.cached_input_tokens,
                self.cache_write_tokens,
                self.reasoning_tokens,
            )
            >= 0,
            "delays must be >= 0": min(self.delay, self.chunk_delay) >= 0,
            "status must be 200 or 400-599": self.status == 200 or 400 <= self.status <= 599,
            "retry_after must be > 0 or None": self.retry_after is None or self.retry_after > 0,
            "hang_after must be >= 0 or None": self.hang_after is None or self.hang_after >= 0,
            "disconnect_after must be >= 0 or None": (
                self.disconnect_after is None or self.disconnect_after >= 0
            ),
            "error_after must be >= 0 or None": self.error_after is None or self.error_after >= 0,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid stand-in behaviour: {'; '.join(failed)}")

    def changed(self, **changes: Any) -> Behaviour:
        """A copy with ``changes`` applied; unknown field names raise ``TypeError``."""
        unknown = set(changes) - set(field_names())
        if unknown:
            raise TypeError(f"unknown stand-in behaviour field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)


def field_names() -> tuple[str, ...]:
    """The names of ``Behaviour``'s fields, in declaration order."""
    return tuple(field.name for field in dataclasses.fields(Behaviour))


def field_help(name: str) -> str:
    """The one-line description of field ``name``."""
    return str(Behaviour.__dataclass_fields__[name].metadata["help"])


def parse_field(name: str, text: str) -> Any:
    """Turn the text form of field ``name`` (a header or option value) into its value."""
    hint = typing.get_type_hints(Behaviour)[name]
    options = set(typing.get_args(hint)) or {hint}
    lowered = text.strip().lower()
    if type(None) in options and lowered in _NONE:
        return None
    if bool in options:
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ValueError(f"{name}: expected true or false, got {text!r}")
    for kind in (int, float):
        if kind in options:
            try:
                return kind(text)
            except ValueError:
                raise ValueError(f"{name}: expected {kind.__name__}, got {text!r}") from None
    return text


def format_field(value: object) -> str:
    """The text form of a field value, the inverse of ``parse_field``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def header_name(field: str) -> str:
    """The request header that overrides ``field``: ``chunk_delay`` -> ``x-standin-chunk-delay``."""
    return HEADER_PREFIX + field.replace("_", "-")


def behaviour_headers(**changes: object) -> dict[str, str]:
    """Request headers that change the reply to one request; pass as ``extra_headers``.

    Header values are ASCII; for other text, use ``StandInServer.enqueue`` instead.
    """
    Behaviour().changed(**changes)  # unknown names raise here, at the call site
    headers = {header_name(name): format_field(value) for name, value in changes.items()}
    for name, value in headers.items():
        if not value.isascii():
            raise ValueError(f"{name}: header values must be ASCII; use enqueue() for {value!r}")
    return headers


def changes_from_headers(headers: Mapping[str, str]) -> dict[str, Any]:
    """The behaviour changes a request asks for through its ``x-standin-*`` headers."""
    by_header = {header_name(name): name for name in field_names()}
    changes: dict[str, Any] = {}
    for key, text in headers.items():
        key = key.lower()
        if not key.startswith(HEADER_PREFIX):
            continue
        if key not in by_header:
            raise ValueError(f"unknown stand-in header {key!r}; known: {sorted(by_header)}")
        changes[by_header[key]] = parse_field(by_header[key], text)
    return changes


__all__ = [
    "HEADER_PREFIX",
    "Behaviour",
    "behaviour_headers",
    "changes_from_headers",
    "field_help",
    "field_names",
    "format_field",
    "header_name",
    "parse_field",
]
