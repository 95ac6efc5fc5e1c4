"""The patch: the client's one request method, dispatched on the endpoint.

Why the request method and not per-method patches.  The ``openai`` and ``anthropic``
libraries are generated from one client base: every entry point, sync or async, ends
in ``SyncAPIClient.request`` / ``AsyncAPIClient.request`` with the endpoint path in
``options.url`` — plain calls, ``.parse``, the stream helpers, and their
``with_raw_response`` / ``with_streaming_response`` variants (which call the same
methods with a header).  Two patches therefore cover every entry point, present and
future, on every client created before or after instrumenting (the methods live on the
base classes), across releases whose resource classes and helper modules moved around
while ``request`` stayed.

What the request method hands back depends on the variant (a model, a stream, a raw
response whose body comes later), so the request carries our post-parser, which the
client applies to whatever it parses, whenever that happens (see :mod:`._tracker`).

The request is not changed, except where the provider's ``prepare`` says so (OpenAI's
``stream_usage``), on a copy of its options.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import runlog
from runlog.patching import Patches

from ._provider import Endpoint, Provider, Settings
from ._report import report
from ._tracker import Tracker

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


class Integration:
    """One provider's client, instrumented: its settings and its two patches."""

    def __init__(self, provider: Provider, sync_client: type, async_client: type) -> None:
        self.provider = provider
        self.settings = Settings()
        self._patches = Patches(
            (sync_client, "request", self._request),
            (async_client, "request", self._request_async),
        )

    def install(self, settings: Settings) -> None:
        """Patch both request methods (once) and apply ``settings``."""
        self.settings = settings
        self._patches.install()

    def uninstall(self) -> None:
        """Put the original request methods back (if ours are still in place)."""
        self._patches.uninstall()

    def installed(self) -> bool:
        """Whether both request methods are ours."""
        return self._patches.installed()

    # -- one request ---------------------------------------------------------------
    def begin(self, args: Args, kwargs: Kwargs) -> tuple[Tracker, Args, Kwargs] | None:
        """A tracker and the request's arguments with our post-parser, or ``None`` to pass."""
        options = args[1] if len(args) > 1 else kwargs.get("options")
        endpoint = self.provider.endpoint_for(
            getattr(options, "method", None), getattr(options, "url", None)
        )
        if endpoint is None:
            return None
        try:
            body = getattr(options, "json_data", None)
            if not isinstance(body, Mapping):
                return None
            tracker, options = self._start(endpoint, options, body, kwargs.get("stream") is True)
        except Exception as exc:
            report(self.provider.label, "starting a call", exc)
            return None
        if len(args) > 1:
            return tracker, (args[0], options, *args[2:]), kwargs
        return tracker, args, {**kwargs, "options": options}

    def _start(
        self, endpoint: Endpoint, options: Any, body: Mapping[str, Any], stream: bool
    ) -> tuple[Tracker, Any]:
        """Begin the ``llm_call``; a copy of ``options`` that reports to its tracker."""
        stream = stream or body.get("stream") is True
        settings, provider = self.settings, self.provider
        model = body.get("model")
        call = runlog.llm_call(
            model if isinstance(model, str) and model else "unknown",
            operation=endpoint.operation,
            stream=stream,
            provider=provider.name,
            **endpoint.inputs(body),
        )
        # Never change the caller's options: a copy, by pydantic's __copy__ directly.
        copier = getattr(type(options), "__copy__", None)
        options = copier(options) if copier is not None else copy.copy(options)
        hide = None
        if stream and provider.prepare is not None:
            hide = provider.prepare(options, body, endpoint, settings)
        tracker = Tracker(
            call, provider, endpoint, stream=stream, capture=settings.capture_content, hide=hide
        )
        if settings.capture_content:
            call.set(input_content=endpoint.content(body))
        options.post_parser = tracker.post_parser(options.post_parser)
        return tracker, options

    # -- the two thin shells -------------------------------------------------------
    def _request(
        self, wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
    ) -> Any:
        begun = self.begin(args, kwargs)
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
        self, wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
    ) -> Any:
        begun = self.begin(args, kwargs)
        if begun is None:
            return await wrapped(*args, **kwargs)
        tracker, args, kwargs = begun
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            tracker.failed(exc)
            raise
        return tracker.returned(result)


__all__ = ["Integration"]
