"""One OpenAI call, from request to last byte: the one core every entry point drives.

A :class:`Tracker` owns an ``llm_call`` and learns about the call from four places,
whatever the entry point, client flavour or response variant:

1. :meth:`~Tracker.parsed` — the post-parser the request carries.  openai turns every
   reply into the user's object in ``parse()`` and applies ``options.post_parser`` to
   it: the plain ``create``/``parse`` calls, ``with_raw_response.parse()`` and
   ``with_streaming_response.parse()``, models and streams alike (every 1.x-3.x
   release).  A model is read at once; a stream is instrumented in place.
2. :meth:`~Tracker.returned` — what ``request()`` returned: the request id, and raw
   responses, whose body is read later (their HTTP response gets closing tracked).
3. :meth:`~Tracker.take` — each streamed item; :meth:`~Tracker.end` when the stream
   ends, is closed or is abandoned.
4. :meth:`~Tracker.failed` — the exception the request or the stream raised.

The call ends exactly once, whichever comes first.  No method raises into the user's
code for a fault of ours: faults are reported through runlog (and raise under its
tests), and the user's object is passed on unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from openai import AsyncStream, Stream

from ._endpoints import Endpoint, Reply, is_usage_chunk
from ._report import report
from ._streams import instrument, track

if TYPE_CHECKING:
    from runlog import LLMCall


class Tracker:
    """The state of one instrumented call (see the module docstring)."""

    __slots__ = (
        "_ended",
        "_first",
        "_parsed",
        "_raw",
        "_seen",
        "call",
        "capture",
        "context",
        "doomed",
        "endpoint",
        "finalizer",
        "hide_usage",
        "reading",
        "reply",
        "request_id",
        "stream",
        "streaming",
    )

    def __init__(
        self, call: LLMCall, endpoint: Endpoint, *, stream: bool, capture: bool, hide_usage: bool
    ) -> None:
        self.call = call
        self.endpoint = endpoint
        self.stream = stream
        """The request asked for a stream."""
        self.capture = capture
        self.hide_usage = hide_usage
        """We added ``include_usage``: hide the usage chunk, and the ``usage: null`` it adds."""
        self.reply = Reply(keep_text=capture)
        self.reading = False
        """Inside the stream's own ``next()``, which closes the response at the end."""
        self.doomed = False
        """The response was garbage-collected: the reaper ends the call."""
        self.streaming = False
        """A stream object was instrumented: it ends the call."""
        self.request_id: str | None = None
        self.context: contextvars.Context | None = None
        self.finalizer: weakref.finalize[Any, Any] | None = None
        self._parsed = False
        self._raw = False
        self._seen = False
        """We saw the reply (a body, or a stream's items): what it lacks, it did not carry."""
        self._first = False
        self._ended = False

    # -- the request ---------------------------------------------------------------
    def post_parser(self, original: object) -> Callable[[Any], Any]:
        """A post-parser that runs the request's own (if any), then :meth:`parsed`."""

        def post_parser(parsed: Any) -> Any:
            if callable(original):
                try:
                    parsed = original(parsed)
                except Exception as exc:  # e.g. LengthFinishReasonError from .parse()
                    self.refused(parsed, exc)
                    raise
            return self.parsed(parsed)

        return post_parser

    def refused(self, reply: Any, exc: Exception) -> None:
        """The request's own post-parser refused ``reply``: fail with its usage known."""
        try:
            self._seen = self.endpoint.result(self.reply, reply)
            self._record()
        except Exception as fault:
            report("reading a refused reply", fault)
        self.failed(exc)

    def parsed(self, obj: Any) -> Any:
        """See the parsed reply: read a model, instrument a stream; return ``obj``."""
        if self._parsed or self._ended:  # parse(to=...) again, or the call already ended
            return obj
        self._parsed = True
        try:
            if _is_stream(obj):
                self._seen = self.streaming = True
                self._note_request_id(obj)
                instrument(obj, self)
            else:
                self._seen = self.endpoint.result(self.reply, obj)
                if self._raw:  # parsed by the user after request() returned
                    self.end()
        except Exception as exc:
            report("reading a reply", exc)
        return obj

    def returned(self, result: Any) -> Any:
        """See what ``request()`` returned; end the call unless its body comes later."""
        try:
            self._returned(result)
        except Exception as exc:
            report("reading a response", exc)
        return result

    def _returned(self, result: Any) -> None:
        self._note_request_id(result)
        if self._parsed:
            if not self.streaming:
                self.end()
            return
        response = getattr(result, "http_response", None)
        if response is None:  # a bare HTTP response, or a shape we do not know
            self.end()
            return
        self._raw = True
        if getattr(response, "is_closed", False) and not self.stream:
            self._parse_read_body(result, response)
            self.end()
            return
        result.http_response = track(response, self)

    def _parse_read_body(self, result: Any, response: Any) -> None:
        """``with_raw_response``: the body is all there; parse it now (parse() caches it)."""
        if not inspect.iscoroutinefunction(getattr(result, "parse", None)):
            with contextlib.suppress(Exception):  # the user's own parse() raises it again
                result.parse()
        if not self._parsed:
            self._read_json(response)

    def _read_json(self, response: Any) -> None:
        """Read a body the user read without parse(), if it was JSON."""
        body = _json(response)
        if body is not None:
            self._seen = self.endpoint.result(self.reply, body)

    def failed(self, exc: BaseException) -> None:
        """The request or the stream raised ``exc``: log ``llm_call.failed``."""
        if self._ended:
            return
        self._ended = True
        try:
            self._detach()
            request_id = getattr(exc, "request_id", None) or self.request_id
            fields = {"request_id": request_id} if isinstance(request_id, str) else {}
            self.call.fail(exc, **fields)
        except Exception as fault:
            report("logging a failed call", fault)

    # -- streams -------------------------------------------------------------------
    def take(self, item: Any) -> bool:
        """Read one streamed item; False to hide it (the usage chunk we asked for)."""
        try:
            if self.endpoint.item(self.reply, item) and not self._first:
                self._first = True
                self.call.first_token()
            if self.hide_usage:
                if is_usage_chunk(item):
                    return False
                _forget_null_usage(item)
        except Exception as exc:
            report("reading a streamed item", exc)
        return True

    def closing(self, response: Any) -> None:
        """The HTTP response is being closed: the call ends, unless the stream ends it."""
        if self.reading or self._ended or self.doomed:
            return
        try:
            if not self.stream and not self._parsed:  # a raw body read without parse()
                self._read_json(response)
        except Exception as exc:
            report("reading a closed response", exc)
        self.end("closed")

    def abandon(self) -> None:
        """The stream was garbage-collected: end the call in the request's context."""
        if self.context is None:
            self.end("abandoned")
        else:
            self.context.run(self.end, "abandoned")

    # -- the one end ---------------------------------------------------------------
    def end(self, how: str | None = None) -> None:
        """Log ``llm_call.completed`` with what was received; ``how`` a stream ended."""
        if self._ended:
            return
        self._ended = True
        try:
            self._detach()
            self._record()
            fields: dict[str, Any] = {}
            if self.stream and how is not None:
                fields["stream_end"] = how
            if self.capture and self.endpoint.has_output:
                fields["output_content"] = "".join(self.reply.text)
            self.call.finish(**fields)
        except Exception as exc:
            report("logging a completed call", exc)

    def _record(self) -> None:
        """Tell the call what the reply said; unseen output stays unknown, not zero."""
        reply = self.reply
        count_text = reply.output_tokens is None and self.endpoint.has_output and self._seen
        self.call.record(
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            text="".join(reply.text) if count_text else None,
            finish_reason=reply.finish_reason,
            response_model=reply.response_model,
            request_id=self.request_id,
        )

    def _detach(self) -> None:
        if self.finalizer is not None:
            self.finalizer.detach()

    def _note_request_id(self, obj: Any) -> None:
        if self.request_id is None:
            self.request_id = _request_id(obj)


