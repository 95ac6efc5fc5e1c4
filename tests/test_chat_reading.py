"""The chat reader's quick path over a batch of streamed chunks equals the careful one.

``_chat_items`` reads a batch with C passes (``attrgetter``) and hands anything unusual
to ``_chat_items_careful``, which reads field by field.  Whatever the batch holds — the
client's own models, odd field types, missing fields, plain objects, ``None`` — both
must leave the same :class:`Reply` and say the same about content, and neither may
raise.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from openai._models import construct_type
from openai.types.chat import ChatCompletionChunk

from runlog_openai._endpoints import _chat_items, _chat_items_careful
from runlog_providers import Reply
from runlog_providers._reply import COUNTS

_text = st.one_of(st.none(), st.just(""), st.text(max_size=4), st.integers(), st.just(["x"]))
_reason = st.one_of(st.none(), st.just(""), st.sampled_from(["stop", "length"]), st.integers())
_usage = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "prompt_tokens": st.integers(-1, 50),
            "completion_tokens": st.integers(-1, 50),
            "total_tokens": st.integers(0, 100),
        }
    ),
)
_tool_calls = st.one_of(
    st.none(),
    st.just([{"index": 0, "function": {"name": "f", "arguments": "{}"}}]),
)


@st.composite
def _choice(draw: st.DrawFn) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    for key, values in (("content", _text), ("refusal", _text), ("tool_calls", _tool_calls)):
        if draw(st.booleans()):
            delta[key] = draw(values)
    choice: dict[str, Any] = {"index": 0, "finish_reason": draw(_reason)}
    if draw(st.integers(0, 9)):  # now and then a choice without its delta
        choice["delta"] = delta
    return choice


@st.composite
def _chunk(draw: st.DrawFn) -> Any:
    data: dict[str, Any] = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": draw(st.one_of(st.none(), st.just(""), st.just("gpt-4o-mini"), st.integers())),
        "choices": draw(st.lists(_choice(), max_size=2)),
    }
    if draw(st.booleans()):
        data["usage"] = draw(_usage)
    shape = draw(st.integers(0, 9))
    if shape == 0:  # a plain object, with or without the fields
        return SimpleNamespace(**{k: v for k, v in data.items() if draw(st.booleans())})
    if shape == 1:
        return draw(st.sampled_from([None, {"choices": []}, SimpleNamespace(choices=None)]))
    return construct_type(type_=ChatCompletionChunk, value=data)  # as the client builds chunks


def _state(reply: Reply) -> tuple[Any, ...]:
    return (
        *(getattr(reply, name) for name in COUNTS),
        reply.cost_usd,
        reply.finish_reason,
        reply.response_model,
        list(reply.text),
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_chunk(), max_size=16), max_size=3))
def test_the_quick_reader_equals_the_careful_one(batches: list[list[Any]]) -> None:
    quick, careful = Reply(), Reply()
    for batch in batches:
        assert _chat_items(quick, batch) == _chat_items_careful(careful, batch)
        assert _state(quick) == _state(careful)


def test_an_ordinary_batch_takes_the_quick_path(monkeypatch: Any) -> None:
    """The chunks the client makes are read without the careful reader."""
    import runlog_openai._endpoints as endpoints

    def careful(reply: Reply, chunks: Any) -> bool:
        raise AssertionError("an ordinary batch went the careful way")

    monkeypatch.setattr(endpoints, "_chat_items_careful", careful)
    chunks = [
        construct_type(
            type_=ChatCompletionChunk,
            value={
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": reason}],
            },
        )
        for text, reason in (("ab", None), ("cd", None), ("ef", None), (None, "stop"))
    ]
    reply = Reply()
    assert endpoints._chat_items(reply, chunks)
    assert reply.text == ["ab", "cd", "ef"]
    assert (reply.finish_reason, reply.response_model) == ("stop", "gpt-4o-mini")
