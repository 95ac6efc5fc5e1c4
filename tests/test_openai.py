"""The OpenAI integration, driven by the real ``openai`` client over real HTTP.

Every test runs against the stand-in server (``runlog_openai.standin``) on 127.0.0.1,
with ``OpenAI`` and with ``AsyncOpenAI``: the ``api`` fixture gives one client and
awaits / iterates / enters whatever it returns, so one test body covers both.  The
entry points form one matrix (:data:`CALLS` x :data:`VARIANTS`, plus the ``.stream()``
helpers), which the checks of usage, tiktoken counts, timing, identical output and
failures all run over.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import openai
import pytest
import tiktoken
from openai import OpenAI
from openai._base_client import AsyncAPIClient, SyncAPIClient
from pydantic import BaseModel

import runlog
from runlog.testing import Capture, capture
from runlog_openai import _patch, _streams
from runlog_openai.standin import Behaviour, StandInServer, behaviour_headers
from runlog_providers._streams import BATCH

from openai_api import Api
from support import collect_garbage, python, rows

pytestmark = pytest.mark.anyio

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
QUESTION = "What is the weather?"
USAGE_ON = {"include_usage": True}
INPUT_TOKENS, OUTPUT_TOKENS = 21, 5
REPLY = Behaviour().reply
VOLATILE = frozenset({"created", "created_at", "completed_at"})
"""Timestamps: the only fields two runs of the stand-in may differ in."""


class Weather(BaseModel):
    """Structured output; the stand-in fills strings with their property names."""

    city: str
    temp: float


WEATHER_TOOL = openai.pydantic_function_tool(Weather)


# -- the entry points --------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One request: which method of which resource, with what, and what it logs."""

    resource: str
    method: str
    kwargs: Mapping[str, Any]
    operation: str
    finish_reason: str | None
    stream: bool = False

    @property
    def model(self) -> str:
        return str(self.kwargs["model"])


def _streaming(stream: bool, usage: bool) -> dict[str, Any]:
    if not stream:
        return {}
    return {"stream": True, "stream_options": USAGE_ON} if usage else {"stream": True}


def _chat(finish: str = "stop", stream: bool = False, usage: bool = True, **kwargs: Any) -> Call:
    args = {"model": MODEL, "messages": MESSAGES, **_streaming(stream, usage), **kwargs}
    return Call("chat.completions", "create", args, "chat", finish, stream)


def _responses(method: str = "create", stream: bool = False, **kwargs: Any) -> Call:
    args = {"model": MODEL, "input": QUESTION, **kwargs}
    if stream and method == "create":
        args["stream"] = True
    return Call("responses", method, args, "responses", "completed", stream)


def _completions(stream: bool = False, usage: bool = True) -> Call:
    args = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", **_streaming(stream, usage)}
    return Call("completions", "create", args, "completions", "stop", stream)


CALLS: dict[str, Call] = {
    "chat": _chat(),
    "chat-tools": _chat("tool_calls", tools=[WEATHER_TOOL]),
    "chat-stream": _chat(stream=True),
    "chat-stream-tools": _chat("tool_calls", stream=True, tools=[WEATHER_TOOL]),
    "chat-parse": Call(
        "chat.completions",
        "parse",
        {"model": MODEL, "messages": MESSAGES, "response_format": Weather},
        "chat",
        "stop",
    ),
    "responses": _responses(),
    "responses-stream": _responses(stream=True),
    "responses-parse": _responses("parse", text_format=Weather),
    "embeddings": Call(
        "embeddings",
        "create",
        {"model": "text-embedding-3-small", "input": ["a cat", "a dog"]},
        "embeddings",
        None,
    ),
    "completions": _completions(),
    "completions-stream": _completions(stream=True),
}
"""Each entry point's request; streams ask for usage where the endpoint can report it."""

BARE_STREAMS: dict[str, Call] = {
    "chat-stream-bare": _chat(stream=True, usage=False),
    "completions-stream-bare": _completions(stream=True, usage=False),
}
"""Streams that do not ask for usage, as most callers write them."""

HELPERS: dict[str, Call] = {
    "chat.stream": Call(
        "chat.completions", "stream", {"model": MODEL, "messages": MESSAGES}, "chat", "stop", True
    ),
    "responses.stream": _responses("stream", stream=True),
}
"""The ``.stream()`` helpers (context managers over a stream)."""

VARIANTS = ("plain", "with_raw_response", "with_streaming_response")


def _has(call: Call, variant: str) -> bool:
    """Whether the installed openai has this method in this variant."""
    resource = attrgetter(call.resource)(OpenAI(api_key="x", base_url="http://127.0.0.1:9"))
    holder = resource if variant == "plain" else getattr(resource, variant)
    return hasattr(holder, call.method)


def _matrix(calls: Mapping[str, Call]) -> list[Any]:
    return [
        pytest.param(name, variant, id=f"{name}-{variant}")
        for name, call in calls.items()
        for variant in VARIANTS
        if _has(call, variant)
    ]


MATRIX = _matrix(CALLS)
"""Every entry point in every variant the installed openai has."""
ALL_CALLS = {**CALLS, **BARE_STREAMS}
SAME_MATRIX = [
    pytest.param(*p.values, usage, id=f"{p.id}{'-stream_usage' if usage else ''}")
    for p in _matrix(ALL_CALLS)
    for usage in ([False, True] if ALL_CALLS[p.values[0]].stream else [False])
]
"""The matrix with streams bare, and with ``stream_usage`` for streams, where it matters."""


def dump(value: Any) -> Any:
    """What the user received, as plain data with its type, without timestamps."""
    if hasattr(value, "to_dict"):
        return (type(value).__name__, _strip(value.to_dict(warnings=False)))
    return value


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def method(api: Api, call: Call, variant: str = "plain") -> Any:
    """The client's method for ``call`` in ``variant``."""
    resource = attrgetter(call.resource)(api.client)
    return getattr(resource if variant == "plain" else getattr(resource, variant), call.method)


