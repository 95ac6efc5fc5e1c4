"""What a provider package gives the core: its endpoint table and a few facts about its client.

Adding a provider is one :class:`Provider` (endpoints by URL path, the client's stream
classes, its request-id header) and one :class:`Endpoint` per logged path (how to read
its requests, replies and streamed items into a :class:`~._reply.Reply`).  The core
does everything else: the request patch, the call's lifecycle, the stream observers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._reply import Reply

Body = Mapping[str, Any]


@dataclass(frozen=True)
class Settings:
    """The options of an integration's ``instrument()``."""

    stream_usage: bool = False
    """OpenAI: ask streaming chat and completions calls for usage, hiding the extra chunk."""
    capture_content: bool = False
    """Log the input and generated text (off by default: it may hold personal data)."""


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
    items: Callable[[Reply, Sequence[Any]], bool]
    """Read streamed items, in order; True if one carried generated content (a first
    token).  Called with one item up to the first token, then with batches: an endpoint
    whose streams are long (chat) reads a batch in one loop; :func:`each` makes a
    reader of one item into one of many."""
    has_output: bool = True
    """False for embeddings, whose output is vectors, never tokens."""
    usage_option: bool = False
    """Streams accept ``stream_options={"include_usage": True}`` (OpenAI)."""


def each(item: Callable[[Reply, Any], bool]) -> Callable[[Reply, Sequence[Any]], bool]:
    """A reader of many streamed items from a reader of one."""

    def items(reply: Reply, batch: Sequence[Any]) -> bool:
        content = False
        for one in batch:
            content = item(reply, one) or content
        return content

    return items


Prepare = Callable[[Any, Body, Endpoint, Settings], "Callable[[Any], bool] | None"]
"""Change a streaming request's (copied) options before it is sent; return a filter that
says which streamed items to hide from the caller (True: hide), or ``None``."""


@dataclass(frozen=True)
class Provider:
    """One provider's client, as the core instruments it."""

    name: str
    """The ``provider`` of the events, also the price table's provider id."""
    label: str
    """How fault reports name it: ``instrumenting OpenAI (...)``."""
    endpoints: Mapping[str, Endpoint]
    """Endpoints by the path the client posts to (``FinalRequestOptions.url``)."""
    stream_types: tuple[type, ...]
    """The client's ``Stream`` and ``AsyncStream`` classes."""
    request_id_header: str = "x-request-id"
    prepare: Prepare | None = None
    """Request changes for streams (see :data:`Prepare`)."""

    def endpoint_for(self, method: object, url: object) -> Endpoint | None:
        """The endpoint a request goes to, or ``None`` for requests that are not model calls."""
        if type(url) is not str:
            return None
        endpoint = self.endpoints.get(url) or self.endpoints.get("/" + url.strip("/"))
        if endpoint is None or str(method).lower() != "post":
            return None
        return endpoint


__all__ = ["Body", "Endpoint", "Prepare", "Provider", "Settings", "each"]