def _is_stream(obj: object) -> bool:
    return isinstance(obj, (Stream, AsyncStream))


def _request_id(obj: object) -> str | None:
    """The ``x-request-id`` of a parsed model, a raw response or a stream."""
    found = getattr(obj, "_request_id", None)
    if isinstance(found, str):
        return found
    response = getattr(obj, "http_response", None) or getattr(obj, "response", None)
    get = getattr(getattr(response, "headers", None), "get", None)
    found = get("x-request-id") if callable(get) else None
    return found if isinstance(found, str) else None


def _json(response: Any) -> Any:
    """The JSON of a response body that has been read; ``None`` otherwise."""
    try:
        return response.json()
    except Exception:  # not read, not JSON: nothing to learn
        return None


def _forget_null_usage(chunk: Any) -> None:
    """Undo the ``"usage": null`` that ``include_usage`` adds to every chunk.

    Without it the key is absent, so ``model_fields_set`` (and ``to_dict()``,
    ``model_dump(exclude_unset=True)``) must not list it either.
    """
    if getattr(chunk, "usage", 0) is None:
        fields = getattr(chunk, "__pydantic_fields_set__", None)
        if fields is None:
            fields = getattr(chunk, "__fields_set__", None)  # pydantic 1
        if isinstance(fields, set):
            fields.discard("usage")


__all__ = ["Tracker"]