async def received(api: Api, result: Any, stream: bool) -> Any:
    """What a user reads from a call's result: its items, or itself."""
    if stream:
        return [type(result).__name__, [dump(item) for item in await api.drain(result)]]
    return dump(result)


async def perform(api: Api, call: Call, variant: str = "plain", **extra: Any) -> Any:
    """Make ``call`` in ``variant`` as a user would; return everything the user received."""
    kwargs = {**call.kwargs, **extra}
    if variant == "plain":
        return await received(api, await api.get(method(api, call)(**kwargs)), call.stream)
    if variant == "with_raw_response":
        raw = await api.get(method(api, call, variant)(**kwargs))
        body = await received(api, raw.parse(), call.stream)
        return {"request_id": raw.headers["x-request-id"], "body": body}
    async with api.opened(method(api, call, variant)(**kwargs)) as response:
        body = await received(api, await api.get(response.parse()), call.stream)
        return {"request_id": response.headers["x-request-id"], "body": body}


async def via_helper(api: Api, call: Call, **extra: Any) -> Any:
    """Use a ``.stream()`` helper to the end; its events and final object."""
    async with api.opened(method(api, call)(**call.kwargs, **extra)) as stream:
        events = [dump(event) for event in await api.drain(stream)]
        final_of = "get_final_completion" if call.operation == "chat" else "get_final_response"
        final = await api.get(getattr(stream, final_of)())
    return {"events": events, "final": dump(final)}


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, the loop the async OpenAI client is used with."""
    return "asyncio"


def _standin(**changes: Any) -> StandInServer:
    return StandInServer(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS, **changes)


@pytest.fixture
def server() -> Iterator[StandInServer]:
    """A fresh stand-in per test that reports 21 input and 5 output tokens."""
    with _standin() as standin:
        yield standin


@pytest.fixture(params=["sync", "async"])
async def api(request: pytest.FixtureRequest, server: StandInServer) -> AsyncIterator[Api]:
    """The sync and the async client against ``server``, one per run of the test."""
    client = Api(request.param, server)
    yield client
    await client.close()


@pytest.fixture
def instrumented() -> Iterator[None]:
    """The integration installed through runlog's public door, removed afterwards."""
    runlog.instrument_openai()
    yield
    runlog.uninstrument_openai()


def settled() -> None:
    """Let calls of streams collected earlier end, outside our capture."""
    assert _streams.settle(10)


@pytest.fixture
def events(instrumented: None) -> Iterator[Capture]:
    """The events logged during the test (instrumented)."""
    settled()
    with capture() as captured:
        yield captured


def calls(events: Capture) -> list[dict[str, Any]]:
    """The payloads of every ``llm_call.*`` event, after abandoned streams have ended."""
    assert _streams.settle(10)
    return [e.payload for e in events.all() if e.event_type.startswith("llm_call.")]


def the_call(events: Capture, event_type: str = "llm_call.completed") -> dict[str, Any]:
    """The one ``llm_call`` event logged, which must be of ``event_type``."""
    assert _streams.settle(10)
    logged = [e for e in events.all() if e.event_type.startswith("llm_call.")]
    assert [e.event_type for e in logged] == [event_type]
    return logged[0].payload


# -- counting as tiktoken does -------------------------------------------------------------
ENCODING = tiktoken.get_encoding(os.environ["RUNLOG_TIKTOKEN_ENCODING"])


def tokens(text: str) -> int:
    """Tokens of ``text`` in the encoding the test suite counts with."""
    return len(ENCODING.encode_ordinary(text))


def message_tokens(messages: list[Mapping[str, str]]) -> int:
    """OpenAI's accounting of chat messages: 3 per message, 3 to prime the reply."""
    return 3 + sum(3 + sum(tokens(v) for v in m.values()) for m in messages)


def text_of(item: Any) -> str:
    """The generated text one streamed item carries (chat, completions or responses)."""
    if getattr(item, "type", None) == "response.output_text.delta":
        return str(item.delta)
    choices = getattr(item, "choices", None) or []
    delta = getattr(choices[0], "delta", None) if choices else None
    if delta is not None:
        return delta.content or ""
    return (getattr(choices[0], "text", None) or "") if choices else ""


async def read_until_text(api: Api, stream: Any) -> str:
    """Read items with ``next()`` until one carries text; the text read."""
    while True:
        text = text_of(await api.next(stream))
        if text:
            return text


