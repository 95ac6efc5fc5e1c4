"""One call, from request to last byte: the one core every entry point of every provider drives.

A :class:`Tracker` owns an ``llm_call`` and learns about the call from four places,
whatever the provider, entry point, client flavour or response variant:

1. :meth:`~Tracker.parsed` — the post-parser the request carries.  The clients turn
   every reply into the user's object in ``parse()`` and apply ``options.post_parser``
   to it: the plain calls, ``with_raw_response.parse()`` and
   ``with_streaming_response.parse()``, models and streams alike.  A model is read at
   once; a stream is instrumented in place.
2. :meth:`~Tracker.returned` — what ``request()`` returned: the request id, and raw
   responses, whose body is read later (their HTTP response gets closing tracked).
3. :meth:`~Tracker.take` — each streamed item up to the first token, then batches of
   them (:meth:`~Tracker.catch_up`); :meth:`~Tracker.end` when the stream ends, is
   closed or is abandoned.
4. :meth:`~Tracker.failed` — the exception the request or the stream raised.

Where the call is lies in one :class:`Phase`; the call ends exactly once, whichever
comes first.  No method raises into the user's code for a fault of ours: faults are
reported through runlog (and raise under its tests), and the user's object is passed
on unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._phase import Phase
from ._reply import Reply, get
from ._report import report
from ._streams import BATCH, instrument, track

if TYPE_CHECKING:
    from runlog import LLMCall

    from ._provider import Endpoint, Provider


_UNSET = object()
_UNPARSED = frozenset({Phase.SENT, Phase.RAW})
_QUIET = frozenset({Phase.DOOMED, Phase.ENDED})
"""Phases in which closing the response does not end the call."""


class Tracker:
    """The state of one instrumented call (see the module docstring)."""

    __slots__ = (
        "call",
        "capture",
        "context",
        "endpoint",
        "finalizers",
        "hide",
        "observer",
        "pending",
        "phase",
        "provider",
        "reply",
        "request_id",
        "stream",
    )

    def __init__(
        self,
        call: LLMCall,
        provider: Provider,
        endpoint: Endpoint,
        *,
        stream: bool,
        capture: bool,
        hide: Callable[[Any], bool] | None = None,
    ) -> None:
        self.call = call
        self.provider = provider
        self.endpoint = endpoint
        self.stream = stream
        """The request asked for a stream."""
        self.capture = capture
        self.hide = hide
        """Streamed items to hide from the caller (those a changed request added)."""
        self.reply = Reply(keep_text=capture)
        self.phase = Phase.SENT
        self.pending: list[Any] | None = None
        """Streamed items not read yet: a list once the first token has arrived."""
        self.request_id: str | None = None
        self.context: contextvars.Context | None = None
        self.finalizers: list[weakref.finalize[Any, Any]] = []
        """Of the stream (or a raw response): its collection ends the call."""
        self.observer: weakref.ref[Any] | None = None
        """The generator the stream draws its items from (weak: it holds the stream)."""

    def report(self, context: str, exc: BaseException, *, reraise: bool = True) -> None:
        """Report a fault of ours, naming the provider."""
        report(self.provider.label, context, exc, reraise=reraise)

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
            self.reply.seen = self.endpoint.result(self.reply, reply)
            self._record()
        except Exception as fault:
            self.report("reading a refused reply", fault)
        self.failed(exc)

    def parsed(self, obj: Any) -> Any:
        """See the parsed reply: read a model, instrument a stream; return ``obj``."""
        if self.phase not in _UNPARSED:  # parse(to=...) again, or the call already ended
            return obj
        raw = self.phase is Phase.RAW
        self.phase = Phase.PARSED
        try:
            if isinstance(obj, self.provider.stream_types):
                self.reply.seen = True
                self.phase = Phase.STREAMING
                if self.request_id is None:  # a stream's is in its response's headers
                    self.request_id = _header(
                        getattr(obj, "response", None), self.provider.request_id_header
                    )
                instrument(obj, self)
            else:
                self.reply.seen = self.endpoint.result(self.reply, obj)
                if raw:  # parsed by the user after request() returned
                    self.end()
        except Exception as exc:
            self.report("reading a reply", exc)
        return obj

    def returned(self, result: Any) -> Any:
        """See what ``request()`` returned; end the call unless its body comes later."""
        try:
            self._returned(result)
        except Exception as exc:
            self.report("reading a response", exc)
        return result

    def _returned(self, result: Any) -> None:
        if self.phase is not Phase.STREAMING:  # a stream's headers were read as it was parsed
            self._note_request_id(result)
        if self.phase is not Phase.SENT:
            if self.phase is Phase.PARSED:
                self.end()
            return
        response = getattr(result, "http_response", None)
        if response is None:  # a bare HTTP response, or a shape we do not know
            self.end()
            return
        if getattr(response, "is_closed", False) and not self.stream:
            self._parse_read_body(result, response)
            self.end()
            return
        self.phase = Phase.RAW
        result.http_response = track(response, self)

    def _parse_read_body(self, result: Any, response: Any) -> None:
        """``with_raw_response``: the body is all there; parse it now (parse() caches it)."""
        if not inspect.iscoroutinefunction(getattr(result, "parse", None)):
            with contextlib.suppress(Exception):  # the user's own parse() raises it again
                result.parse()
        if self.phase is Phase.SENT:
            self._read_json(response)

    def _read_json(self, response: Any) -> None:
        """Read a body the user read without parse(), if it was JSON."""
        body = _json(response)
        if body is not None:
            self.reply.seen = self.endpoint.result(self.reply, body)

    def failed(self, exc: BaseException) -> None:
        """The request or the stream raised ``exc``: log ``llm_call.failed``."""
        if self.phase is Phase.ENDED:
            return
        self.phase = Phase.ENDED
        try:
            self._detach()
            request_id = getattr(exc, "request_id", None) or self.request_id
            fields = {"request_id": request_id} if isinstance(request_id, str) else {}
            self.call.fail(exc, **fields)
        except Exception as fault:
            self.report("logging a failed call", fault)

    # -- streams -------------------------------------------------------------------
    def take(self, item: Any) -> bool:
        """Read one streamed item now; False to hide it (an item our request change added).

        From the first token on, the stream keeps items in :attr:`pending` instead,
        read by :meth:`catch_up` (the time of that first token is all that needs an
        item read as it arrives).
        """
        try:
            reply = self.reply
            if self.endpoint.items(reply, (item,)) and not reply.started:
                reply.started = True
                self.call.first_token()
                self.pending = []
        except Exception as exc:
            self.report("reading a streamed item", exc)
        return self.hide is None or self.shown(item)

    def seen(self, item: Any) -> bool:
        """One streamed item went by: read it now (:meth:`take`) before the first token,
        else keep it for the next batch; whether the caller sees it."""
        pending = self.pending
        if pending is None:
            return self.take(item)
        pending.append(item)
        if len(pending) == BATCH:
            self.catch_up()
        return self.hide is None or self.shown(item)

    def shown(self, item: Any) -> bool:
        """Whether the caller sees ``item`` (not one our request change added)."""
        try:
            return not (self.hide is not None and self.hide(item))
        except Exception as exc:
            self.report("reading a streamed item", exc)
            return True

    def catch_up(self) -> None:
        """Read the items kept in :attr:`pending`, in order."""
        pending = self.pending
        if not pending:
            return
        try:
            self.endpoint.items(self.reply, pending)
        except Exception as exc:
            self.report("reading a streamed item", exc)
        pending.clear()

    def closing(self, response: Any) -> None:
        """The HTTP response is being closed: the call ends, unless the stream ends it.

        A stream closes its response itself when it ends, inside its ``next()``: while
        our observer is running (``gi_running`` / ``ag_running``: it is on the stack,
        not suspended at a ``yield``), so the stream's end is left to the observer.
        """
        phase = self.phase
        if phase in _QUIET or self._iterating():
            return
        try:
            if not self.stream and phase is Phase.RAW:  # a raw body read without parse()
                self._read_json(response)
        except Exception as exc:
            self.report("reading a closed response", exc)
        self.end("closed")

    def doom(self) -> None:
        """The response was collected: from now on only the reaper ends the call."""
        if self.phase is not Phase.ENDED:
            self.phase = Phase.DOOMED

    def abandon(self) -> None:
        """The stream was garbage-collected: end the call in the request's context."""
        if self.context is None:
            self.end("abandoned")
        else:
            self.context.run(self.end, "abandoned")

    # -- the one end ---------------------------------------------------------------
    def end(self, how: str | None = None) -> None:
        """Log ``llm_call.completed`` with what was received; ``how`` a stream ended."""
        if self.phase is Phase.ENDED:
            return
        self.phase = Phase.ENDED
        try:
            self._detach()
            self.catch_up()
            self._record()
            fields: dict[str, Any] = {}
            if self.stream and how is not None:
                fields["stream_end"] = how
            if self.capture and self.endpoint.has_output:
                fields["output_content"] = "".join(self.reply.text)
            self.call.finish(**fields)
        except Exception as exc:
            self.report("logging a completed call", exc)

    def _record(self) -> None:
        """Tell the call what the reply said; unseen output stays unknown, not zero."""
        reply = self.reply
        count_text = reply.output_tokens is None and self.endpoint.has_output and reply.seen
        self.call.record(
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            cached_input_tokens=reply.cached_input_tokens,
            cache_write_input_tokens=reply.cache_write_input_tokens,
            reasoning_tokens=reply.reasoning_tokens,
            cost_usd=reply.cost_usd,
            text="".join(reply.text) if count_text else None,
            finish_reason=reply.finish_reason,
            response_model=reply.response_model,
            request_id=self.request_id,
        )

    def _iterating(self) -> bool:
        """Whether the close comes from inside the stream's own ``next()``."""
        observer = None if self.observer is None else self.observer()
        if observer is None:
            return False
        running = getattr(observer, "gi_running", None)  # a generator's, or an async one's:
        return bool(getattr(observer, "ag_running", False) if running is None else running)

    def _detach(self) -> None:
        for finalizer in self.finalizers:
            finalizer.detach()

    def _note_request_id(self, obj: Any) -> None:
        if self.request_id is None:
            self.request_id = _request_id(obj, self.provider.request_id_header)


def _request_id(obj: object, header: str) -> str | None:
    """The request id of a parsed model, a raw response or a stream."""
    found = getattr(obj, "_request_id", _UNSET)
    if isinstance(found, str):
        return found
    if found is None:  # a parsed model the client gave no id (none was sent): no response
        return None
    response = get(obj, "http_response") or get(obj, "response")  # get: a quick miss
    return _header(response, header)


def _header(response: object, header: str) -> str | None:
    """A response header's value, if ``response`` has headers and it is a string."""
    lookup = getattr(getattr(response, "headers", None), "get", None)
    found = lookup(header) if callable(lookup) else None
    return found if isinstance(found, str) else None


def _json(response: Any) -> Any:
    """The JSON of a response body that has been read; ``None`` otherwise."""
    try:
        return response.json()
    except Exception:  # not read, not JSON: nothing to learn
        return None


__all__ = ["Tracker"]
