"""The stand-in OpenAI server, exercised by the real ``openai`` client over real HTTP.

Most tests run twice, with ``OpenAI`` and with ``AsyncOpenAI``: the ``api`` fixture
gives one client and awaits / iterates / enters whatever that client returns, so one
test body covers both.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from enum import Enum
from typing import Any, Literal

import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, Field

from runlog_openai.standin import Behaviour, StandInServer, behaviour_headers

from openai_api import Api

pytestmark = pytest.mark.anyio

MODEL = "gpt-4o-mini"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather in Paris?"}
]


class Weather(BaseModel):
    """A structured reply; the stand-in fills strings with their property names."""

    city: str
    temp: float
    days: int


WEATHER = Weather(city="city", temp=1.5, days=1)
WEATHER_TOOL = openai.pydantic_function_tool(Weather)


class Unit(str, Enum):
    """An enum in a schema: the stand-in picks the first member."""

    C = "C"
    F = "F"


class Day(BaseModel):
    """A nested model with a format, a bound, an enum and a nullable field."""

    date: datetime.date
    high: float = Field(ge=10)
    unit: Unit
    note: str | None


class Forecast(BaseModel):
    """A recursive model with a literal, a minimum list length and bounded fields."""

    city: Literal["Paris"]
    days: list[Day] = Field(min_length=2)
    count: int = Field(gt=3)
    code: str = Field(min_length=6)
    child: Forecast | None


RESPONSES_TOOL = {"type": "function", "name": "Weather", "parameters": Weather.model_json_schema()}


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, the loop the async OpenAI client is used with."""
    return "asyncio"


@pytest.fixture
def server() -> Iterator[StandInServer]:
    """A fresh stand-in per test, closed (threads joined) afterwards."""
    with StandInServer() as standin:
        yield standin


@pytest.fixture(params=["sync", "async"])
async def api(request: pytest.FixtureRequest, server: StandInServer) -> AsyncIterator[Api]:
    """The sync and the async client against ``server``, one per run of the test."""
    client = Api(request.param, server)
    yield client
    await client.close()


async def chat(api: Api, **kwargs: Any) -> Any:
    """A chat completion (or stream) with the test model and messages unless given."""
    kwargs = {"model": MODEL, "messages": MESSAGES, **kwargs}
    return await api.get(api.client.chat.completions.create(**kwargs))


