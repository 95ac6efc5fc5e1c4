"""``llm_call()``: one language-model call as one ``llm_call.completed`` / ``.failed`` event.

An :class:`LLMCall` is a :class:`~runlog._span.Span` that logs only its end, measures
``latency_ms`` on the monotonic clock, and settles its token numbers honestly when it
ends:

* numbers the provider reported (``record(input_tokens=..., output_tokens=...)``) are
  used as they are: ``token_source: "usage"``;
* a missing number is counted with tiktoken — input from ``messages``/``prompt``,
  output from the text passed to ``record(text=...)`` — and ``token_source`` becomes
  ``"tiktoken"`` (with ``counted`` naming the counted fields when the two are mixed);
* a number that is needed but cannot be counted (no tokenizer) stays ``null`` and
  ``token_source`` is ``"unavailable"``.

Latency is frozen before any counting, so tokenizing never inflates it, and counting
runs off the caller's thread (:meth:`~runlog._span.Span.end_later`): by default the
counts come from a helper process (:mod:`runlog._counter`), each one a round trip to
it, and the first one starts the helper; counted in this process, the first count
loads an encoding.  Neither must land in the user's code or on an event loop.  The
event keeps the call's timestamp; ``flush()`` and exit wait for it.  The same object
is a context manager (``with``/``async with``) and a handle that stream wrappers end
by hand (``finish``/``fail``), whichever comes first winning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from . import _prices, _tokens
from ._errors import report_internal_error
from ._span import EventNames, Span, check_fields

INLINE_COUNT_CHARS = 8_000
"""Texts up to this many characters are counted on the caller's thread once the encoding
is loaded (tiktoken reads about 10 characters a microsecond here); longer ones, and every
count before the encoding is loaded, are counted in the background."""
_BREAKDOWN = ("cached_input_tokens", "cache_write_input_tokens", "reasoning_tokens")
"""Token numbers beside input/output, logged as the provider reports them (see ``record``)."""
_NAMES = EventNames(None, "llm_call.completed", "llm_call.failed", duration_key="latency_ms")
_Count = tuple[int | None, str | None]
"""A token number and where it came from: ``usage``, ``tiktoken``, ``unavailable``."""
_Plan = tuple[bool, bool, int, list[str], int]
"""What is left to count (see ``LLMCall._to_count``)."""
_OWN = frozenset(
    {
        "model_name",
        "input_tokens",
        "output_tokens",
        "token_source",
        "operation",
        "stream",
        "time_to_first_token_ms",
        "latency_ms",
        "status_code",
        "counted",
        "provider",
        "cost_usd",
        "cost_source",
        "cost_estimated",
        *_BREAKDOWN,
    }
)


class LLMCall:
    """One call to a language model, from request to last byte (see the module docstring)."""

    __slots__ = (
        "_breakdown",
        "_cost_usd",
        "_input_tokens",
        "_messages",
        "_output_tokens",
        "_plan",
        "_prompt",
        "_provider",
        "_span",
        "_text",
        "_token",
        "_ttft_ms",
        "model",
    )

    def __init__(
        self,
        model: str,
        *,
        messages: Iterable[Mapping[str, Any]] | None = None,
        prompt: _tokens.Prompt = None,
        operation: str = "chat",
        stream: bool = False,
        provider: str | None = None,
        **fields: Any,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise TypeError(f"runlog.llm_call() needs the model name as a str, got {model!r}")
        if not isinstance(operation, str) or not operation:
            raise TypeError(f"runlog.llm_call(operation=...) must be a str, got {operation!r}")
        if provider is not None and (not isinstance(provider, str) or not provider):
            raise TypeError(f"runlog.llm_call(provider=...) must be a str, got {provider!r}")
        if fields:
            _check_user_fields(fields, "runlog.llm_call()")
        self.model = model
        self._messages = list(messages) if messages is not None else None
        self._prompt = prompt
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        self._breakdown: dict[str, int] = {}
        self._cost_usd: float | None = None
        self._provider = provider
        self._text: list[str] | None = None
        self._ttft_ms: float | None = None
        self._token: Any = None
        self._plan: tuple[bool, _Plan | None, _tokens.TokenCounter | None] | None = None
        """What :meth:`_announce` found to count (for ``outputs``) and the tokenizer it
        told, for the count to reuse."""
        base: dict[str, Any] = {"model_name": model, "operation": operation, "stream": bool(stream)}
        if provider is not None:
            base["provider"] = provider
        if fields:
            base.update(fields)
        self._span = Span(_NAMES, base)

    # -- what the caller tells us ----------------------------------------------------
    def record(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_input_tokens: int | None = None,
        cache_write_input_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        text: str | None = None,
        finish_reason: str | None = None,
        response_model: str | None = None,
        request_id: str | None = None,
        cost_usd: float | None = None,
        **fields: Any,
    ) -> None:
        """Record what the response said; ``text`` is appended (call it once per chunk).

        The breakdown is logged as the provider defines it: OpenAI's
        ``cached_input_tokens`` are part of ``input_tokens`` and its
        ``reasoning_tokens`` part of ``output_tokens``; Anthropic's cache reads
        (``cached_input_tokens``) and writes (``cache_write_input_tokens``) come in
        addition to ``input_tokens``.  Cost follows the same rule (``provider=``).
        ``cost_usd`` is a price the provider reported for the call (``cost_source:
        "provider"``); without it runlog prices the tokens with ``genai-prices``.
        """
        if input_tokens is not None:
            self._input_tokens = _count_arg("input_tokens", input_tokens)
        if output_tokens is not None:
            self._output_tokens = _count_arg("output_tokens", output_tokens)
        if cached_input_tokens is not None:
            self._breakdown["cached_input_tokens"] = _count_arg(
                "cached_input_tokens", cached_input_tokens
            )
        if cache_write_input_tokens is not None:
            self._breakdown["cache_write_input_tokens"] = _count_arg(
                "cache_write_input_tokens", cache_write_input_tokens
            )
        if reasoning_tokens is not None:
            self._breakdown["reasoning_tokens"] = _count_arg("reasoning_tokens", reasoning_tokens)
        if cost_usd is not None:
            self._cost_usd = _cost_arg(cost_usd)
        if text is not None:
            if self._text is None:
                self._text = []
            self._text.append(text)
        own = self._span.fields
        if finish_reason is not None:
            own["finish_reason"] = finish_reason
        if response_model is not None:
            own["response_model"] = response_model
        if request_id is not None:
            own["request_id"] = request_id
        if fields:
            self.set(**fields)

    def first_token(self) -> None:
        """Mark the arrival of the first streamed token (the first call wins)."""
        if self._ttft_ms is None:
            self._ttft_ms = self._span.elapsed_ms()

    def set(self, **fields: Any) -> None:
        """Add fields to the event."""
        _check_user_fields(fields, "LLMCall.set()")
        self._span.fields.update(fields)

    @property
    def done(self) -> bool:
        """Whether the event has been logged."""
        return self._span.done

    @property
    def span_id(self) -> int:
        """The call's span id (events logged inside its ``with`` block name it as parent)."""
        return self._span.span_id

    # -- ending ------------------------------------------------------------------------
    def finish(self, **fields: Any) -> bool:
        """Log ``llm_call.completed`` now; False if the call had already ended."""
        return self._end(None, fields)

    def fail(self, exc: BaseException, **fields: Any) -> bool:
        """Log ``llm_call.failed`` for ``exc`` now; False if the call had already ended."""
        return self._end(exc, fields)

    def _end(self, exc: BaseException | None, fields: Mapping[str, Any]) -> bool:
        if self._span.done:
            return False
        self._span.stop()  # latency ends here, before any token counting
        if self._slow_to_count(exc):  # tiktoken's work, on the background thread
            return self._span.end_later(
                exc, lambda: self._outcome(exc, fields), lambda: self._announce(exc is None)
            )
        # Pricing, the token fields and the JSON are made by the writer, which writes
        # the event in its place: the caller's thread pays for none of it.  The price
        # table is imported here, though, the first time: an import on runlog's thread
        # would leave a child forked meanwhile with a module lock no thread of it holds.
        _prices.load()
        return self._span.end_deferred(exc, lambda: self._outcome(exc, fields))

    def _slow_to_count(self, exc: BaseException | None) -> bool:
        """Whether counting the missing token numbers could take long on this thread.

        It could whenever the helper process counts (a round trip; the first one starts
        the helper), the first time in this process (the encoding loads: about 0.3 s)
        and for long texts (past :data:`INLINE_COUNT_CHARS`, about 1 ms of tiktoken); a
        short reply counted in this process with the encoding loaded is counted here
        (tens of microseconds) and keeps its place in the table's order.  Sync mode
        counts on this thread all the same (see :func:`runlog._log.emit_later`).
        """
        inputs = self._input_tokens is None and (
            self._messages is not None or self._prompt is not None
        )
        outputs = exc is None and self._output_tokens is None and self._text is not None
        if not (inputs or outputs):
            return False
        if self._prompt is not None or not _tokens.counts_inline(self.model):
            return True
        pieces = self._text if outputs and self._text is not None else ()
        return _tokens.text_size(self._messages if inputs else None, pieces) > INLINE_COUNT_CHARS

    def _outcome(self, exc: BaseException | None, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The fields the call's end adds: tokens (counted if need be), cost, status."""
        outcome = dict(fields)
        if self._ttft_ms is not None:
            outcome["time_to_first_token_ms"] = self._ttft_ms
        if exc is None:
            tokens = self._token_fields()
            outcome.update(tokens)
            outcome.update(self._breakdown)
            outcome.update(self._cost_fields(tokens))
        else:
            outcome["input_tokens"] = self._input_count()[0]
            status = getattr(exc, "status_code", None)
            outcome["status_code"] = status if isinstance(status, int) else None
        return outcome

    # -- tokens ------------------------------------------------------------------------
    def _input_count(self) -> tuple[int | None, str | None]:
        """The input tokens and where they came from (None: not needed or not countable)."""
        return self._counts(outputs=False)[0]

    def _counts(self, *, outputs: bool) -> tuple[_Count, _Count]:
        """Input and output tokens with their sources, counting what usage lacks in one
        go (with the helper process: one round trip for both)."""
        inputs: _Count = (self._input_tokens, "usage")
        if self._input_tokens is None:
            inputs = (None, None)
        output: _Count = (self._output_tokens, "usage")
        if self._output_tokens is None or not outputs:
            output = (None, None)
        planned = self._plan
        tokenizer = None
        if planned is not None and planned[0] == outputs:
            _, plan, tokenizer = planned
        else:
            plan = self._to_count(outputs)
        if plan is None:
            return inputs, output
        count_in, count_out, fixed, texts, recurring = plan
        unavailable: _Count = (None, "unavailable")
        if tokenizer is None:
            tokenizer = _tokens.tokenizer_for(self.model)
        counts = None if tokenizer is None else tokenizer.count_texts(texts, recurring=recurring)
        if count_in:
            inputs = (
                unavailable if counts is None else (fixed + sum(counts[:recurring]), "tiktoken")
            )
        if count_out:
            output = unavailable if counts is None else (counts[recurring], "tiktoken")
        return inputs, output

    def _to_count(self, outputs: bool) -> _Plan | None:
        """What is left to count: (inputs?, outputs?, OpenAI's fixed input tokens, the
        texts — the input's first, ``recurring`` of them, then the output's); ``None``:
        nothing."""
        count_in = self._input_tokens is None and (
            self._messages is not None or self._prompt is not None
        )
        count_out = outputs and self._output_tokens is None and self._text is not None
        if not (count_in or count_out):
            return None
        fixed, texts = 0, list[str]()
        if count_in and self._messages is not None:
            fixed, texts = _tokens.message_parts(self._messages)
        elif count_in:
            fixed, texts = _tokens.prompt_parts(self._prompt)
        recurring = len(texts)
        if count_out and self._text is not None:
            texts.append("".join(self._text))
        return count_in, count_out, fixed, texts, recurring

    def _announce(self, outputs: bool) -> None:
        """Tell the tokenizer what this call will count, so that the calls completed
        together are counted together (one round trip to the helper for all of them)."""
        plan = self._to_count(outputs)
        self._plan = (outputs, plan, None)  # the count that follows on this thread reuses it
        if plan is None:
            return
        *_, texts, recurring = plan
        tokenizer = _tokens.tokenizer_for(self.model)
        if tokenizer is not None:
            tokenizer.want(texts[:recurring], texts[recurring:])
            self._plan = (outputs, plan, tokenizer)  # the one told: it holds the batch

    def _token_fields(self) -> dict[str, Any]:
        (inp, in_src), (out, out_src) = self._counts(outputs=True)
        sources = {in_src, out_src} - {None}
        fields: dict[str, Any] = {"input_tokens": inp, "output_tokens": out}
        if "unavailable" in sources:
            fields["token_source"] = "unavailable"
        elif "tiktoken" in sources:
            fields["token_source"] = "tiktoken"
            if "usage" in sources:  # mixed: say which number was counted
                fields["counted"] = ["input_tokens" if in_src == "tiktoken" else "output_tokens"]
        else:
            fields["token_source"] = "usage" if sources else "unavailable"
        return fields

    def _cost_fields(self, tokens: dict[str, Any]) -> dict[str, Any]:
        """What the call cost (see :mod:`runlog._prices`); never raises."""
        if self._cost_usd is not None:
            return {"cost_usd": self._cost_usd, "cost_source": _prices.PROVIDER}
        try:
            counts = {**tokens, **self._breakdown}
            models = (self._span.fields.get("response_model"), self.model)
            estimated = tokens.get("token_source") == "tiktoken"
            return _prices.cost_fields(self._provider, models, counts, estimated)
        except Exception as exc:
            report_internal_error("pricing an LLM call", exc)
            return {"cost_usd": None, "cost_source": _prices.UNPRICED}

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> LLMCall:
        self._token = self._span.activate()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            self._span.deactivate(self._token)
            self._token = None
        if not self._span.done:
            self._end(exc, {})

    async def __aenter__(self) -> LLMCall:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        state = "done" if self.done else "open"
        return f"<runlog.LLMCall model={self.model!r} span_id={self.span_id} {state}>"


def _count_arg(name: str, value: object) -> int:
    if type(value) is int and value >= 0:  # the common case, in one test
        return value
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"LLMCall.record({name}=...) must be a non-negative int, got {value!r}")
    return value


