"""``runlog tail [-f] [-n N] [--type T] [--run R]``: events as readable lines.

It prints the last N matching events (20 by default), one line each — local time, run,
event type, payload — and with ``-f`` keeps polling for new rows every half second
until interrupted (Ctrl-C ends it with status 0).  ``--json`` prints JSON Lines.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from rich.text import Text

from .._store import Event, Reader, StoreBusy
from ._args import Command, count, plain_text, run_id
from ._db import require_run
from ._output import Output, clock, compact, event_json, event_style

POLL_S = 0.5
STALL_S = 5.0
"""How long a missing id may hold the follower back before it is given up (see Follower)."""


class Follower:
    """The events committed after a starting point, each exactly once.

    Rows usually appear in id order, but not always: a PostgreSQL writer takes its ids
    before it commits, so id 7 may become visible after id 8.  Polling "after the last
    id seen" would skip 7 for good.  The follower keeps a *watermark* below which every
    id has been seen, lists the ids above it on each poll (from the primary key alone),
    and fetches only the events it has not seen.  An id still missing after
    :data:`STALL_S` belonged to a write that was rolled back (or a row deleted), and the
    watermark moves past it.
    """

    def __init__(
        self,
        watermark: int,
        ids_after: Callable[[int], list[int]],
        fetch: Callable[[int], list[Event]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.watermark = watermark
        self._ids_after = ids_after
        self._fetch = fetch  # matching events with id > the argument, in id order
        self._clock = clock
        self._seen: set[int] = set()
        self._stall: tuple[float, int] | None = None  # (since, highest id then)

    def poll(self) -> list[Event]:
        """The matching events that became visible since the last poll, in id order."""
        present = self._ids_after(self.watermark)
        fresh = [i for i in present if i not in self._seen]
        found: list[Event] = []
        if fresh:
            wanted = set(fresh)
            found = [e for e in self._fetch(fresh[0] - 1) if e.id in wanted]
            self._seen |= wanted
        self._advance(present)
        return found

    def _advance(self, present: list[int]) -> None:
        """Raise the watermark over every id seen in a row, and past old gaps."""
        mark = _contiguous(self.watermark, present)
        top = present[-1] if present else mark
        if mark >= top:
            self._stall = None
        elif self._stall is None:
            self._stall = (self._clock(), top)
        elif self._clock() - self._stall[0] >= STALL_S:
            # Every id up to the top of the stall's first poll had STALL_S to appear.
            mark = _contiguous(max(mark, self._stall[1]), present)
            self._stall = None if mark >= top else (self._clock(), top)
        self.watermark = mark
        self._seen = {i for i in self._seen if i > mark}


def _contiguous(mark: int, ids: list[int]) -> int:
    """The highest id reachable from ``mark`` through consecutive ``ids`` (ascending)."""
    for i in ids:
        if i == mark + 1:
            mark = i
        elif i > mark:
            break
    return mark


class RunNames:
    """``#3 worker-1``: a run as the lines name it, its ``process.started`` read once."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self._names: dict[int, str] = {}

    def __call__(self, run_id: int) -> str:
        if run_id not in self._names:
            started = self._reader.events(event_type="process.started", run_id=run_id, limit=1)
            who = started[0].payload if started else {}
            name = who.get("instance_id") or who.get("role") or "?"
            self._names[run_id] = f"#{run_id} {name}"
        return self._names[run_id]


def _printer(reader: Reader, out: Output) -> Callable[[Event], None]:
    """How one event is printed: a JSON line, or time, run, type and payload."""
    if out.json_mode:
        return lambda event: out.json(event_json(event), lines=True)
    names = RunNames(reader)

    def line(event: Event) -> None:
        out.line(
            Text.assemble(
                (clock(event.timestamp), "dim"),
                "  ",
                (names(event.run_id).ljust(14), "cyan"),
                " ",
                (event.event_type.ljust(22), event_style(event)),
                " ",
                compact(event.payload),
            )
        )

    return line


def _follow(follower: Follower, show: Callable[[Event], None], out: Output) -> int:
    """Poll until Ctrl-C; a busy or briefly unreachable database is waited out."""
    waiting = False
    try:
        while True:
            try:
                events = follower.poll()
            except StoreBusy as exc:
                if not waiting:
                    out.note(f"waiting for the database: {exc}")
                waiting, events = True, []
            else:
                waiting = False
            for event in events:
                show(event)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        return 0


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    parser.add_argument(
        "-n", "--lines", type=count, default=20, metavar="N", help="the last N events (20)"
    )
    parser.add_argument(
        "--type",
        action="append",
        type=plain_text,
        metavar="T",
        help="only events of type T (repeatable)",
    )
    parser.add_argument("--run", type=run_id, metavar="R", help="only events of run R")


def _run(reader: Reader, args: argparse.Namespace, out: Output) -> int:
    if args.run is not None:
        require_run(reader, args.run)
    show = _printer(reader, out)

    def fetch(after_id: int, limit: int | None = None, newest_first: bool = False) -> list[Event]:
        return reader.events(
            event_type=args.type,
            run_id=args.run,
            after_id=after_id,
            limit=limit,
            newest_first=newest_first,
        )

    start = reader.last_id()  # first: what is written meanwhile is the follower's
    if args.lines:
        for event in reversed(fetch(0, args.lines, newest_first=True)):
            if event.id <= start:
                show(event)
    if not args.follow:
        return 0
    return _follow(Follower(start, reader.ids_after, fetch), show, out)


COMMAND = Command(
    name="tail",
    help="the latest events, one per line; -f follows new ones",
    description=(
        "Print the last N events (20), one line each: local time, run, event type, payload. "
        "With -f, keep printing new events as they are written (polled every half second) "
        "until Ctrl-C. --json prints JSON Lines."
    ),
    arguments=_arguments,
    run=_run,
)

__all__ = ["COMMAND", "Follower", "RunNames"]
