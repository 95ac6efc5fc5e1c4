"""Where results go, and the small formats every command shares.

People get rich renderables on a :class:`rich.console.Console`, which falls back to
plain text when the output is not a terminal (a pipe, a file, a test); scripts get
JSON with ``--json``.  Times are local; durations pick their unit.

The data must never drive the terminal of whoever reads it: :func:`escape` is the one
escape point.  It shows control characters (C0, DEL, C1 such as ``\x9b``, bidi
overrides, line separators) and lone surrogates as escapes (``\x1b``, ``\u202e``), and
is applied to everything from the table before it is rendered (:class:`EscapingReader`),
to every message, and to the JSON output (whose encoder escapes only C0 itself).  The
console parses no markup and no emoji codes, so ``[red]`` in the data stays text.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, RenderableType
from rich.text import Text

from .._store import Event, Reader
from ._quick import PIPE_WIDTH, duration, exit_failed

_VALUE_CHARS = 120  # one payload value in a one-line rendering, before "…"
_PIPE_WIDTH = PIPE_WIDTH  # the quick path of `runlog tree` wraps at the same width
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
# In JSON text the encoder already escaped C0 (and the newlines left are structure).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every character that could drive a terminal shown as an escape."""
    return _UNSAFE.sub(_escaped, text) if _UNSAFE.search(text) else text


def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _escape_value(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {escape(k): _escape_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_value(v) for v in value]
    return value


def escape_event(event: Event) -> Event:
    """``event`` with its type and every key and string of its payload escaped."""
    return dataclasses.replace(
        event, event_type=escape(event.event_type), payload=_escape_value(event.payload)
    )


class EscapingReader(Reader):
    """A reader whose events come escaped: what the people-facing renderings read."""

    def events(self, **filters: Any) -> list[Event]:
        return [escape_event(e) for e in super().events(**filters)]

    def events_of_runs(
        self, run_ids: Collection[int] | None, *, event_type: str | Sequence[str] | None = None
    ) -> list[Event]:
        found = super().events_of_runs(run_ids, event_type=event_type)
        return [escape_event(e) for e in found]


class Output:
    """A command's two channels: results on stdout, messages on stderr."""

    def __init__(self, *, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        # file=None: write to whatever sys.stdout is at print time (pytest's capture too).
        self.console = Console(highlight=False, markup=False, emoji=False)
        if not self.console.is_terminal and "COLUMNS" not in os.environ:
            # A pipe or a file: long lines beat rich's 80-column guess, which would fold
            # every table; set COLUMNS to choose.
            self.console.width = _PIPE_WIDTH
        self.errors = Console(stderr=True, highlight=False, markup=False, emoji=False)

    def show(self, renderable: RenderableType) -> None:
        """Print a table, a tree or a text, wrapped to the terminal's width."""
        self.console.print(renderable)

    def line(self, text: Text) -> None:
        """Print ``text`` as one line however long (the terminal may fold it)."""
        self.console.print(text, soft_wrap=True)
        self.console.file.flush()

    def json(self, data: Any, *, lines: bool = False) -> None:
        """Print ``data`` as a JSON document, or as one compact line (JSON Lines)."""
        text = json.dumps(data, ensure_ascii=False, indent=None if lines else 2)
        text = _JSON_UNSAFE.sub(_json_escaped, text)  # only inside strings: still valid JSON
        # Straight to the console's file: JSON needs no styling, and rich's text
        # processing would cost seconds on a run of a hundred thousand events.
        try:
            self.console.file.write(text + "\n")
            self.console.file.flush()
        except BrokenPipeError:
            self.console.on_broken_pipe()  # quiet exit 1, as for rich's own prints

    def note(self, message: str) -> None:
        """A remark for the person at the terminal (stderr, so pipes stay clean)."""
        self.errors.print(Text(f"runlog: {escape(message)}", style="dim"), soft_wrap=True)

    def error(self, message: str) -> int:
        """Report a user-facing error; return the exit status for it (1)."""
        line = Text(f"runlog: error: {escape(message)}", style="bold red")
        self.errors.print(line, soft_wrap=True)
        return 1


def clock(ns: int, *, date: bool = True) -> str:
    """A nanosecond timestamp as local time to the millisecond."""
    moment = datetime.fromtimestamp(ns / 1e9)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f" if date else "%H:%M:%S.%f")[:-3]


def compact(payload: Mapping[str, Any]) -> str:
    """A payload on one line: ``key=value`` pairs, nulls left out, long values cut."""
    parts = []
    for key, value in payload.items():
        if value is None:
            continue
        if isinstance(value, str) and value and not any(c.isspace() for c in value):
            text = value
        elif isinstance(value, str):  # quoted, not JSON-escaped: it may be escaped already
            text = f'"{value}"'
        else:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        if len(text) > _VALUE_CHARS:
            text = text[: _VALUE_CHARS - 1] + "…"
        parts.append(f"{key}={text}")
    return " ".join(parts)


def is_failure(event: Event) -> bool:
    """A failed span or call, a failed traced function, or a process that did not end well."""
    payload = event.payload
    if event.event_type == "process.exited":
        return exit_failed(payload)
    return event.event_type.endswith(".failed") or payload.get("status") == "error"


def event_style(event: Event) -> str:
    """The colour of an event's type: failures red, the run's own events bold."""
    if is_failure(event):
        return "bold red"
    if event.event_type.startswith("process."):
        return "bold"
    if event.event_type.startswith("llm_call."):
        return "magenta"
    return "cyan"


def event_json(event: Event) -> dict[str, Any]:
    """One event as JSON: the table's columns, payload decoded."""
    return {
        "id": event.id,
        "timestamp": event.timestamp,
        "run_id": event.run_id,
        "parent_run_id": event.parent_run_id,
        "event_type": event.event_type,
        "payload": event.payload,
    }


__all__ = [
    "EscapingReader",
    "Output",
    "clock",
    "compact",
    "duration",
    "escape",
    "escape_event",
    "event_json",
    "event_style",
    "exit_failed",
    "is_failure",
]