# -- the matrix ----------------------------------------------------------------------------
class TestEveryEntryPoint:
    @pytest.mark.parametrize(("name", "variant"), MATRIX)
    async def test_usage_is_logged(
        self, api: Api, server: StandInServer, events: Capture, name: str, variant: str
    ) -> None:
        """Each entry point logs one event whose numbers are the served usage."""
        call = CALLS[name]
        await perform(api, call, variant)
        logged = the_call(events)
        assert logged["model_name"] == call.model
        assert logged["response_model"] == call.model
        assert (logged["operation"], logged["stream"]) == (call.operation, call.stream)
        output = OUTPUT_TOKENS if call.operation != "embeddings" else 0
        assert (logged["input_tokens"], logged["output_tokens"]) == (INPUT_TOKENS, output)
        assert logged["token_source"] == "usage"
        assert logged.get("finish_reason") == call.finish_reason
        assert logged["request_id"] == server.requests[-1].request_id
        assert logged["status"] == "ok" and logged["latency_ms"] > 0
        assert ("time_to_first_token_ms" in logged) is call.stream
        assert logged.get("stream_end") == ("done" if call.stream else None)

    @pytest.mark.parametrize("name", HELPERS)
    async def test_stream_helpers_log_usage(
        self, api: Api, server: StandInServer, events: Capture, name: str
    ) -> None:
        """The ``.stream()`` helpers log the served usage once the stream is read."""
        call = HELPERS[name]
        await via_helper(
            api, call, **({"stream_options": USAGE_ON} if name == "chat.stream" else {})
        )
        logged = the_call(events)
        assert (logged["input_tokens"], logged["output_tokens"]) == (INPUT_TOKENS, OUTPUT_TOKENS)
        assert (logged["operation"], logged["stream"]) == (call.operation, True)
        assert logged["token_source"] == "usage"
        assert logged["finish_reason"] == call.finish_reason
        assert logged["request_id"] == server.requests[-1].request_id
        assert logged["stream_end"] == "done"
        assert 0 < logged["time_to_first_token_ms"] <= logged["latency_ms"]

    @pytest.mark.parametrize(("name", "variant", "stream_usage"), SAME_MATRIX)
    async def test_user_receives_the_same(
        self, api: Api, name: str, variant: str, stream_usage: bool
    ) -> None:
        """What the user receives is identical with and without instrumentation."""
        call = ALL_CALLS[name]
        bare = await fresh_run(api, lambda client: perform(client, call, variant))
        runlog.instrument_openai(stream_usage=stream_usage)
        try:
            with capture() as captured:
                seen = await fresh_run(api, lambda client: perform(client, call, variant))
        finally:
            runlog.uninstrument_openai()
        assert seen == bare
        assert len(calls(captured)) == 1

    @pytest.mark.parametrize("name", HELPERS)
    @pytest.mark.parametrize("stream_usage", [False, True], ids=["default", "stream_usage"])
    async def test_helpers_give_the_same(self, api: Api, name: str, stream_usage: bool) -> None:
        """The ``.stream()`` helpers' events and finals are identical with instrumentation."""
        call = HELPERS[name]
        bare = await fresh_run(api, lambda client: via_helper(client, call))
        runlog.instrument_openai(stream_usage=stream_usage)
        try:
            with capture() as captured:
                seen = await fresh_run(api, lambda client: via_helper(client, call))
        finally:
            runlog.uninstrument_openai()
        assert seen == bare
        assert len(calls(captured)) == 1

    @pytest.mark.parametrize(("name", "variant"), MATRIX)
    async def test_objects_are_the_librarys_own(
        self, api: Api, events: Capture, name: str, variant: str
    ) -> None:
        """Streams and raw responses keep the library's own classes (no proxy around them)."""
        call = CALLS[name]
        if variant == "plain":
            result = await api.get(method(api, call)(**call.kwargs))
            assert type(result).__module__.split(".")[0] == "openai"
            if call.stream:
                assert type(result) in (openai.Stream, openai.AsyncStream)
                await api.drain(result)
        elif variant == "with_raw_response":
            raw = await api.get(method(api, call, variant)(**call.kwargs))
            assert type(raw).__module__ == "openai._legacy_response"
            assert raw.headers["x-request-id"] and raw.http_response.status_code == 200
            await received(api, raw.parse(), call.stream)
        else:
            async with api.opened(method(api, call, variant)(**call.kwargs)) as response:
                assert type(response).__module__ == "openai._response"
                await received(api, await api.get(response.parse()), call.stream)
        assert len(calls(events)) == 1


async def fresh_run(api: Api, run: Any) -> Any:
    """Run against a fresh stand-in (ids start at 1 each time) with a client like ``api``'s."""
    with _standin() as fresh:
        client = Api(api.flavour, fresh)
        try:
            return await run(client)
        finally:
            await client.close()


class TestTiktokenFallback:
    @pytest.mark.parametrize(("name", "variant"), [p for p in MATRIX if "tools" not in p.id])
    async def test_counts_equal_tiktoken(
        self, api: Api, server: StandInServer, events: Capture, name: str, variant: str
    ) -> None:
        """Without usage, input and output are tiktoken's own counts of what went each way."""
        server.configure(usage=False)
        call = CALLS[name]
        await perform(api, call, variant)
        logged = the_call(events)
        assert (logged["input_tokens"], logged["output_tokens"]) == _expected_tokens(call)
        assert logged["token_source"] == "tiktoken"

    @pytest.mark.parametrize("name", ["chat-tools", "chat-stream-tools"])
    async def test_tool_calls_count_name_and_arguments(
        self, api: Api, server: StandInServer, events: Capture, name: str
    ) -> None:
        """A tool call's output is counted from the function name and its arguments."""
        server.configure(usage=False)
        await perform(api, CALLS[name])
        logged = the_call(events)
        assert logged["output_tokens"] == tokens("Weather" + json.dumps(STRUCTURED))
        assert logged["finish_reason"] == "tool_calls"

    @pytest.mark.parametrize("name", BARE_STREAMS)
    async def test_streams_without_usage(self, api: Api, events: Capture, name: str) -> None:
        """A stream that does not ask for usage is counted with tiktoken."""
        call = BARE_STREAMS[name]
        await perform(api, call)
        logged = the_call(events)
        assert (logged["input_tokens"], logged["output_tokens"]) == _expected_tokens(call)
        assert logged["token_source"] == "tiktoken"


STRUCTURED = {"city": "city", "temp": 1.5}
"""What the stand-in generates for :class:`Weather`, argument or structured output."""


def _expected_tokens(call: Call) -> tuple[int, int]:
    """tiktoken's counts of a call's input and of the stand-in's reply to it."""
    reply = json.dumps(STRUCTURED) if call.method == "parse" else REPLY
    if call.operation == "chat":
        return message_tokens(MESSAGES), tokens(reply)
    if call.operation == "responses":
        return message_tokens([{"role": "user", "content": QUESTION}]), tokens(reply)
    if call.operation == "completions":
        return tokens("Say hi"), tokens(REPLY)
    return sum(tokens(text) for text in call.kwargs["input"]), 0


