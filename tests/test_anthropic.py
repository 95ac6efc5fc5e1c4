"""The Anthropic integration, driven by the real ``anthropic`` client over real HTTP.

Every test runs against the stand-in server's Messages API on 127.0.0.1, with
``Anthropic`` and ``AsyncAnthropic`` (the ``api`` fixture; one coroutine body serves
both).  The entry points (plain, ``stream=True``, the ``messages.stream()`` helper,
``with_raw_response`` plain and streamed, ``with_streaming_response``) form one matrix
with the outcomes (completed, closed early, abandoned, error, retried).  Tokens must
equal the stand-in's usage, and costs the figure computed by hand from the price
table's published prices for claude-haiku-4-5 (USD per million tokens: 1 input, 0.1
cache read, 1.25 cache write, 5 output).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest

import runlog
from runlog.testing import Capture, capture
from runlog_openai.standin import StandInServer
from runlog_providers import settle

from openai_api import Api
from support import collect_garbage, python

pytestmark = pytest.mark.anyio

MODEL = "claude-haiku-4-5"
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
REQUEST: dict[str, Any] = {"model": MODEL, "max_tokens": 256, "messages": MESSAGES}
INPUT, OUTPUT, CACHE_READ, CACHE_WRITE, THINKING = 21, 5, 100, 50, 3
M = 1e-6
COST = (INPUT * 1 + CACHE_READ * 0.1 + CACHE_WRITE * 1.25 + OUTPUT * 5) * M
"""What one call costs: 118.5e-6 USD."""
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


class AnthropicApi(Api):
    """The sync or async Anthropic client, with the shared helpers of ``Api``."""

    def __init__(self, flavour: str, server: StandInServer, max_retries: int = 0) -> None:
        self.flavour = flavour
        client_class, http_class = (
            (anthropic.Anthropic, anthropic.DefaultHttpxClient)
            if flavour == "sync"
            else (anthropic.AsyncAnthropic, anthropic.DefaultAsyncHttpxClient)
        )
        self.client: Any = client_class(
            base_url=server.anthropic_base_url,
            api_key="sk-ant-standin",
            max_retries=max_retries,
            http_client=http_class(verify=False),
        )


def dump(value: Any) -> Any:
    """A model as plain data, for comparing what the user received."""
    return value.to_dict() if hasattr(value, "to_dict") else value


# -- the entry points: each returns what the user received ------------------------------
Entry = Callable[[AnthropicApi, dict[str, Any]], Awaitable[Any]]


async def plain(api: AnthropicApi, kwargs: dict[str, Any]) -> Any:
    return dump(await api.get(api.client.messages.create(**kwargs)))


async def stream(api: AnthropicApi, kwargs: dict[str, Any]) -> Any:
    made = await api.get(api.client.messages.create(**kwargs, stream=True))
    return [dump(event) for event in await api.drain(made)]


async def helper(api: AnthropicApi, kwargs: dict[str, Any]) -> Any:
    async with api.opened(api.client.messages.stream(**kwargs)) as messages:
        texts = [text async for text in api.items(messages.text_stream)]
        final = await api.get(messages.get_final_message())
    return {"texts": texts, "final": dump(final)}


async def raw(api: AnthropicApi, kwargs: dict[str, Any]) -> Any:
    response = await api.get(api.client.messages.with_raw_response.create(**kwargs))
    assert response.headers["request-id"]
    return dump(await api.get(response.parse()))


async def raw_stream(api: AnthropicApi, kwargs: dict[str, Any]) -> Any:
    response = await api.get(api.client.messages.with_raw_response.create(**kwargs, stream=True))
    return [dump(event) for event in await api.drain(await api.get(response.parse()))]


async def streaming_response(api: AnthropicApi, kwargs: dict[str, Any]) -> Any:
    made = api.client.messages.with_streaming_response.create(**kwargs, stream=True)
    async with api.opened(made) as response:
        events = await api.drain(await api.get(response.parse()))
    return [dump(event) for event in events]


ENTRIES: dict[str, tuple[Entry, bool]] = {
    "plain": (plain, False),
    "stream": (stream, True),
    "helper": (helper, True),
    "raw": (raw, False),
    "raw_stream": (raw_stream, True),
    "streaming_response": (streaming_response, True),
}
STREAMS = [name for name, (_, streamed) in ENTRIES.items() if streamed]


async def open_stream(api: AnthropicApi, entry: str, kwargs: dict[str, Any]) -> Any:
    """A stream of ``entry``, opened and not yet read; the thing to close or drop."""
    if entry == "stream":
        return await api.get(api.client.messages.create(**kwargs, stream=True))
    if entry == "helper":
        manager = api.client.messages.stream(**kwargs)
        return await (manager.__aenter__() if api.flavour == "async" else _enter(manager))
    if entry == "raw_stream":
        raw = await api.get(api.client.messages.with_raw_response.create(**kwargs, stream=True))
        return await api.get(raw.parse())
    made = api.client.messages.with_streaming_response.create(**kwargs, stream=True)
    response = await (made.__aenter__() if api.flavour == "async" else _enter(made))
    return await api.get(response.parse())


async def _enter(manager: Any) -> Any:
    return manager.__enter__()


# -- fixtures ----------------------------------------------------------------------------
@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


def _standin(**changes: Any) -> StandInServer:
    return StandInServer(
        input_tokens=INPUT,
        output_tokens=OUTPUT,
        cached_input_tokens=CACHE_READ,
        cache_write_tokens=CACHE_WRITE,
        reasoning_tokens=THINKING,
        **changes,
    )


@pytest.fixture
def server() -> Iterator[StandInServer]:
    """A fresh stand-in per test, with cache reads and writes in its usage."""
    with _standin() as standin:
        yield standin


@pytest.fixture(params=["sync", "async"])
async def api(request: pytest.FixtureRequest, server: StandInServer) -> AsyncIterator[AnthropicApi]:
    """The sync and the async client against ``server``."""
    client = AnthropicApi(request.param, server)
    yield client
    await client.close()


@pytest.fixture
def events() -> Iterator[Capture]:
    """Instrumented through runlog's public door; the events logged during the test."""
    runlog.instrument_anthropic()
    assert settle(10)
    try:
        with capture() as captured:
            yield captured
    finally:
        runlog.uninstrument_anthropic()


