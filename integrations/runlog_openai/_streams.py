"""OpenAI's own stream handling: the usage chunk ``stream_usage`` asks for, hidden again.

The stream observers themselves are the core's (:mod:`runlog_providers._streams`);
:func:`settle` is theirs, re-exported for the tests and benchmarks that wait for
abandoned streams to be logged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from runlog_providers import Body, Endpoint, Settings, settle

from ._endpoints import is_usage_chunk


def prepare(
    options: Any, body: Body, endpoint: Endpoint, settings: Settings
) -> Callable[[Any], bool] | None:
    """With ``stream_usage``, add ``include_usage`` unless the caller said either way.

    Returns the filter that hides what that adds (see :func:`hide_usage`), or ``None``
    when the request is left as it was.
    """
    if not (settings.stream_usage and endpoint.usage_option):
        return None
    stream_options = body.get("stream_options")
    stream_options = stream_options if isinstance(stream_options, Mapping) else {}
    if "include_usage" in stream_options:
        return None
    options.json_data = {**body, "stream_options": {**stream_options, "include_usage": True}}
    return hide_usage


def hide_usage(chunk: Any) -> bool:
    """True for the usage chunk ``include_usage`` adds; undo its ``usage: null`` elsewhere.

    Without ``include_usage`` the key is absent, so ``model_fields_set`` (and
    ``to_dict()``, ``model_dump(exclude_unset=True)``) must not list it either.
    """
    if is_usage_chunk(chunk):
        return True
    if getattr(chunk, "usage", 0) is None:
        fields = getattr(chunk, "__pydantic_fields_set__", None)
        if fields is None:
            fields = getattr(chunk, "__fields_set__", None)  # pydantic 1
        if isinstance(fields, set):
            fields.discard("usage")
    return False


__all__ = ["hide_usage", "prepare", "settle"]
