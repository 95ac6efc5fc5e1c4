"""What a reply said, as every provider's parser fills it in, and the readers they share.

A :class:`Reply` is the accumulator of one call, streamed or not: usage and its
breakdown, finish reason, model, generated text.  Provider packages read their replies
into it with the helpers below, defensively: a field of an unexpected type is skipped,
never an error, so a provider that answers in an odd shape (or a caller who asked for a
``dict`` instead of a model) still gets its call back unchanged.  Complete replies may
be models or plain mappings; streamed items are read with ``getattr`` only, the fast
path for the many small chunks of a stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COUNTS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "reasoning_tokens",
)
"""The token numbers a reply may carry, under runlog's names (see ``LLMCall.record``)."""


class Reply:
    """What the response said so far: usage, finish reason, model, generated text."""

    __slots__ = (
        "cache_write_input_tokens",
        "cached_input_tokens",
        "cost_usd",
        "finish_reason",
        "input_tokens",
        "keep_text",
        "output_tokens",
        "reasoning_tokens",
        "response_model",
        "seen",
        "started",
        "text",
    )

    def __init__(self, keep_text: bool = False) -> None:
        self.keep_text = keep_text
        """Keep the text even when usage counts the output (content capture)."""
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cached_input_tokens: int | None = None
        self.cache_write_input_tokens: int | None = None
        self.reasoning_tokens: int | None = None
        self.cost_usd: float | None = None
        """A price the provider put in its reply (OpenRouter-style ``usage.cost``)."""
        self.finish_reason: str | None = None
        self.response_model: str | None = None
        self.text: list[str] = []
        self.seen = False
        """The reply itself was read (a body, or a stream's items): what it lacks, it did
        not carry, so missing output is counted rather than left unknown."""
        self.started = False
        """Generated content has arrived (the first token of a stream)."""

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
        count_in, count_out = count(get(usage, input_key)), count(get(usage, output_key))
        if count_in is not None:
            self.input_tokens = count_in
        if count_out is not None:
            self.output_tokens = count_out

    def detail(self, name: str, value: object) -> None:
        """Take one breakdown number (``cached_input_tokens``, ...) if it is a count."""
        found = count(value)
        if found is not None:
            setattr(self, name, found)

    def price(self, value: object) -> None:
        """Take a cost in USD the provider reported, if it is a non-negative number."""
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            self.cost_usd = float(value)

    def finish(self, reason: object) -> None:
        """Keep the first finish reason given."""
        if self.finish_reason is None and type(reason) is str and reason:
            self.finish_reason = reason

    def model(self, model: object) -> None:
        """Keep the first model name the reply gives."""
        if self.response_model is None and type(model) is str and model:
            self.response_model = model


# -- reading helpers -----------------------------------------------------------------
_MISSING = object()


def get(obj: object, name: str) -> Any:
    """``obj[name]`` for mappings, else ``obj.name``; ``None`` when missing.

    Runs a dozen times a call.  A field of a model is one lookup in its ``__dict__``
    (pydantic keeps fields there); anything else goes the careful way (:func:`_get`).
    """
    if obj is None:
        return None
    try:
        return obj.__dict__[name]
    except (AttributeError, KeyError, TypeError):
        return _get(obj, name)


def _get(obj: object, name: str) -> Any:
    """:func:`get` for what is not a field in ``__dict__``.  A field the response lacks
    is answered from the object's own state where it can be (pydantic's extras): a
    missing attribute of a pydantic model goes through its ``__getattr__`` and an
    exception, about 5 us each."""
    kind = type(obj)
    if kind is dict:
        return obj.get(name)  # type: ignore[attr-defined]
    if obj is None:
        return None
    state = getattr(obj, "__dict__", None)
    if type(state) is dict:
        if name in state:
            return state[name]
        extra = getattr(obj, "__pydantic_extra__", None)
        if type(extra) is dict and not _on_class(kind, name):
            return extra.get(name)
    value = getattr(obj, name, _MISSING)
    if value is _MISSING:
        return obj.get(name) if isinstance(obj, Mapping) else None
    return value


_class_names: dict[tuple[type, str], bool] = {}


def _on_class(kind: type, name: str) -> bool:
    """Whether ``kind`` (or a base) defines ``name`` (a property, a method): then only
    ``getattr`` can say what it is.  Cached: a handful of types and names."""
    try:
        return _class_names[kind, name]
    except KeyError:
        found = _class_names[kind, name] = any(name in k.__dict__ for k in kind.__mro__)
        return found


def items(value: object) -> list[Any] | tuple[Any, ...]:
    """``value`` if it is a list or tuple, else nothing to iterate."""
    return value if isinstance(value, (list, tuple)) else ()


def count(value: object) -> int | None:
    """A token count: a non-negative int (not a bool), else ``None``."""
    if type(value) is int and value >= 0:
        return value
    return None


__all__ = ["COUNTS", "Reply", "count", "get", "items"]