class TestTiming:
    @pytest.mark.parametrize("name", CALLS)
    async def test_latency_covers_the_served_delays(
        self, api: Api, server: StandInServer, events: Capture, name: str
    ) -> None:
        """Latency runs to the last byte; a stream's first token comes with its first delta."""
        server.configure(delay=0.2, chunk_delay=0.05, chunks=3)
        call = CALLS[name]
        await perform(api, call)
        logged = the_call(events)
        if call.stream:
            assert logged["latency_ms"] >= 200 + 3 * 50
            first = 200 if "tools" in name else 200 + 50  # a tool's name comes before deltas
            assert first <= logged["time_to_first_token_ms"] <= logged["latency_ms"]
        else:
            assert logged["latency_ms"] >= 200
            assert "time_to_first_token_ms" not in logged

    @pytest.mark.parametrize("name", HELPERS)
    async def test_helpers_time_to_first_token(
        self, api: Api, server: StandInServer, events: Capture, name: str
    ) -> None:
        """The helpers' streams are timed like any other."""
        server.configure(delay=0.2, chunk_delay=0.05, chunks=3)
        await via_helper(api, HELPERS[name])
        logged = the_call(events)
        assert logged["latency_ms"] >= 200 + 3 * 50
        assert 200 + 50 <= logged["time_to_first_token_ms"] <= logged["latency_ms"]

    async def test_retries_are_one_call(
        self, api: Api, server: StandInServer, events: Capture
    ) -> None:
        """A request retried after a 500 is one call, timed from the first attempt."""
        server.enqueue(status=500, retry_after=0.01, delay=0.1)
        client = api.client.with_options(max_retries=1)
        await api.get(client.chat.completions.create(model=MODEL, messages=MESSAGES))
        logged = the_call(events)
        assert logged["latency_ms"] >= 100
        assert logged["request_id"] == server.requests[-1].request_id
        assert len(server.requests) == 2


class TestFailures:
    @pytest.mark.parametrize("name", CALLS)
    @pytest.mark.parametrize(
        ("status", "error"),
        [
            (400, openai.BadRequestError),
            (429, openai.RateLimitError),
            (500, openai.InternalServerError),
        ],
    )
    async def test_error_status(
        self,
        api: Api,
        server: StandInServer,
        events: Capture,
        name: str,
        status: int,
        error: type[Exception],
    ) -> None:
        """An error status logs llm_call.failed with its status and re-raises the error."""
        call = CALLS[name]
        with pytest.raises(error) as caught:
            await perform(api, call, extra_headers=behaviour_headers(status=status))
        logged = the_call(events, "llm_call.failed")
        assert (logged["error_type"], logged["status_code"]) == (error.__qualname__, status)
        assert logged["error"] == str(caught.value)
        assert (logged["model_name"], logged["operation"]) == (call.model, call.operation)
        assert logged["request_id"] == server.requests[-1].request_id
        assert logged["status"] == "error"
        assert logged["input_tokens"] == _expected_tokens(call)[0]

    @pytest.mark.parametrize(("name", "variant"), [p for p in MATRIX if "plain" not in p.id])
    async def test_error_status_of_variants(
        self, api: Api, events: Capture, name: str, variant: str
    ) -> None:
        """Raw and streaming-response variants fail the same way."""
        with pytest.raises(openai.RateLimitError):
            await perform(api, CALLS[name], variant, extra_headers=behaviour_headers(status=429))
        logged = the_call(events, "llm_call.failed")
        assert (logged["error_type"], logged["status_code"]) == ("RateLimitError", 429)

    @pytest.mark.parametrize("name", HELPERS)
    async def test_helper_error_status(self, api: Api, events: Capture, name: str) -> None:
        """A stream helper whose request fails logs llm_call.failed."""
        with pytest.raises(openai.InternalServerError):
            await via_helper(api, HELPERS[name], extra_headers=behaviour_headers(status=500))
        assert the_call(events, "llm_call.failed")["status_code"] == 500

    @pytest.mark.parametrize("name", ["chat", "chat-stream", "embeddings", "responses-stream"])
    async def test_timeout(
        self, api: Api, server: StandInServer, events: Capture, name: str
    ) -> None:
        """A request that times out logs llm_call.failed without a status code."""
        server.configure(hang=True)
        api.client = api.client.with_options(timeout=0.2)
        with pytest.raises(openai.APITimeoutError):
            await perform(api, CALLS[name])
        logged = the_call(events, "llm_call.failed")
        assert (logged["error_type"], logged["status_code"]) == ("APITimeoutError", None)
        assert logged["latency_ms"] >= 200

    async def test_connection_refused(self, api: Api, events: Capture) -> None:
        """A server that is gone logs llm_call.failed with APIConnectionError."""
        with _standin() as gone:
            client = Api(api.flavour, gone)
        try:
            with pytest.raises(openai.APIConnectionError):
                await perform(client, CALLS["chat"])
        finally:
            await client.close()
        logged = the_call(events, "llm_call.failed")
        assert (logged["error_type"], logged["status_code"]) == ("APIConnectionError", None)

    @pytest.mark.parametrize("name", ["chat-stream", "responses-stream", "completions-stream"])
    async def test_stream_cut_mid_way(
        self, api: Api, server: StandInServer, events: Capture, name: str
    ) -> None:
        """A stream cut by the server raises into the loop and logs llm_call.failed for it."""
        server.configure(chunks=5, disconnect_after=2)
        call = CALLS[name]
        got: list[Any] = []
        with pytest.raises(Exception) as caught:  # openai >= 3: APIConnectionError
            await api.drain(await api.get(method(api, call)(**call.kwargs)), got)
        logged = the_call(events, "llm_call.failed")
        assert logged["error_type"] == type(caught.value).__qualname__
        assert logged["request_id"] == server.requests[-1].request_id
        assert sum(bool(text_of(item)) for item in got) == 2

    async def test_stream_stall_times_out(
        self, api: Api, server: StandInServer, events: Capture
    ) -> None:
        """A stream that stalls mid-way times out in the loop and logs llm_call.failed."""
        server.configure(chunks=5, hang_after=2)
        client = api.client.with_options(timeout=0.2)
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        with pytest.raises(Exception) as caught:  # openai >= 3: APITimeoutError
            await api.drain(stream)
        logged = the_call(events, "llm_call.failed")
        assert logged["error_type"] == type(caught.value).__qualname__

    @pytest.mark.parametrize("variant", ["plain", "with_raw_response"])
    async def test_parse_raising_after_the_reply(
        self, api: Api, server: StandInServer, events: Capture, variant: str
    ) -> None:
        """``.parse()`` refusing a reply cut by the token limit logs llm_call.failed for it."""
        server.configure(finish_reason="length")
        with pytest.raises(openai.LengthFinishReasonError):
            result = await api.get(
                method(api, CALLS["chat-parse"], variant)(**CALLS["chat-parse"].kwargs)
            )
            result.parse()
        logged = the_call(events, "llm_call.failed")
        assert (logged["error_type"], logged["status_code"]) == ("LengthFinishReasonError", None)
        assert logged["input_tokens"] == INPUT_TOKENS  # from the usage of the refused reply

    async def test_cancelled_while_waiting(self, server: StandInServer, events: Capture) -> None:
        """An async call cancelled while waiting is logged as cancelled, not failed."""
        server.configure(delay=5)
        api = Api("async", server)
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(perform(api, CALLS["chat"]), timeout=0.2)
        finally:
            await api.close()
        logged = the_call(events)
        assert (logged["status"], logged["cancelled_by"]) == ("cancelled", "CancelledError")

    async def test_stream_cancelled_mid_way(self, server: StandInServer, events: Capture) -> None:
        """An async stream whose reader is cancelled between chunks is logged as cancelled."""
        server.configure(chunks=5, chunk_delay=5, delay=0)
        api = Api("async", server)
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(perform(api, STREAMS["chat"]), timeout=0.3)
        finally:
            await api.close()
        logged = the_call(events)
        assert (logged["status"], logged["cancelled_by"]) == ("cancelled", "CancelledError")

    async def test_other_requests_pass_through(self, api: Api, events: Capture) -> None:
        """Requests that are not model calls are left alone and log nothing."""
        with pytest.raises(openai.NotFoundError):
            await api.get(api.client.models.list())
        assert calls(events) == []