def calls(events: Capture) -> list[tuple[str, dict[str, Any]]]:
    """Every ``llm_call`` event, after abandoned streams have ended."""
    assert settle(10)
    return [(e.event_type, e.payload) for e in events.all() if e.event_type.startswith("llm_call.")]


def the_call(events: Capture, event_type: str = "llm_call.completed") -> dict[str, Any]:
    """The one ``llm_call`` event logged, which must be of ``event_type``."""
    logged = calls(events)
    assert [kind for kind, _ in logged] == [event_type], logged
    return logged[0][1]


def assert_usage(logged: dict[str, Any], output: int = OUTPUT) -> None:
    """The stand-in's usage, under runlog's names, priced by hand."""
    assert logged["provider"] == "anthropic"
    assert (logged["input_tokens"], logged["output_tokens"]) == (INPUT, output)
    assert logged["cached_input_tokens"] == CACHE_READ
    assert logged["cache_write_input_tokens"] == CACHE_WRITE
    assert logged["token_source"] == "usage"


# -- the matrix --------------------------------------------------------------------------
class TestMatrix:
    @pytest.mark.parametrize("entry", ENTRIES)
    async def test_completed(
        self, api: AnthropicApi, server: StandInServer, events: Capture, entry: str
    ) -> None:
        """Each entry point logs one event: the stand-in's usage, its cost, the stop reason."""
        run, streamed = ENTRIES[entry]
        await run(api, dict(REQUEST))
        logged = the_call(events)
        assert_usage(logged)
        assert logged["cost_usd"] == pytest.approx(COST, abs=1e-9)
        assert logged["cost_source"] == f"genai-prices {__import__('genai_prices').__version__}"
        assert (logged["model_name"], logged["response_model"]) == (MODEL, MODEL)
        assert (logged["operation"], logged["stream"]) == ("chat", streamed)
        assert logged["finish_reason"] == "end_turn"
        assert logged["request_id"] == server.requests[-1].request_id
        assert logged["status"] == "ok" and logged["latency_ms"] > 0
        assert ("time_to_first_token_ms" in logged) is streamed
        assert logged.get("stream_end") == ("done" if streamed else None)
        if streamed:
            assert 0 < logged["time_to_first_token_ms"] <= logged["latency_ms"]

    @pytest.mark.parametrize("entry", ENTRIES)
    async def test_user_receives_the_same(self, api: AnthropicApi, entry: str) -> None:
        """What the user receives is identical with and without instrumentation."""
        run, _ = ENTRIES[entry]
        kwargs = {**REQUEST, "tools": [WEATHER_TOOL], "thinking": THINK}
        bare = await fresh(api, lambda client: run(client, dict(kwargs)))
        runlog.instrument_anthropic()
        try:
            with capture() as captured:
                seen = await fresh(api, lambda client: run(client, dict(kwargs)))
        finally:
            runlog.uninstrument_anthropic()
        assert seen == bare
        assert len(calls(captured)) == 1

    @pytest.mark.parametrize("entry", STREAMS)
    async def test_closed_early(self, api: AnthropicApi, events: Capture, entry: str) -> None:
        """A stream closed after its first text logs once: input and cache from message_start,
        the received output counted with tiktoken, stream_end closed."""
        opened = await open_stream(api, entry, dict(REQUEST))
        items = opened.text_stream if entry == "helper" else opened
        first = await api.first(items) if entry == "helper" else await read_until_text(api, opened)
        assert first
        await api.get(opened.close())
        logged = the_call(events)
        assert (logged["input_tokens"], logged["cached_input_tokens"]) == (INPUT, CACHE_READ)
        assert logged["cache_write_input_tokens"] == CACHE_WRITE
        assert (logged["token_source"], logged["counted"]) == ("tiktoken", ["output_tokens"])
        assert logged["stream_end"] == "closed" and "finish_reason" not in logged
        assert logged["cost_estimated"] is True
        out = logged["output_tokens"]
        expected = (INPUT * 1 + CACHE_READ * 0.1 + CACHE_WRITE * 1.25 + out * 5) * M
        assert logged["cost_usd"] == pytest.approx(expected, abs=1e-9)

    @pytest.mark.parametrize("entry", STREAMS)
    async def test_abandoned(self, api: AnthropicApi, events: Capture, entry: str) -> None:
        """A stream dropped half-read is logged once, when collected: stream_end abandoned."""
        opened = await open_stream(api, entry, dict(REQUEST))
        if entry == "helper":
            assert await api.first(opened.text_stream)
        else:
            await read_until_text(api, opened)
        del opened
        await collect_garbage()
        logged = the_call(events)
        assert logged["stream_end"] == "abandoned"
        assert (logged["input_tokens"], logged["cached_input_tokens"]) == (INPUT, CACHE_READ)

    @pytest.mark.parametrize("entry", ENTRIES)
    async def test_error(
        self, api: AnthropicApi, server: StandInServer, events: Capture, entry: str
    ) -> None:
        """An API error logs llm_call.failed with its status code, and the same error is raised."""
        run, _ = ENTRIES[entry]
        server.enqueue(status=529)
        with pytest.raises(anthropic.APIStatusError) as caught:
            await run(api, dict(REQUEST))
        logged = the_call(events, "llm_call.failed")
        assert (logged["status_code"], caught.value.status_code) == (529, 529)
        assert logged["error_type"] == type(caught.value).__qualname__
        assert logged["request_id"] == server.requests[-1].request_id
        assert "cost_usd" not in logged

    @pytest.mark.parametrize("entry", STREAMS)
    async def test_error_event_mid_stream(
        self, api: AnthropicApi, server: StandInServer, events: Capture, entry: str
    ) -> None:
        """An ``error`` event in the stream fails the call, once, with the client's error."""
        run, _ = ENTRIES[entry]
        server.configure(error_after=2)
        with pytest.raises(anthropic.APIStatusError) as caught:
            await run(api, dict(REQUEST))
        logged = the_call(events, "llm_call.failed")
        assert logged["error_type"] == type(caught.value).__qualname__
        assert "time_to_first_token_ms" in logged

    @pytest.mark.parametrize("entry", ENTRIES)
    async def test_retried(self, server: StandInServer, events: Capture, entry: str) -> None:
        """Retries the client makes are inside one call: one completed event, the last id."""
        run, _ = ENTRIES[entry]
        server.enqueue(status=529, retry_after=0.001)
        server.enqueue(status=429, retry_after=0.001)
        for flavour in ("sync", "async"):
            client = AnthropicApi(flavour, server, max_retries=2)
            try:
                await run(client, dict(REQUEST))
            finally:
                await client.close()
            if flavour == "sync":
                server.enqueue(status=500, retry_after=0.001)
        logged = [payload for _, payload in calls(events)]
        assert [p["status"] for p in logged] == ["ok", "ok"]
        assert len(server.requests) == 5
        assert logged[0]["request_id"] == server.requests[2].request_id
        assert logged[1]["request_id"] == server.requests[4].request_id
        for payload in logged:
            assert_usage(payload)


