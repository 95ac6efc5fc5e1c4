"""Where results go, and the small formats every command shares.

People get rich renderables on a :class:`rich.console.Console`, which falls back to
plain text when the output is not a terminal (a pipe, a file, a test); scripts get
JSON with ``--json``.  Times are local; durations pick their unit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rich.console import Console, RenderableType
from rich.text import Text

from .._store import Event

_VALUE_CHARS = 120  # one payload value in a one-line rendering, before "…"
_PIPE_WIDTH = 200


class Output:
    """A command's two channels: results on stdout, messages on stderr."""

    def __init__(self, *, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        # file=None: write to whatever sys.stdout is at print time (pytest's capture too).
        self.console = Console(highlight=False)
        if not self.console.is_terminal and "COLUMNS" not in os.environ:
            # A pipe or a file: long lines beat rich's 80-column guess, which would fold
            # every table; set COLUMNS to choose.
            self.console.width = _PIPE_WIDTH
        self.errors = Console(stderr=True, highlight=False)

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
        # Straight to the console's file: JSON needs no styling, and rich's text
        # processing would cost seconds on a run of a hundred thousand events.
        try:
            self.console.file.write(text + "\n")
            self.console.file.flush()
        except BrokenPipeError:
            self.console.on_broken_pipe()  # quiet exit 1, as for rich's own prints

    def note(self, message: str) -> None:
        """A remark for the person at the terminal (stderr, so pipes stay clean)."""
        self.errors.print(Text(f"runlog: {message}", style="dim"), soft_wrap=True)

    def error(self, message: str) -> int:
        """Report a user-facing error; return the exit status for it (1)."""
        self.errors.print(Text(f"runlog: error: {message}", style="bold red"), soft_wrap=True)
        return 1


def clock(ns: int, *, date: bool = True) -> str:
    """A nanosecond timestamp as local time to the millisecond."""
    moment = datetime.fromtimestamp(ns / 1e9)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f" if date else "%H:%M:%S.%f")[:-3]


def duration(ms: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4 m 05 s``, ``2 h 03 m``: short, in the unit that reads best."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.2g} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {sec:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} m"


def compact(payload: Mapping[str, Any]) -> str:
    """A payload on one line: ``key=value`` pairs, nulls left out, long values cut."""
    parts = []
    for key, value in payload.items():
        if value is None:
            continue
        if isinstance(value, str) and value and not any(c.isspace() for c in value):
            text = value
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


def exit_failed(exit_payload: Mapping[str, Any]) -> bool:
    """A ``process.exited`` payload that says exception, signal or a non-zero code."""
    if exit_payload.get("reason") in ("exception", "signal"):
        return True
    return exit_payload.get("exit_code") not in (0, None)


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
    "Output",
    "clock",
    "compact",
    "duration",
    "event_json",
    "event_style",
    "exit_failed",
    "is_failure",
]
