"""The patch: the client's one request method, dispatched on the endpoint.

Why the request method and not per-method patches.  Every entry point of the
``openai`` library, sync or async, ends in ``SyncAPIClient.request`` /
``AsyncAPIClient.request`` with the endpoint path in ``options.url``:
``chat.completions.create`` and ``.parse`` (which posts directly, not through
``create``), the ``.stream()`` helpers, ``responses.*``, ``embeddings.create``, legacy
``completions.create``, and their ``with_raw_response`` / ``with_streaming_response``
variants (which call the same methods with a header).  Two patches therefore cover
every entry point, present and future, on every client created before or after
instrumenting (the methods live on the base classes), and across openai 1.x-3.x,
whose resource classes and helper modules moved around while ``request`` stayed.
Per-method patches would need about twenty (sync and async), would miss ``parse``
and any method added later, and would still have to handle raw responses.

What the request method hands back depends on the variant (a model, a stream, a raw
response whose body comes later), so the request carries our post-parser, which openai
applies to whatever it parses, whenever that happens (see :mod:`._tracker`).

The request is not changed, except that ``stream_usage=True`` adds
``stream_options={"include_usage": True}`` to streaming chat and completions requests
that lack it; the extra usage chunk is then hidden from the caller.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import wrapt
from openai import _base_client

import runlog

from ._endpoints import Endpoint, endpoint_for
from ._report import report
from ._tracker import Tracker

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    """The options of ``instrument()``."""

    stream_usage: bool = False
    capture_content: bool = False


settings = Settings()


def begin(args: Args, kwargs: Kwargs) -> tuple[Tracker, Args, Kwargs] | None:
    """A tracker and the request's arguments with our post-parser, or ``None`` to pass."""
    options = args[1] if len(args) > 1 else kwargs.get("options")
    endpoint = endpoint_for(getattr(options, "method", None), getattr(options, "url", None))
    if endpoint is None:
        return None
    try:
        body = getattr(options, "json_data", None)
        if not isinstance(body, Mapping):
            return None
        tracker, options = _start(endpoint, options, body, kwargs.get("stream") is True)
    except Exception as exc:
        report("starting a call", exc)
        return None
    if len(args) > 1:
        return tracker, (args[0], options, *args[2:]), kwargs
    return tracker, args, {**kwargs, "options": options}


def _start(
    endpoint: Endpoint, options: Any, body: Mapping[str, Any], stream: bool
) -> tuple[Tracker, Any]:
    """Begin the ``llm_call``; a copy of ``options`` that reports to its tracker."""
    stream = stream or body.get("stream") is True
    current = settings
    model = body.get("model")
    call = runlog.llm_call(
        model if isinstance(model, str) and model else "unknown",
        operation=endpoint.operation,
        stream=stream,
        **endpoint.inputs(body),
    )
    options = copy.copy(options)  # never change the caller's options
    hide_usage = current.stream_usage and stream and endpoint.usage_option
    hide_usage = hide_usage and _ask_for_usage(options, body)
    tracker = Tracker(
        call, endpoint, stream=stream, capture=current.capture_content, hide_usage=hide_usage
    )
    if current.capture_content:
        call.set(input_content=endpoint.content(body))
    options.post_parser = tracker.post_parser(options.post_parser)
    return tracker, options


def _ask_for_usage(options: Any, body: Mapping[str, Any]) -> bool:
    """Add ``include_usage`` unless the caller said either way; True if it was added."""
    stream_options = body.get("stream_options")
    stream_options = stream_options if isinstance(stream_options, Mapping) else {}
    if "include_usage" in stream_options:
        return False
    options.json_data = {**body, "stream_options": {**stream_options, "include_usage": True}}
    return True


# -- the two thin shells ---------------------------------------------------------------
def _request(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
    begun = begin(args, kwargs)
    if begun is None:
        return wrapped(*args, **kwargs)
    tracker, args, kwargs = begun
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        tracker.failed(exc)
        raise
    return tracker.returned(result)


async def _request_async(
    wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
) -> Any:
    begun = begin(args, kwargs)
    if begun is None:
        return await wrapped(*args, **kwargs)
    tracker, args, kwargs = begun
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        tracker.failed(exc)
        raise
    return tracker.returned(result)


# -- installing ------------------------------------------------------------------------
_PATCHES: tuple[tuple[type, Callable[..., Any]], ...] = (
    (_base_client.SyncAPIClient, _request),
    (_base_client.AsyncAPIClient, _request_async),
)
_METHOD = "request"
_lock = threading.Lock()


def _is_ours(owner: type, wrapper: Callable[..., Any]) -> bool:
    attr = owner.__dict__.get(_METHOD)
    return isinstance(attr, wrapt.FunctionWrapper) and attr._self_wrapper is wrapper


def install(new: Settings) -> None:
    """Patch both request methods (once) and apply ``new`` settings."""
    global settings
    with _lock:
        settings = new
        for owner, wrapper in _PATCHES:
            if not _is_ours(owner, wrapper):
                wrapt.wrap_function_wrapper(owner, _METHOD, wrapper)


def uninstall() -> None:
    """Put the original request methods back (if ours are still in place)."""
    with _lock:
        for owner, wrapper in _PATCHES:
            if _is_ours(owner, wrapper):
                setattr(owner, _METHOD, owner.__dict__[_METHOD].__wrapped__)


def installed() -> bool:
    """Whether both request methods are ours."""
    return all(_is_ours(owner, wrapper) for owner, wrapper in _PATCHES)


__all__ = ["Settings", "begin", "install", "installed", "settings", "uninstall"]
