"""The phases of one instrumented call, the tracker's whole state machine.

::

    SENT --parsed model--> PARSED --request() returns--> ENDED
    SENT --request() returns a raw response--> RAW --parse()--> PARSED / STREAMING
    SENT --parsed stream--> STREAMING --end of the stream--> ENDED
    RAW, STREAMING --response collected--> DOOMED --reaper--> ENDED
    any --end / fail / close--> ENDED (exactly once)
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    """Where a call is.  ``SENT`` first; ``ENDED`` last, reached exactly once."""

    SENT = "sent"
    """The request is under way; no reply has been parsed."""
    RAW = "raw"
    """``request()`` returned a raw response whose body is parsed (or read) later."""
    PARSED = "parsed"
    """A complete reply was read; the call ends when ``request()`` returns."""
    STREAMING = "streaming"
    """A stream was instrumented: its end, close or collection ends the call."""
    DOOMED = "doomed"
    """The response was garbage-collected: the reaper ends the call."""
    ENDED = "ended"
    """``llm_call.completed`` or ``.failed`` was logged."""


__all__ = ["Phase"]
