"""``runlog show RUN_ID``: one run's events in order, under the run's identity."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from rich.console import Group, JustifyMethod
from rich.table import Table
from rich.text import Text

from .._store import Event, Reader
from ._args import Command, run_id
from ._output import Output, clock, compact, event_json, event_style
from ._runs import RunSummary, load_tree
from ._tree import label

_IDENTITY = ("host", "version", "python", "argv")
_HEADERS = ("id", "time", "+s", "event", "payload")
_JUSTIFY: dict[str, JustifyMethod] = {"id": "right", "+s": "right"}
_CHUNK = 500


def _heading(run: RunSummary, identity: dict[str, Any]) -> Group:
    """The tree's line for the run, then where it ran, its parent and its children."""
    facts = [f"{key} {_plain(identity[key])}" for key in _IDENTITY if identity.get(key)]
    if run.parent_run_id is not None:
        facts.insert(0, f"parent #{run.parent_run_id}")
    if run.children:
        kids = ", ".join(f"#{c.run_id} {c.instance_id or c.role or '?'}" for c in run.children)
        facts.append(f"started {kids}")
    return Group(label(run), Text(" · ".join(facts), style="dim"), "")


def _plain(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def _tables(events: list[Event], start: int, width: int) -> Iterator[Table]:
    """The events as tables of :data:`_CHUNK` rows with the same fixed column widths.

    One table of every row would have rich measure every cell before printing the
    first line: slow on a long run.  Fixed widths keep the chunks aligned as one table.
    """
    rows = [
        (
            str(e.id),
            clock(e.timestamp, date=False),
            f"{(e.timestamp - start) / 1e9:.3f}",
            Text(e.event_type, style=event_style(e)),
            compact(e.payload),
        )
        for e in events
    ]
    widths = [
        max([len(header), *(len(str(row[i])) for row in rows)])
        for i, header in enumerate(_HEADERS[:-1])
    ]
    widths.append(max(20, width - sum(widths) - 2 * len(widths)))  # the payload: the rest
    for first in range(0, len(rows), _CHUNK):
        table = Table(box=None, pad_edge=False, header_style="bold", show_header=first == 0)
        for header, size in zip(_HEADERS, widths, strict=True):
            table.add_column(header, width=size, justify=_JUSTIFY.get(header, "left"))
        for row in rows[first : first + _CHUNK]:
            table.add_row(*row)
        yield table


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", metavar="RUN_ID", type=run_id, help="the run to show")


def _run(reader: Reader, args: argparse.Namespace, out: Output) -> int:
    (run,) = load_tree(reader, args.run_id)  # raises CLIError for an unknown run
    events = reader.events(run_id=args.run_id)
    if out.json_mode:
        summary = run.to_json()
        summary["children"] = [child.run_id for child in run.children]
        out.json({"run": summary, "events": [event_json(e) for e in events]})
        return 0
    identity = events[0].payload if events[0].event_type == "process.started" else {}
    out.show(_heading(run, identity))
    for table in _tables(events, run.started or events[0].timestamp, out.console.width):
        out.show(table)
    return 0


COMMAND = Command(
    name="show",
    help="one run's events in order",
    description=(
        "Print one run's events in order, under its status, identity, parent and children."
    ),
    arguments=_arguments,
    run=_run,
)

__all__ = ["COMMAND"]