def _cost_arg(value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        raise TypeError(f"LLMCall.record(cost_usd=...) must be a number >= 0, got {value!r}")
    return float(value)


def _check_user_fields(fields: Mapping[str, Any], where: str) -> None:
    check_fields(fields, where)
    clash = _OWN.intersection(fields)
    if clash:
        raise ValueError(
            f"{where}: {', '.join(sorted(clash))} is set by llm_call itself; "
            "use record() for token numbers, or another field name"
        )


def llm_call(
    model: str,
    *,
    messages: Iterable[Mapping[str, Any]] | None = None,
    prompt: _tokens.Prompt = None,
    operation: str = "chat",
    stream: bool = False,
    provider: str | None = None,
    **fields: Any,
) -> LLMCall:
    """Time one model call and log ``llm_call.completed`` (or ``.failed``) when it ends.

    ::

        with runlog.llm_call("gpt-4o-mini", messages=messages) as call:
            reply = client.complete(messages)
            call.record(input_tokens=reply.usage.input, output_tokens=reply.usage.output)

    Without usage numbers, ``call.record(text=reply_text)`` lets runlog count tokens
    with tiktoken (``token_source: "tiktoken"``).  For streams, call
    ``call.first_token()`` on the first chunk and ``call.record(text=delta)`` per chunk.
    """
    return LLMCall(
        model,
        messages=messages,
        prompt=prompt,
        operation=operation,
        stream=stream,
        provider=provider,
        **fields,
    )


__all__ = ["LLMCall", "llm_call"]