class TestChatCompletions:
    async def test_reply_and_usage(self, api: Api, server: StandInServer) -> None:
        """A completion carries the configured reply and exactly the configured usage."""
        server.configure(reply="Sunny.", input_tokens=5, output_tokens=3)
        completion = await chat(api)
        choice = completion.choices[0]
        assert (choice.message.content, choice.finish_reason) == ("Sunny.", "stop")
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 3)
        assert completion.usage.total_tokens == 8
        assert completion.model == MODEL
        assert completion._request_id == server.requests[0].request_id

    async def test_model_override(self, api: Api, server: StandInServer) -> None:
        """The reply can name a different model than the request, as snapshots do."""
        server.configure(model="gpt-4o-mini-2024-07-18")
        assert (await chat(api)).model == "gpt-4o-mini-2024-07-18"

    @pytest.mark.parametrize("stream", [False, True])
    async def test_finish_reason_override(
        self, api: Api, server: StandInServer, stream: bool
    ) -> None:
        """``finish_reason`` replaces the reason chat gives, streamed or not."""
        server.configure(finish_reason="length")
        result = await chat(api, stream=stream)
        if stream:
            result = (await api.drain(result))[-1]
        assert result.choices[0].finish_reason == "length"

    async def test_finish_reason_length_fails_parse(self, api: Api, server: StandInServer) -> None:
        """A reply cut by the token limit makes ``.parse()`` raise, as the real API's does."""
        server.configure(finish_reason="length")
        with pytest.raises(openai.LengthFinishReasonError):
            await api.get(
                api.client.chat.completions.parse(
                    model=MODEL, messages=MESSAGES, response_format=Weather
                )
            )

    async def test_usage_can_be_omitted(self, api: Api, server: StandInServer) -> None:
        """With usage off the completion has no usage at all."""
        server.configure(usage=False)
        assert (await chat(api)).usage is None

    async def test_stream_has_the_configured_chunk_count(
        self, api: Api, server: StandInServer
    ) -> None:
        """A stream sends a role chunk, exactly ``chunks`` content chunks and a finish chunk."""
        server.configure(reply="ab" * 200, chunks=200)
        chunks = await api.drain(await chat(api, stream=True))
        deltas = [c.choices[0].delta for c in chunks]
        assert len(chunks) == 202
        assert deltas[0].role == "assistant"
        assert [d.content for d in deltas[1:-1]] == ["ab"] * 200
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert all(c.usage is None for c in chunks)

    async def test_stream_cuts_per_word_by_default(self, api: Api, server: StandInServer) -> None:
        """Without ``chunks`` each word (with its trailing space) is one delta."""
        server.configure(reply="one two  three")
        chunks = await api.drain(await chat(api, stream=True))
        assert [c.choices[0].delta.content for c in chunks[1:-1]] == ["one ", "two  ", "three"]

    async def test_stream_usage_chunk(self, api: Api, server: StandInServer) -> None:
        """With include_usage the last chunk has no choices and carries the usage."""
        server.configure(input_tokens=21, output_tokens=4)
        options = {"include_usage": True}
        chunks = await api.drain(await chat(api, stream=True, stream_options=options))
        last = chunks[-1]
        assert last.choices == []
        assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (21, 4)
        assert all(c.usage is None for c in chunks[:-1])

    async def test_stream_usage_can_be_omitted(self, api: Api, server: StandInServer) -> None:
        """With usage off even include_usage gets no usage chunk."""
        server.configure(usage=False)
        options = {"include_usage": True}
        chunks = await api.drain(await chat(api, stream=True, stream_options=options))
        assert all(c.choices and c.usage is None for c in chunks)

    async def test_tool_call(self, api: Api) -> None:
        """Offered tools, the model calls the first with arguments matching its schema."""
        completion = await chat(api, tools=[WEATHER_TOOL])
        choice = completion.choices[0]
        call = choice.message.tool_calls[0]
        assert (choice.finish_reason, call.type, call.function.name) == (
            "tool_calls",
            "function",
            "Weather",
        )
        assert Weather.model_validate_json(call.function.arguments) == WEATHER

    async def test_text_after_tool_result(self, api: Api, server: StandInServer) -> None:
        """Once the conversation ends with a tool result, the model answers in text."""
        server.configure(reply="It is sunny.")
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "Weather", "arguments": "{}"},
        }
        messages = [
            *MESSAGES,
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
        completion = await chat(api, messages=messages, tools=[WEATHER_TOOL])
        assert completion.choices[0].message.content == "It is sunny."
        assert completion.choices[0].message.tool_calls is None

    async def test_tools_can_be_declined(self, api: Api, server: StandInServer) -> None:
        """With call_tools off the model answers in text although tools are offered."""
        server.configure(call_tools=False)
        completion = await chat(api, tools=[WEATHER_TOOL])
        assert completion.choices[0].message.content == Behaviour().reply

    async def test_streamed_tool_call(self, api: Api, server: StandInServer) -> None:
        """A streamed tool call names the function first, then sends argument deltas."""
        server.configure(chunks=4)
        chunks = await api.drain(await chat(api, tools=[WEATHER_TOOL], stream=True))
        first = chunks[0].choices[0].delta.tool_calls[0]
        pieces = [c.choices[0].delta.tool_calls[0].function.arguments for c in chunks[1:-1]]
        assert (first.index, first.type, first.function.name) == (0, "function", "Weather")
        assert first.id
        assert len(pieces) == 4
        assert Weather.model_validate_json("".join(pieces)) == WEATHER
        assert chunks[-1].choices[0].finish_reason == "tool_calls"

    async def test_parse_response_format(self, api: Api) -> None:
        """``chat.completions.parse`` with a model class gets a parsed instance."""
        kwargs = {"model": MODEL, "messages": MESSAGES, "response_format": Weather}
        completion = await api.get(api.client.chat.completions.parse(**kwargs))
        assert completion.choices[0].message.parsed == WEATHER

    async def test_parse_rich_schema(self, api: Api) -> None:
        """Nested, recursive, enum, literal and bounded fields all get valid values."""
        kwargs = {"model": MODEL, "messages": MESSAGES, "response_format": Forecast}
        completion = await api.get(api.client.chat.completions.parse(**kwargs))
        forecast = completion.choices[0].message.parsed
        assert (forecast.city, forecast.count, forecast.code) == ("Paris", 4, "codexx")
        assert forecast.days[0] == Day(
            date=datetime.date(2024, 1, 1), high=10, unit=Unit.C, note="note"
        )

    async def test_parse_strict_tool(self, api: Api) -> None:
        """``chat.completions.parse`` with a strict tool gets parsed arguments."""
        kwargs = {"model": MODEL, "messages": MESSAGES, "tools": [WEATHER_TOOL]}
        completion = await api.get(api.client.chat.completions.parse(**kwargs))
        call = completion.choices[0].message.tool_calls[0]
        assert call.function.parsed_arguments == WEATHER

    async def test_stream_helper(self, api: Api) -> None:
        """The ``chat.completions.stream`` helper sees content events and a parsed final."""
        manager = api.client.chat.completions.stream(
            model=MODEL, messages=MESSAGES, response_format=Weather
        )
        async with api.opened(manager) as stream:
            events = await api.drain(stream)
            final = await api.get(stream.get_final_completion())
        assert "content.delta" in {e.type for e in events}
        assert events[-1].type == "content.done"
        assert final.choices[0].message.parsed == WEATHER


class TestResponses:
    async def test_create(self, api: Api, server: StandInServer) -> None:
        """A response has the reply as output text and the configured usage."""
        server.configure(reply="Sunny.", input_tokens=9, output_tokens=2)
        response = await api.get(api.client.responses.create(model=MODEL, input="Weather?"))
        assert (response.output_text, response.status, response.model) == (
            "Sunny.",
            "completed",
            MODEL,
        )
        usage = response.usage
        assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (9, 2, 11)

    async def test_usage_can_be_omitted(self, api: Api, server: StandInServer) -> None:
        """With usage off the response has no usage."""
        server.configure(usage=False)
        response = await api.get(api.client.responses.create(model=MODEL, input="Weather?"))
        assert response.usage is None

    async def test_stream_events(self, api: Api, server: StandInServer) -> None:
        """A raw stream has the API's event sequence and usage on response.completed."""
        server.configure(reply="a b c", chunks=3, input_tokens=4, output_tokens=3)
        stream = api.client.responses.create(model=MODEL, input="Weather?", stream=True)
        events = await api.drain(stream)
        assert [e.type for e in events] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            *["response.output_text.delta"] * 3,
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
        assert [e.sequence_number for e in events] == list(range(len(events)))
        completed = events[-1].response
        assert (completed.usage.input_tokens, completed.usage.output_tokens) == (4, 3)
        assert completed.output_text == "a b c"

    async def test_stream_helper(self, api: Api) -> None:
        """The ``responses.stream`` helper accumulates text and parses ``text_format``."""
        manager = api.client.responses.stream(model=MODEL, input="Weather?", text_format=Weather)
        async with api.opened(manager) as stream:
            events = await api.drain(stream)
            final = await api.get(stream.get_final_response())
        deltas = [e for e in events if e.type == "response.output_text.delta"]
        assert Weather.model_validate_json(deltas[-1].snapshot) == WEATHER
        assert final.output_parsed == WEATHER

    async def test_parse(self, api: Api) -> None:
        """``responses.parse`` with ``text_format`` gets a parsed instance."""
        kwargs = {"model": MODEL, "input": "Weather?", "text_format": Weather}
        response = await api.get(api.client.responses.parse(**kwargs))
        assert response.output_parsed == WEATHER

    @pytest.mark.parametrize("stream", [False, True])
    async def test_function_call(self, api: Api, stream: bool) -> None:
        """Offered function tools, the response is a function call with schema arguments."""
        kwargs = {"model": MODEL, "input": "Weather?", "tools": [RESPONSES_TOOL]}
        if stream:
            async with api.opened(api.client.responses.stream(**kwargs)) as events:
                response = await api.get(events.get_final_response())
        else:
            response = await api.get(api.client.responses.create(**kwargs))
        call = response.output[0]
        assert (call.type, call.name, call.status) == ("function_call", "Weather", "completed")
        assert Weather.model_validate_json(call.arguments) == WEATHER


class TestEmbeddings:
    async def test_vectors_and_usage(self, api: Api, server: StandInServer) -> None:
        """One vector per input, base64 (the client's default) equal to floats, known usage."""
        server.configure(input_tokens=6)
        kwargs = {"model": "text-embedding-3-small", "input": ["red", "blue"]}
        packed = await api.get(api.client.embeddings.create(**kwargs))
        floats = await api.get(api.client.embeddings.create(**kwargs, encoding_format="float"))
        assert [r.body["encoding_format"] for r in server.requests] == ["base64", "float"]
        assert [e.embedding for e in packed.data] == [e.embedding for e in floats.data]
        assert [len(e.embedding) for e in packed.data] == [8, 8]
        assert packed.data[0].embedding != packed.data[1].embedding
        assert (packed.usage.prompt_tokens, packed.usage.total_tokens) == (6, 6)

    async def test_dimensions(self, api: Api) -> None:
        """The request's ``dimensions`` sets the vector length."""
        kwargs = {"model": "text-embedding-3-small", "input": "red", "dimensions": 3}
        result = await api.get(api.client.embeddings.create(**kwargs))
        assert len(result.data[0].embedding) == 3

    def test_base64_is_little_endian_float32(self, server: StandInServer) -> None:
        """The base64 form decodes as little-endian float32 in [-1, 1), as the API's does."""
        with OpenAI(base_url=server.base_url, api_key=server.api_key) as client:
            raw = client.embeddings.with_raw_response.create(
                model="m", input="red", encoding_format="base64"
            )
        encoded = json.loads(raw.text)["data"][0]["embedding"]
        values = struct.unpack("<8f", base64.b64decode(encoded))
        assert all(-1.0 <= v < 1.0 for v in values)


class TestCompletions:
    async def test_create(self, api: Api, server: StandInServer) -> None:
        """A legacy completion carries the reply text and the configured usage."""
        server.configure(reply="Once upon a time", input_tokens=3, output_tokens=4)
        result = await api.get(api.client.completions.create(model=MODEL, prompt="Tell me"))
        assert (result.choices[0].text, result.choices[0].finish_reason) == (
            "Once upon a time",
            "stop",
        )
        assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (3, 4)

    async def test_stream(self, api: Api, server: StandInServer) -> None:
        """A legacy stream sends ``chunks`` text chunks, a finish chunk and a usage chunk."""
        server.configure(reply="abcdef", chunks=3, output_tokens=2)
        stream = api.client.completions.create(
            model=MODEL, prompt="Tell me", stream=True, stream_options={"include_usage": True}
        )
        chunks = await api.drain(stream)
        assert [c.choices[0].text for c in chunks[:3]] == ["ab", "cd", "ef"]
        assert chunks[3].choices[0].finish_reason == "stop"
        assert (chunks[4].choices, chunks[4].usage.completion_tokens) == ([], 2)


class TestRawResponses:
    async def test_with_raw_response(self, api: Api, server: StandInServer) -> None:
        """``with_raw_response`` exposes the API's headers and still parses."""
        create = api.client.chat.completions.with_raw_response.create
        raw = await api.get(create(model=MODEL, messages=MESSAGES))
        assert raw.headers["x-request-id"] == server.requests[0].request_id
        assert raw.headers["openai-version"] == "2020-10-01"
        assert raw.parse().choices[0].message.content == Behaviour().reply

    async def test_with_streaming_response(self, api: Api, server: StandInServer) -> None:
        """``with_streaming_response`` of a stream gives SSE headers and parseable chunks."""
        server.configure(chunks=2)
        create = api.client.chat.completions.with_streaming_response.create
        async with api.opened(create(model=MODEL, messages=MESSAGES, stream=True)) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-request-id"] == server.requests[0].request_id
            chunks = await api.drain(await api.get(response.parse()))
        assert len(chunks) == 4

    async def test_with_streaming_response_of_a_body(self, api: Api) -> None:
        """``with_streaming_response`` of a plain call parses the JSON body."""
        create = api.client.responses.with_streaming_response.create
        async with api.opened(create(model=MODEL, input="Weather?")) as response:
            parsed = await api.get(response.parse())
        assert parsed.output_text == Behaviour().reply


class TestFailures:
    @pytest.mark.parametrize(
        ("status", "error", "kind"),
        [
            (400, openai.BadRequestError, "invalid_request_error"),
            (429, openai.RateLimitError, "requests"),
            (500, openai.InternalServerError, "server_error"),
        ],
    )
    @pytest.mark.parametrize("stream", [False, True])
    async def test_error_status(
        self, api: Api, status: int, error: type[Exception], kind: str, stream: bool
    ) -> None:
        """An error status raises the matching openai exception with OpenAI's error body."""
        with pytest.raises(error) as caught:
            await api.drain(
                await chat(api, stream=stream, extra_headers=behaviour_headers(status=status))
            )
        assert isinstance(caught.value, openai.APIStatusError)
        assert caught.value.status_code == status
        body = caught.value.body
        assert isinstance(body, dict) and body["type"] == kind

    async def test_hang_times_out(self, api: Api, server: StandInServer) -> None:
        """A hanging server makes the client time out; the request was still recorded."""
        server.configure(hang=True)
        with pytest.raises(openai.APITimeoutError):
            await api.get(
                api.client.with_options(timeout=0.2).chat.completions.create(
                    model=MODEL, messages=MESSAGES
                )
            )
        assert server.wait_for_requests(1)[0].behaviour == Behaviour(hang=True)

    async def test_stream_stall_times_out(self, api: Api, server: StandInServer) -> None:
        """A stream that stalls after two deltas ends in a timeout mid-iteration."""
        server.configure(chunks=5, hang_after=2)
        client = api.client.with_options(timeout=0.2)
        received: list[Any] = []
        with pytest.raises(openai.APITimeoutError):
            stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
            await api.drain(stream, into=received)
        assert len(received) == 3  # the role chunk and two content deltas

    async def test_stream_disconnect(self, api: Api, server: StandInServer) -> None:
        """A stream cut after three deltas raises a connection error mid-iteration."""
        server.configure(chunks=5, disconnect_after=3)
        received: list[Any] = []
        with pytest.raises(openai.APIConnectionError):
            await api.drain(await chat(api, stream=True), into=received)
        assert len(received) == 4

    async def test_retry_after(self, api: Api, server: StandInServer) -> None:
        """A queued 429 with retry_after is retried at once, and the retry succeeds."""
        server.enqueue(status=429, retry_after=0.01)
        client = api.client.with_options(max_retries=1)
        completion = await api.get(client.chat.completions.create(model=MODEL, messages=MESSAGES))
        assert completion.choices[0].message.content == Behaviour().reply
        assert [r.behaviour.status for r in server.requests if r.behaviour] == [429, 200]

    async def test_unknown_header_is_refused(self, api: Api, server: StandInServer) -> None:
        """A misspelt ``x-standin-*`` header is a 400 that names the header."""
        with pytest.raises(openai.BadRequestError, match="x-standin-dealy"):
            await chat(api, extra_headers={"x-standin-dealy": "1"})
        assert server.requests[0].behaviour is None

    async def test_unknown_path_is_not_found(self, api: Api) -> None:
        """Endpoints the stand-in lacks answer OpenAI's 404 JSON."""
        with pytest.raises(openai.NotFoundError):
            await api.get(api.client.models.list())


class TestTiming:
    async def test_delay(self, api: Api, server: StandInServer) -> None:
        """The reply starts no earlier than ``delay`` after the request."""
        server.configure(delay=0.2)
        start = time.monotonic()
        await chat(api)
        assert time.monotonic() - start >= 0.2

    async def test_chunk_delay(self, api: Api, server: StandInServer) -> None:
        """Each content delta comes ``chunk_delay`` after the last, the first after ``delay``."""
        server.configure(delay=0.1, chunk_delay=0.05, chunks=4)
        stamps: list[float] = []
        start = time.monotonic()
        await api.drain(await chat(api, stream=True), stamps=stamps)
        assert stamps[1] - start >= 0.15  # the first content delta: time to first token
        assert stamps[-1] - start >= 0.3


class TestControl:
    async def test_precedence(self, api: Api, server: StandInServer) -> None:
        """Headers override the queued changes, which override the defaults, once each."""
        server.configure(reply="default")
        server.enqueue(reply="queued", output_tokens=1)
        first = await chat(api, extra_headers=behaviour_headers(reply="header"))
        second = await chat(api)
        assert (first.choices[0].message.content, first.usage.completion_tokens) == ("header", 1)
        assert (second.choices[0].message.content, second.usage.completion_tokens) == ("default", 7)

    async def test_records_requests(self, api: Api, server: StandInServer) -> None:
        """Each request is recorded with method, path, JSON body and headers."""
        await chat(api, temperature=0.5, extra_headers={"x-trace": "t-1"})
        (recorded,) = server.requests
        assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
        assert recorded.body == {"model": MODEL, "messages": MESSAGES, "temperature": 0.5}
        assert recorded.headers["authorization"] == f"Bearer {server.api_key}"
        assert recorded.headers["x-trace"] == "t-1"
        assert recorded.behaviour == Behaviour()

    def test_reset(self, server: StandInServer) -> None:
        """``reset`` restores the constructor's defaults and forgets queue and requests."""
        server.configure(reply="changed")
        server.enqueue(status=500)
        server.reset()
        assert server.behaviour == Behaviour()
        client = OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
        with client:
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert server.requests[0].behaviour == Behaviour()

    def test_wait_for_requests_times_out(self, server: StandInServer) -> None:
        """Waiting for requests that never come raises ``TimeoutError``."""
        with pytest.raises(TimeoutError, match="0 of 1"):
            server.wait_for_requests(1, timeout=0.01)

    def test_behaviour_validation(self) -> None:
        """Unknown fields and impossible values are refused where they are written."""
        with pytest.raises(TypeError, match="dealy"):
            Behaviour().changed(dealy=1)
        with pytest.raises(ValueError, match="chunks"):
            Behaviour(chunks=0)
        with pytest.raises(ValueError, match="status"):
            StandInServer(status=302)
        with pytest.raises(TypeError, match="dealy"):
            behaviour_headers(dealy=1)
        with pytest.raises(ValueError, match="ASCII"):
            behaviour_headers(reply="Grüße")

    def test_behaviour_headers(self) -> None:
        """Header values are the text forms of the field values."""
        headers = behaviour_headers(chunk_delay=0.5, hang=True, disconnect_after=None)
        assert headers == {
            "x-standin-chunk-delay": "0.5",
            "x-standin-hang": "true",
            "x-standin-disconnect-after": "none",
        }


class TestLifecycle:
    def test_close_joins_threads_and_closes_sockets(self) -> None:
        """Closing with a kept-alive client connection ends every thread and socket."""
        threads, descriptors = set(threading.enumerate()), _open_descriptors()
        with StandInServer() as server:
            client = OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
        client.close()
        assert set(threading.enumerate()) <= threads
        assert _open_descriptors() == descriptors

    def test_close_ends_hanging_requests(self) -> None:
        """Closing wakes a request that hangs, so close never waits on a client."""
        with (
            StandInServer(hang=True) as server,
            socket.create_connection(("127.0.0.1", server.port)) as connection,
        ):
            body = b"{}"
            connection.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            server.wait_for_requests(1)
            server.close()
            assert connection.recv(1024) == b""

    async def test_client_leaving_mid_stream_is_quiet(
        self,
        api: Api,
        server: StandInServer,
        capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A client that closes a stream early causes no traceback or error log."""
        caplog.set_level(logging.DEBUG, logger="runlog_openai")
        server.configure(chunks=1000, chunk_delay=0.001)
        async with api.opened(await chat(api, stream=True)) as stream:
            await api.first(stream)
        server.close()  # joins the connection thread, so anything it printed is printed
        assert capfd.readouterr().err == ""
        assert caplog.records == []

    def test_lifecycle_misuse(self) -> None:
        """A server that is not running has no port; starting twice is an error."""
        server = StandInServer()
        with pytest.raises(RuntimeError, match="not running"):
            server.base_url  # noqa: B018
        with server, pytest.raises(RuntimeError, match="already running"):
            server.start()
        server.close()

    def test_servers_get_distinct_ports(self) -> None:
        """Port 0 lets many servers run side by side."""
        with StandInServer() as one, StandInServer() as two:
            assert one.base_url != two.base_url
            assert one.base_url.endswith("/v1")


class TestCommandLine:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    def test_serves_until_signalled(self, signum: int) -> None:
        """``python -m runlog_openai.standin`` prints its URL, serves, and exits cleanly."""
        command = [sys.executable, "-m", "runlog_openai.standin", "--reply", "From the CLI"]
        command += ["--chunks", "3", "--input-tokens", "9"]
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stdout is not None
            base_url = proc.stdout.readline().strip()
            with OpenAI(base_url=base_url, api_key="any", max_retries=0) as client:
                completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
                chunks = list(
                    client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
                )
            proc.send_signal(signum)
            _, err = proc.communicate(timeout=30)
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        assert completion.choices[0].message.content == "From the CLI"
        assert completion.usage is not None and completion.usage.prompt_tokens == 9
        assert len(chunks) == 5
        assert (proc.returncode, err) == (0, "")

    def test_bad_option(self) -> None:
        """A value of the wrong type is a usage error naming the option."""
        command = [sys.executable, "-m", "runlog_openai.standin", "--delay", "soon"]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2
        assert "--delay" in proc.stderr


def _open_descriptors() -> list[str]:
    """This process's open file descriptors (Linux), to show that none leak."""
    return sorted(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else []