async def fresh(api: AnthropicApi, run: Callable[[AnthropicApi], Awaitable[Any]]) -> Any:
    """Run against a fresh stand-in (ids start at 1 each time) with a client like ``api``'s."""
    with _standin() as standin:
        client = AnthropicApi(api.flavour, standin)
        try:
            return await run(client)
        finally:
            await client.close()


async def read_until_text(api: AnthropicApi, opened: Any) -> str:
    """Read events with ``next()`` until a text delta arrives; its text."""
    while True:
        event = await api.next(opened)
        delta = getattr(event, "delta", None)
        if getattr(delta, "type", None) == "text_delta":
            return str(delta.text)


THINK = {"type": "enabled", "budget_tokens": 1024}


# -- what calls carry --------------------------------------------------------------------
class TestWhatIsLogged:
    @pytest.mark.parametrize("entry", ["plain", "stream", "helper"])
    async def test_tool_use_and_thinking(
        self, api: AnthropicApi, events: Capture, entry: str
    ) -> None:
        """A tool call ends with tool_use; thinking tokens are logged as reasoning_tokens."""
        run, _ = ENTRIES[entry]
        await run(api, {**REQUEST, "tools": [WEATHER_TOOL], "thinking": THINK})
        logged = the_call(events)
        assert_usage(logged)
        assert logged["finish_reason"] == "tool_use"
        assert logged["reasoning_tokens"] == THINKING  # part of output_tokens, same price
        assert logged["cost_usd"] == pytest.approx(COST, abs=1e-9)

    async def test_without_usage_tiktoken_counts(
        self, api: AnthropicApi, server: StandInServer, events: Capture
    ) -> None:
        """A reply without usage is counted with tiktoken and priced as an estimate."""
        server.configure(usage=False)
        await plain(api, dict(REQUEST))
        logged = the_call(events)
        assert logged["token_source"] == "tiktoken" and logged["cost_estimated"] is True
        assert "cached_input_tokens" not in logged

    async def test_unknown_model_is_unpriced(self, api: AnthropicApi, events: Capture) -> None:
        """A model the price table does not know: cost_usd null, unpriced."""
        await plain(api, {**REQUEST, "model": "claude-nonexistent-9"})
        logged = the_call(events)
        assert (logged["cost_usd"], logged["cost_source"]) == (None, "unpriced")

    async def test_count_tokens_is_left_alone(self, api: AnthropicApi, events: Capture) -> None:
        """messages.count_tokens generates nothing and is not logged."""
        counted = await api.get(api.client.messages.count_tokens(model=MODEL, messages=MESSAGES))
        assert counted.input_tokens == INPUT
        assert calls(events) == []

    async def test_beta_messages(self, api: AnthropicApi, events: Capture) -> None:
        """beta.messages.create is the same endpoint, logged the same way."""
        await api.get(api.client.beta.messages.create(**REQUEST))
        assert_usage(the_call(events))

    async def test_no_content_by_default_and_content_when_asked(
        self, api: AnthropicApi, server: StandInServer
    ) -> None:
        """Prompt and reply are logged only with capture_content; the key never."""
        runlog.instrument_anthropic()
        try:
            with capture() as quiet:
                await plain(api, dict(REQUEST))
            runlog.instrument_anthropic(capture_content=True)
            with capture() as loud:
                await stream(api, {**REQUEST, "system": "Be brief."})
        finally:
            runlog.uninstrument_anthropic()
        ((_, first),) = calls(quiet)
        assert MESSAGES[0]["content"] not in json.dumps(first)
        ((_, second),) = calls(loud)
        assert second["input_content"] == {"system": "Be brief.", "messages": MESSAGES}
        assert second["output_content"] == "Hello from the stand-in server."
        for logged in (first, second):
            assert "sk-ant-standin" not in json.dumps(logged)

    async def test_calls_belong_to_the_current_span(
        self, api: AnthropicApi, events: Capture
    ) -> None:
        """A call made inside a span names it as its parent."""
        with runlog.span("task") as task:
            await plain(api, dict(REQUEST))
        assert the_call(events)["parent_span_id"] == task.span_id