# -- streams -------------------------------------------------------------------------------
STREAMS = {
    "chat": BARE_STREAMS["chat-stream-bare"],
    "completions": BARE_STREAMS["completions-stream-bare"],
    "responses": CALLS["responses-stream"],
}


class TestStreamLifecycle:
    @pytest.mark.parametrize("name", STREAMS)
    async def test_next_gives_the_same_as_iteration(
        self, api: Api, events: Capture, name: str
    ) -> None:
        """Pulling items with next() sees every item and logs at the end of the stream."""
        call = STREAMS[name]
        stream = await api.get(method(api, call)(**call.kwargs))
        pulled = []
        with contextlib.suppress(StopAsyncIteration):
            while True:
                pulled.append(await api.next(stream))
        assert "".join(text_of(item) for item in pulled) == REPLY
        assert the_call(events)["stream_end"] == "done"

    @pytest.mark.parametrize("name", STREAMS)
    async def test_close_logs_what_was_received(
        self, api: Api, server: StandInServer, events: Capture, name: str
    ) -> None:
        """Closing a stream early logs at close, counting only the text received."""
        server.configure(chunks=5)
        call = STREAMS[name]
        stream = await api.get(method(api, call)(**call.kwargs))
        text = await read_until_text(api, stream)
        await api.get(stream.close())
        logged = the_call(events)  # before any garbage collection
        assert logged["stream_end"] == "closed"
        assert logged["output_tokens"] == tokens(text)
        assert logged["token_source"] == "tiktoken"
        assert "time_to_first_token_ms" in logged

    @pytest.mark.parametrize("name", STREAMS)
    async def test_long_stream_closed_part_way_counts_every_item_received(
        self, api: Api, server: StandInServer, events: Capture, name: str
    ) -> None:
        """Items after the first token are read in batches: a stream of several batches
        closed between two of them counts exactly the text its reader received."""
        reply = " ".join(f"w{i}" for i in range(3 * BATCH))
        server.configure(chunks=3 * BATCH, reply=reply, usage=False)
        call = STREAMS[name]
        stream = await api.get(method(api, call)(**call.kwargs))
        text = await read_until_text(api, stream)
        for _ in range(BATCH + BATCH // 2):
            text += text_of(await api.next(stream))
        await api.get(stream.close())
        logged = the_call(events)
        assert (logged["stream_end"], logged["output_tokens"]) == ("closed", tokens(text))
        assert 0 < len(text) < len(reply)

    @pytest.mark.parametrize("name", STREAMS)
    async def test_with_block_exit_logs(self, api: Api, events: Capture, name: str) -> None:
        """Leaving a stream's ``with`` block early logs at the exit."""
        call = STREAMS[name]
        stream = await api.get(method(api, call)(**call.kwargs))
        async with api.opened(stream) as entered:
            assert entered is stream
            await read_until_text(api, stream)
            assert calls(events) == []
        assert the_call(events)["stream_end"] == "closed"

    @pytest.mark.parametrize("name", HELPERS)
    async def test_helper_block_exit_logs(self, api: Api, events: Capture, name: str) -> None:
        """Leaving a ``.stream()`` helper's block early logs at the exit, not at collection."""
        call = HELPERS[name]
        async with api.opened(method(api, call)(**call.kwargs)) as stream:
            async with aclosing(api.items(stream)) as items:
                async for event in items:
                    if getattr(event, "type", "").endswith("delta") and event.delta:
                        break
            assert calls(events) == []
        logged = the_call(events)
        assert logged["stream_end"] == "closed"
        assert 0 < logged["output_tokens"] < tokens(REPLY)

    @pytest.mark.parametrize("name", STREAMS)
    async def test_abandoned_stream_logs_when_collected(
        self, api: Api, server: StandInServer, events: Capture, name: str
    ) -> None:
        """A stream dropped half-way logs, with what it received, when it is collected."""
        server.configure(chunks=5)
        call = STREAMS[name]
        stream = await api.get(method(api, call)(**call.kwargs))
        text = await read_until_text(api, stream)
        del stream
        await collect_garbage()
        logged = the_call(events)
        assert logged["stream_end"] == "abandoned"
        assert logged["output_tokens"] == tokens(text)

    async def test_abandoned_stream_keeps_its_span(self, api: Api, events: Capture) -> None:
        """A stream collected after its span ended still names that span as its parent."""
        call = STREAMS["chat"]
        with runlog.span("task") as task:
            stream = await api.get(method(api, call)(**call.kwargs))
        with runlog.span("later"):
            del stream
            await collect_garbage()
            logged = the_call(events)
        assert (logged["stream_end"], logged["parent_span_id"]) == ("abandoned", task.span_id)

    async def test_response_attribute_is_the_http_response(self, api: Api, events: Capture) -> None:
        """``stream.response`` still is the HTTP response, headers and all."""
        call = STREAMS["chat"]
        stream = await api.get(method(api, call)(**call.kwargs))
        response = stream.response
        http = sys.modules.get("httpx2") or sys.modules["httpx"]  # openai 3 / openai 1-2
        assert isinstance(response, http.Response) and response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        await api.drain(stream)
        assert response.is_closed
        assert the_call(events)["request_id"] == response.headers["x-request-id"]

    async def test_stream_never_read_logs_when_collected(self, api: Api, events: Capture) -> None:
        """A stream never read logs when collected, with no output."""
        call = STREAMS["chat"]
        await api.get(method(api, call)(**call.kwargs))
        await collect_garbage()
        logged = the_call(events)
        assert (logged["stream_end"], logged["output_tokens"]) == ("abandoned", 0)
        assert "time_to_first_token_ms" not in logged

    async def test_raw_stream_parsed_later(self, api: Api, events: Capture) -> None:
        """A raw response's stream, parsed after the call returned, is watched like any other."""
        call = STREAMS["chat"]
        raw = await api.get(method(api, call, "with_raw_response")(**call.kwargs))
        assert calls(events) == []
        stream = raw.parse()
        text = await read_until_text(api, stream)
        await api.get(stream.close())
        logged = the_call(events)
        assert (logged["stream_end"], logged["output_tokens"]) == ("closed", tokens(text))
        assert logged["request_id"] == raw.headers["x-request-id"]

    async def test_streaming_response_read_as_lines(self, api: Api, events: Capture) -> None:
        """A streaming response read as raw lines, never parsed, logs when its block ends."""
        call = STREAMS["chat"]
        manager = method(api, call, "with_streaming_response")(**call.kwargs)
        async with api.opened(manager) as response:
            lines = response.iter_lines()
            first = await lines.__anext__() if hasattr(lines, "__anext__") else next(lines)
            assert first.startswith("data: ")
        logged = the_call(events)
        assert (logged["stream_end"], logged["token_source"]) == ("closed", "tiktoken")
        assert (logged["input_tokens"], logged["output_tokens"]) == (message_tokens(MESSAGES), None)

    async def test_streaming_response_read_as_json(self, api: Api, events: Capture) -> None:
        """A non-streamed streaming response read with .json() takes usage from the body."""
        call = CALLS["chat"]
        async with api.opened(method(api, call, "with_streaming_response")(**call.kwargs)) as r:
            body = await api.get(r.json())
        assert body["usage"]["prompt_tokens"] == INPUT_TOKENS
        logged = the_call(events)
        assert (logged["input_tokens"], logged["output_tokens"]) == (INPUT_TOKENS, OUTPUT_TOKENS)
        assert logged["token_source"] == "usage" and "stream_end" not in logged

    async def test_raw_response_never_parsed(self, api: Api, events: Capture) -> None:
        """A raw response whose body was read logs at once, even if never parsed."""
        call = CALLS["responses"]
        raw = await api.get(method(api, call, "with_raw_response")(**call.kwargs))
        assert raw.headers["x-request-id"]
        logged = the_call(events)
        assert (logged["input_tokens"], logged["token_source"]) == (INPUT_TOKENS, "usage")

    async def test_stream_outlives_uninstrument(self, api: Api, events: Capture) -> None:
        """A stream opened while instrumented still logs after uninstrumenting."""
        call = STREAMS["chat"]
        stream = await api.get(method(api, call)(**call.kwargs))
        runlog.uninstrument_openai()
        await api.drain(stream)
        assert the_call(events)["stream_end"] == "done"


class TestStreamUsageOption:
    @pytest.fixture
    def events(self) -> Iterator[Capture]:
        """Events of calls instrumented with ``stream_usage=True``."""
        runlog.instrument_openai(stream_usage=True)
        try:
            with capture() as captured:
                yield captured
        finally:
            runlog.uninstrument_openai()

    @pytest.mark.parametrize("name", ["chat-stream-bare", "completions-stream-bare"])
    async def test_exact_usage_and_nothing_extra(
        self, api: Api, server: StandInServer, events: Capture, name: str
    ) -> None:
        """Streams get exact usage; the caller sees neither the usage chunk nor usage: null."""
        chunks = await perform(api, BARE_STREAMS[name])
        assert server.requests[-1].body["stream_options"] == USAGE_ON
        assert all(dump_["choices"] and "usage" not in dump_ for _, dump_ in chunks[1])
        logged = the_call(events)
        assert (logged["input_tokens"], logged["output_tokens"]) == (INPUT_TOKENS, OUTPUT_TOKENS)
        assert logged["token_source"] == "usage"

    async def test_users_own_include_usage_is_kept(
        self, api: Api, server: StandInServer, events: Capture
    ) -> None:
        """A caller who asked for include_usage gets the usage chunk as usual."""
        chunks = await perform(api, CALLS["chat-stream"])
        _, last = chunks[1][-1]
        assert last["choices"] == [] and last["usage"]["prompt_tokens"] == INPUT_TOKENS

    async def test_users_explicit_no_is_respected(
        self, api: Api, server: StandInServer, events: Capture
    ) -> None:
        """A caller who said include_usage False is not overruled."""
        options = {"include_usage": False}
        await perform(api, BARE_STREAMS["chat-stream-bare"], stream_options=options)
        assert server.requests[-1].body["stream_options"] == options
        assert the_call(events)["token_source"] == "tiktoken"

    async def test_closed_before_the_usage_chunk(
        self, api: Api, server: StandInServer, events: Capture
    ) -> None:
        """A stream closed before its usage chunk falls back to tiktoken."""
        server.configure(chunks=5)
        call = BARE_STREAMS["chat-stream-bare"]
        stream = await api.get(method(api, call)(**call.kwargs))
        text = await read_until_text(api, stream)
        await api.get(stream.close())
        logged = the_call(events)
        assert (logged["output_tokens"], logged["token_source"]) == (tokens(text), "tiktoken")

    async def test_helper_gets_exact_usage(
        self, api: Api, server: StandInServer, events: Capture
    ) -> None:
        """The chat helper's final completion has no usage, as without; the event has it."""
        seen = await via_helper(api, HELPERS["chat.stream"])
        assert seen["final"][1].get("usage") is None
        assert the_call(events)["token_source"] == "usage"

    async def test_responses_are_not_changed(
        self, api: Api, server: StandInServer, events: Capture
    ) -> None:
        """Responses streams carry usage anyway; their request is left as it is."""
        await perform(api, CALLS["responses-stream"])
        assert "stream_options" not in server.requests[-1].body
        assert the_call(events)["token_source"] == "usage"


# -- lifecycle, content and odd shapes -----------------------------------------------------
class TestLifecycle:
    async def test_instrument_twice_is_once(self, api: Api) -> None:
        """Instrumenting twice patches once and logs one event per call."""
        runlog.instrument_openai()
        runlog.instrument_openai()
        try:
            assert not hasattr(SyncAPIClient.__dict__["request"].__wrapped__, "_self_wrapper")
            with capture() as captured:
                await perform(api, CALLS["chat"])
            assert len(calls(captured)) == 1
        finally:
            runlog.uninstrument_openai()

    async def test_uninstrument_restores_the_originals(self, api: Api) -> None:
        """Uninstrumenting puts the original methods back; calls log nothing."""
        originals = SyncAPIClient.__dict__["request"], AsyncAPIClient.__dict__["request"]
        runlog.instrument_openai()
        assert _patch.installed()
        runlog.uninstrument_openai()
        runlog.uninstrument_openai()
        assert (SyncAPIClient.__dict__["request"], AsyncAPIClient.__dict__["request"]) == originals
        with capture() as captured:
            await perform(api, CALLS["chat"])
        assert calls(captured) == []

    async def test_clients_made_before_and_after(self, server: StandInServer) -> None:
        """Clients made before and after instrumenting are both covered, sync and async."""
        before = [Api(flavour, server) for flavour in ("sync", "async")]
        runlog.instrument_openai()
        after = [Api(flavour, server) for flavour in ("sync", "async")]
        try:
            with capture() as captured:
                for api in before + after:
                    await perform(api, CALLS["embeddings"])
            assert len(calls(captured)) == 4
        finally:
            runlog.uninstrument_openai()
            for api in before + after:
                await api.close()

    def test_without_openai_a_clear_import_error(self) -> None:
        """Without openai installed, instrumenting names the extra to install."""
        out = python(
            """
            import sys
            sys.modules["openai"] = None  # as if not installed
            import runlog
            try:
                runlog.instrument_openai()
            except ImportError as exc:
                print(exc)
            """
        ).stdout
        assert "pip install runlog[openai]" in out

    def test_imports_neither_openai_early_nor_httpx_ever(self) -> None:
        """Importing the package imports no openai; instrumented calls never import httpx."""
        out = python(
            """
            import json, sys
            import runlog_openai, runlog_openai.standin
            early = "openai" in sys.modules
            import openai  # openai 3 sends through httpx2; 1.x and 2.x import httpx themselves
            httpx_by_openai = "httpx" in sys.modules
            runlog_openai.instrument()
            from runlog_openai.standin import StandInServer
            with StandInServer() as server:
                client = openai.OpenAI(base_url=server.base_url, api_key="k")
                messages = [{"role": "user", "content": "x"}]
                client.chat.completions.create(model="m", messages=messages)
                list(client.chat.completions.create(model="m", messages=messages, stream=True))
            print(json.dumps([early, "httpx" in sys.modules, httpx_by_openai]))
            """,
            RUNLOG_DB="events.db",
        ).stdout
        early, httpx_after, httpx_by_openai = json.loads(out.splitlines()[-1])
        assert (early, httpx_after) == (False, httpx_by_openai)
        if int(openai.__version__.split(".")[0]) >= 3:
            assert not httpx_after

    def test_stream_still_open_at_exit(self, tmp_path: Any) -> None:
        """A stream still open when the program exits is logged before process.exited."""
        db = tmp_path / "exit.db"
        python(
            """
            import runlog
            from openai import OpenAI
            from runlog_openai.standin import StandInServer
            runlog.init(role="worker")
            runlog.instrument_openai()
            server = StandInServer(chunks=5).start()
            client = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
            messages = [{"role": "user", "content": "x"}]
            kept = client.chat.completions.create(model="m", messages=messages, stream=True)
            next(kept), next(kept)
            """,
            db,
        )
        logged = [(r["event_type"], r["payload"].get("stream_end")) for r in rows(db)]
        assert logged[1:] == [("llm_call.completed", "abandoned"), ("process.exited", None)]

    async def test_calls_belong_to_the_current_span(self, api: Api, events: Capture) -> None:
        """A call made inside a span names it as its parent."""
        with runlog.span("task") as task:
            await perform(api, CALLS["chat"])
        assert the_call(events)["parent_span_id"] == task.span_id

    async def test_concurrent_async_calls(self, server: StandInServer, events: Capture) -> None:
        """Concurrent async calls are logged one each, with their own request ids."""
        api = Api("async", server)
        try:
            await asyncio.gather(*(perform(api, CALLS["chat"]) for _ in range(5)))
        finally:
            await api.close()
        ids = {payload["request_id"] for payload in calls(events)}
        assert ids == {request.request_id for request in server.requests}
        assert len(ids) == 5

    def test_a_streams_headers_are_looked_at_once(
        self, server: StandInServer, events: Capture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A stream's request id is read from its response's headers once, as it is parsed,
        even when they have none (OpenAI-compatible servers): the stream ``request()``
        returns is the one parsed, so there is nothing more to learn from it."""
        from runlog_providers import _tracker

        lookups: list[str] = []
        real = _tracker._header

        def spy(response: object, header: str) -> str | None:
            lookups.append(header)
            return real(response, header)

        monkeypatch.setattr(_tracker, "_header", spy)
        unsent = dataclasses.replace(_patch.PROVIDER, request_id_header="x-not-sent")
        monkeypatch.setattr(_patch.INTEGRATION, "provider", unsent)
        client = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        for _ in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
            pass
        assert lookups == ["x-not-sent"]
        logged = the_call(events)
        assert logged.get("request_id") is None and logged["stream_end"] == "done"


class TestContent:
    async def test_no_content_and_no_secrets_by_default(
        self, api: Api, server: StandInServer, events: Capture
    ) -> None:
        """By default neither prompt nor reply nor key nor headers reach the event."""
        await perform(api, CALLS["chat"])
        await perform(api, CALLS["chat-stream"])
        logged = json.dumps(calls(events))
        for secret in (MESSAGES[0]["content"], REPLY, server.api_key, "Bearer", "authorization"):
            assert secret not in logged

    @pytest.mark.parametrize(
        "name", ["chat", "chat-stream", "responses", "responses-stream", "completions"]
    )
    async def test_content_when_opted_in(self, api: Api, server: StandInServer, name: str) -> None:
        """With capture_content the input and generated text are logged, still no key."""
        runlog.instrument_openai(capture_content=True)
        try:
            with capture() as captured:
                await perform(api, CALLS[name])
        finally:
            runlog.uninstrument_openai()
        (logged,) = calls(captured)
        call = CALLS[name]
        sent = call.kwargs.get("messages", call.kwargs.get("input", call.kwargs.get("prompt")))
        assert logged["input_content"] == sent
        assert logged["output_content"] == REPLY
        assert server.api_key not in json.dumps(logged)

    async def test_embeddings_have_no_output_content(self, api: Api) -> None:
        """Embeddings log their input, and no output text, when content is captured."""
        runlog.instrument_openai(capture_content=True)
        try:
            with capture() as captured:
                await perform(api, CALLS["embeddings"])
        finally:
            runlog.uninstrument_openai()
        (logged,) = calls(captured)
        assert logged["input_content"] == ["a cat", "a dog"]
        assert "output_content" not in logged


class TestOddShapes:
    async def test_dict_instead_of_a_model(self, api: Api, events: Capture) -> None:
        """A call asking for a plain dict gets it, and its usage is still read."""
        body = {"model": MODEL, "messages": MESSAGES}
        reply = await api.get(
            api.client.post("/chat/completions", cast_to=dict[str, Any], body=body)
        )
        assert reply["choices"][0]["message"]["content"] == REPLY
        logged = the_call(events)
        assert (logged["input_tokens"], logged["token_source"]) == (INPUT_TOKENS, "usage")
        assert logged["finish_reason"] == "stop"

    async def test_text_instead_of_a_model(self, api: Api, events: Capture) -> None:
        """A call asking for the body as text gets it unchanged; output is left unknown."""
        body = {"model": MODEL, "messages": MESSAGES}
        reply = await api.get(api.client.post("/chat/completions", cast_to=str, body=body))
        assert json.loads(reply)["usage"]["prompt_tokens"] == INPUT_TOKENS
        logged = the_call(events)
        assert logged["token_source"] == "tiktoken"
        assert (logged["input_tokens"], logged["output_tokens"]) == (message_tokens(MESSAGES), None)

    async def test_a_reply_without_the_usual_fields(
        self, api: Api, server: StandInServer, events: Capture
    ) -> None:
        """A reply naming another model and lacking usage is logged without error."""
        server.configure(usage=False, model="other-model")
        await perform(api, CALLS["responses"])
        logged = the_call(events)
        assert (logged["model_name"], logged["response_model"]) == (MODEL, "other-model")
