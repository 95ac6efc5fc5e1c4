"""One OpenAI client, sync or async, and helpers that let one test body serve both.

Shared by the stand-in's tests and the integration's tests: each test is written once,
as a coroutine, and parametrised over the two flavours (``sync`` and ``async``).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import openai
from openai import AsyncOpenAI, OpenAI

from runlog_openai.standin import StandInServer


class Api:
    """One client, sync or async, and helpers that make a test body work with both."""

    def __init__(self, flavour: str, server: StandInServer) -> None:
        self.flavour = flavour
        client_class, http_class = (
            (OpenAI, openai.DefaultHttpxClient)
            if flavour == "sync"
            else (AsyncOpenAI, openai.DefaultAsyncHttpxClient)
        )
        self.client: Any = client_class(
            base_url=server.base_url,
            api_key=server.api_key,
            max_retries=0,
            # Plain HTTP to 127.0.0.1: skip loading CA certificates (25 ms per client).
            http_client=http_class(verify=False),
        )

    async def get(self, value: Any) -> Any:
        """``value``, awaited if the async client returned an awaitable."""
        return await value if inspect.isawaitable(value) else value

    async def items(self, stream: Any) -> AsyncGenerator[Any, None]:
        """The items of a sync or async stream (awaited first if need be)."""
        stream = await self.get(stream)
        if hasattr(stream, "__aiter__"):
            async for item in stream:
                yield item
        else:
            for item in stream:
                yield item

    async def drain(
        self, stream: Any, into: list[Any] | None = None, stamps: list[float] | None = None
    ) -> list[Any]:
        """Every item of a stream; ``into`` keeps them if iteration fails, ``stamps`` times."""
        items = [] if into is None else into
        async with aclosing(self.items(stream)) as stream_items:
            async for item in stream_items:
                items.append(item)
                if stamps is not None:
                    stamps.append(time.monotonic())
        return items

    async def first(self, stream: Any) -> Any:
        """The first item of a stream, leaving the rest unread."""
        async with aclosing(self.items(stream)) as items:
            async for item in items:
                return item
        raise AssertionError("the stream was empty")

    async def next(self, stream: Any) -> Any:
        """One item, by ``next()`` / ``__anext__()`` on the stream itself."""
        if hasattr(stream, "__anext__"):
            return await stream.__anext__()
        try:
            return next(stream)
        except StopIteration:  # a coroutine may not raise it
            raise StopAsyncIteration from None

    @asynccontextmanager
    async def opened(self, manager: Any) -> AsyncIterator[Any]:
        """Enter a sync or async context manager (stream helpers, streaming responses)."""
        if hasattr(manager, "__aenter__"):
            async with manager as entered:
                yield entered
        else:
            with manager as entered:
                yield entered

    async def close(self) -> None:
        """Close the client and its connections."""
        await self.get(self.client.close())


__all__ = ["Api"]