class TestTwoProviders:
    async def test_both_sdks_in_one_process_log_once_each(self) -> None:
        """An OpenAI and an Anthropic call in one process log one event each, each read and
        priced by its provider's rules (OpenAI's cached tokens are part of its input,
        Anthropic's cache reads and writes come in addition)."""
        usage = {"input_tokens": 1000, "output_tokens": 400, "cached_input_tokens": 600}
        with StandInServer(**usage, cache_write_tokens=50, reasoning_tokens=300) as standin:
            runlog.instrument_openai()
            runlog.instrument_anthropic()
            runlog.instrument_anthropic()
            claude, gpt = AnthropicApi("sync", standin), Api("sync", standin)
            try:
                with capture() as captured:
                    await plain(claude, dict(REQUEST))
                    gpt.client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            finally:
                runlog.uninstrument_openai()
                runlog.uninstrument_anthropic()
                await claude.close()
                await gpt.close()
        (_, by_claude), (_, by_gpt) = calls(captured)
        assert (by_claude["provider"], by_gpt["provider"]) == ("anthropic", "openai")
        assert by_claude["cost_usd"] == pytest.approx(
            (1000 * 1 + 600 * 0.1 + 50 * 1.25 + 400 * 5) * M, abs=1e-9
        )
        assert by_gpt["cost_usd"] == pytest.approx(
            (400 * 0.15 + 600 * 0.075 + 400 * 0.6) * M, abs=1e-9
        )
        assert by_gpt["reasoning_tokens"] == 300 and "cache_write_input_tokens" not in by_gpt

    async def test_openai_breakdown_and_cost(self) -> None:
        """OpenAI chat and Responses: cached and reasoning tokens, priced by hand (gpt-4o-mini:
        0.15 input, 0.075 cached input, 0.6 output per million)."""
        with StandInServer(input_tokens=1000, output_tokens=400, cached_input_tokens=600,
                           reasoning_tokens=300) as standin:  # fmt: skip
            gpt = Api("sync", standin)
            runlog.instrument_openai()
            try:
                with capture() as captured:
                    gpt.client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                    gpt.client.responses.create(model="gpt-4o-mini", input="Hi")
                    list(gpt.client.chat.completions.create(
                        model="gpt-4o-mini", messages=MESSAGES, stream=True,
                        stream_options={"include_usage": True},
                    ))  # fmt: skip
            finally:
                runlog.uninstrument_openai()
                await gpt.close()
        expected = (400 * 0.15 + 600 * 0.075 + 400 * 0.6) * M
        for _, logged in calls(captured):
            assert (logged["input_tokens"], logged["output_tokens"]) == (1000, 400)
            assert (logged["cached_input_tokens"], logged["reasoning_tokens"]) == (600, 300)
            assert logged["cost_usd"] == pytest.approx(expected, abs=1e-9)
            assert logged["provider"] == "openai"


class TestLifecycle:
    async def test_instrument_twice_and_uninstrument(self, api: AnthropicApi) -> None:
        """Instrumenting twice patches once; uninstrumenting restores the originals."""
        from anthropic._base_client import AsyncAPIClient, SyncAPIClient

        originals = SyncAPIClient.__dict__["request"], AsyncAPIClient.__dict__["request"]
        runlog.instrument_anthropic()
        runlog.instrument_anthropic()
        try:
            assert not hasattr(SyncAPIClient.__dict__["request"].__wrapped__, "_self_wrapper")
            with capture() as captured:
                await plain(api, dict(REQUEST))
            assert len(calls(captured)) == 1
        finally:
            runlog.uninstrument_anthropic()
            runlog.uninstrument_anthropic()
        assert (SyncAPIClient.__dict__["request"], AsyncAPIClient.__dict__["request"]) == originals
        with capture() as captured:
            await plain(api, dict(REQUEST))
        assert calls(captured) == []

    def test_without_anthropic_a_clear_import_error(self) -> None:
        """Without anthropic installed, instrumenting names the extra to install."""
        out = python(
            """
            import sys
            sys.modules["anthropic"] = None  # as if not installed
            import runlog
            try:
                runlog.instrument_anthropic()
            except ImportError as exc:
                print(exc)
            """
        ).stdout
        assert "pip install runlog[anthropic]" in out

    def test_importing_the_package_imports_no_anthropic(self) -> None:
        """``import runlog_anthropic`` is free; the library comes with instrument()."""
        out = python(
            """
            import json, sys
            import runlog_anthropic
            early = "anthropic" in sys.modules
            runlog_anthropic.instrument()
            print(json.dumps([early, "anthropic" in sys.modules]))
            """
        ).stdout
        assert json.loads(out.splitlines()[-1]) == [False, True]

    def test_stream_still_open_at_exit(self, tmp_path: Any) -> None:
        """A stream still open when the program exits is logged before process.exited."""
        from support import rows

        db = tmp_path / "exit.db"
        python(
            """
            import anthropic, runlog
            from runlog_openai.standin import StandInServer
            runlog.init(role="worker")
            runlog.instrument_anthropic()
            server = StandInServer(chunks=5).start()
            client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="k",
                                         max_retries=0)
            kept = client.messages.create(model="claude-haiku-4-5", max_tokens=9, stream=True,
                                          messages=[{"role": "user", "content": "x"}])
            next(kept), next(kept)
            """,
            db,
        )
        logged = [(r["event_type"], r["payload"].get("stream_end")) for r in rows(db)]
        assert logged[1:] == [("llm_call.completed", "abandoned"), ("process.exited", None)]


def test_openai_models_are_unaffected() -> None:
    """The OpenAI stand-in's own replies are unchanged by the new usage fields' defaults."""
    with StandInServer() as standin:
        client = openai.OpenAI(base_url=standin.base_url, api_key="k", max_retries=0)
        reply = client.chat.completions.create(model="m", messages=MESSAGES)
        client.close()
    assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == 0


def test_a_price_in_the_reply_is_the_providers() -> None:
    """An OpenAI-compatible reply whose usage carries ``cost`` is logged with that price."""
    with StandInServer(cost=0.0125) as standin:
        gpt = openai.OpenAI(base_url=standin.base_url, api_key="k", max_retries=0)
        runlog.instrument_openai()
        try:
            with capture() as captured:
                gpt.chat.completions.create(model="some/routed-model", messages=MESSAGES)
        finally:
            runlog.uninstrument_openai()
            gpt.close()
    ((_, logged),) = calls(captured)
    assert (logged["cost_usd"], logged["cost_source"]) == (0.0125, "provider")
