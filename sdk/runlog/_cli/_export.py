"""``runlog export otlp``: the table as OpenTelemetry traces, to any OTLP/HTTP endpoint.

What is sent: every run (default), the runs that logged an event since a time
(``--since 2h`` or an ISO date), or one run and the runs it started (``--run R``), each
with all of its spans (:mod:`runlog._otlp._mapping`).  Where: ``--endpoint`` and
``--headers``, else the standard ``OTEL_EXPORTER_OTLP_*`` variables.  ``--dry-run``
prints the spans instead (``--json``: one JSON object per line).

``--follow`` ships what is already there, then keeps polling for new rows and ships
each span once, when it is complete (an open span could not be changed once sent):
a runlog span at its end event, an LLM call at once, a process span when the process
exits or is found lost.  A batch the endpoint did not take is kept and sent again at
the next poll; nothing is counted as sent before the endpoint acknowledged it.
"""

from __future__ import annotations

import argparse
import gc
import re
import signal
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import datetime
from types import FrameType

from .._otlp import _export
from .._otlp._mapping import SpanData, Traces, run_spans
from .._propagation import span_id
from .._store import Event, Reader, StoreBusy, redact_url
from ._args import Command
from ._db import CLIError, require_run
from ._liveness import liveness
from ._output import Output
from ._tail import POLL_S, Follower

LIVENESS_EVERY_S = 2.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now_ns: int | None = None) -> int:
    """``--since``: ``30s``/``10m``/``2h``/``1d`` ago, or an ISO 8601 time; Unix ns."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if found:
        return now_ns - int(float(found.group(1)) * _UNITS[found.group(2)] * 1e9)
    try:
        return int(datetime.fromisoformat(text.strip()).timestamp() * 1e9)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 10m, 2h, 1d or an ISO time, got {text!r}"
        ) from None


def _subtree(traces: Traces, top: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for run_id, event in traces.started.items():
        if event.parent_run_id is not None:
            kids.setdefault(event.parent_run_id, []).append(run_id)
    out, todo = set(), [top]
    while todo:
        run_id = todo.pop()
        if run_id not in out:
            out.add(run_id)
            todo += kids.get(run_id, [])
    return out


def _active_since(reader: Reader, since_ns: int) -> set[int]:
    p = reader.store.placeholder
    rows = reader.store.query(
        f"SELECT DISTINCT run_id FROM events WHERE timestamp >= {p}", [since_ns]
    )
    return {int(row[0]) for row in rows}


def _states(traces: Traces, by_run: dict[int, list[Event]]) -> dict[int, str]:
    """Liveness of the runs among ``by_run`` that have not logged ``process.exited``."""
    out: dict[int, str] = {}
    for run_id, events in by_run.items():
        if any(e.event_type == "process.exited" for e in events):
            continue
        started = traces.started.get(run_id)
        if started is None:
            out[run_id] = "unknown"
            continue
        who = started.payload
        out[run_id] = liveness(who.get("host"), who.get("pid"), started.timestamp)[0]
    return out


def _print(spans: list[SpanData], out: Output) -> None:
    for span in spans:
        if out.json_mode:
            out.json(span.to_json(), lines=True)
        else:
            parent = "-" if span.parent_id is None else f"{span.parent_id:016x}"
            took = (span.end - span.start) / 1e6
            status = " ERROR" if span.error is not None else ""
            out.console.print(
                f"{span.trace_id:032x} {span.span_id:016x} <- {parent}  {span.name} "
                f"({took:.1f} ms, {len(span.events)} events){status}",
                soft_wrap=True,
                markup=False,
            )


class _Session:
    """The spans of one export: what exists, what was acknowledged."""

    def __init__(self, reader: Reader, args: argparse.Namespace, out: Output) -> None:
        self.reader, self.args, self.out = reader, args, out
        self.traces = Traces(reader.events(event_type="process.started"))
        self.selected: set[int] | None = None
        if args.run is not None:
            require_run(reader, args.run)
            self.selected = _subtree(self.traces, args.run)
        elif args.since is not None:
            self.selected = _active_since(reader, args.since)
        self.by_run: dict[int, list[Event]] = {}
        self.sent: set[tuple[int, int]] = set()
        self.shipper: _export.Shipper | None = None
        self.endpoint = _export.resolve_endpoint(args.endpoint)
        self.service = _export.service_name(args.service_name)
        self.headers = _export.parse_headers(args.headers)  # a bad one fails before the work

    def connect(self) -> None:
        """Make the exporter (the ``runlog[otlp]`` extra missing fails here, early)."""
        self.shipper = _export.Shipper(
            self.endpoint,
            self.headers,
            self.args.timeout,
            lambda run_id: self.traces.resource(run_id, self.service),
        )

    def wanted(self, run_id: int) -> bool:
        if self.selected is None or run_id in self.selected:
            return True
        if self.args.run is None:  # --since: a new event is always recent
            return self.args.since is not None
        started = self.traces.started.get(run_id)
        parent = None if started is None else started.parent_run_id
        if parent is not None and parent in self.selected:
            self.selected.add(run_id)
            return True
        return False

    def load(self, upto: int) -> None:
        events = self.reader.events_of_runs(self.selected)
        for event in events:
            if event.id <= upto:
                self.by_run.setdefault(event.run_id, []).append(event)

    def add(self, events: list[Event]) -> set[int]:
        """New rows from the follower; returns the runs they touched."""
        touched = set()
        for event in events:
            if event.event_type == "process.started":
                self.traces.started[event.run_id] = event
            if self.wanted(event.run_id):
                self.by_run.setdefault(event.run_id, []).append(event)
                touched.add(event.run_id)
        return touched

    def spans(self, runs: Collection[int], states: dict[int, str]) -> list[SpanData]:
        out: list[SpanData] = []
        for run_id in sorted(runs):
            out += run_spans(self.traces, run_id, self.by_run[run_id], states.get(run_id))
        return out

    def ship(self, spans: list[SpanData], *, bar: bool) -> tuple[int, str | None]:
        """Send the spans not yet acknowledged; (how many went, the error if any)."""
        todo = [s for s in spans if (s.trace_id, s.span_id) not in self.sent]
        if not todo:
            return 0, None
        if self.shipper is None:
            self.connect()
        assert self.shipper is not None
        progress = _export.Progress()
        error = None
        try:
            if bar:
                self._send_with_bar(todo, progress)
            else:
                self.shipper.send(todo, progress)
        except _export.ExportError as exc:
            error = str(exc)
        for span in todo[: progress.sent]:
            self.sent.add((span.trace_id, span.span_id))
        return progress.sent, error

    def _send_with_bar(self, todo: list[SpanData], progress: _export.Progress) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        assert self.shipper is not None
        columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=self.out.errors, transient=True) as bar:
            task = bar.add_task("spans", total=len(todo))
            self.shipper.send(todo, progress, lambda n: bar.advance(task, n))

    def open_runs(self) -> set[int]:
        """The runs whose process span has not been shipped yet."""
        out = set()
        for run_id in self.by_run:
            trace, _ = self.traces.trace(run_id)
            if (trace, span_id(trace, run_id, 0)) not in self.sent:
                out.add(run_id)
        return out

    def close(self) -> None:
        if self.shipper is not None:
            self.shipper.close()


def _run(reader: Reader, args: argparse.Namespace, out: Output) -> int:
    # The export holds every event and span in memory, acyclic, at once: the cyclic
    # collector's passes over that heap would take half the time of the mapping.
    gc.disable()
    try:
        return _export_all(reader, args, out)
    finally:
        gc.freeze()  # what was loaded stays; a follower's garbage is collected as usual
        gc.enable()


def _export_all(reader: Reader, args: argparse.Namespace, out: Output) -> int:
    session = _Session(reader, args, out)
    if not args.dry_run:
        session.connect()
    start = reader.last_id()  # first: what is written meanwhile is the follower's
    session.load(start)
    states = _states(session.traces, session.by_run)
    spans = session.spans(session.by_run, states)
    if args.follow:
        spans = [s for s in spans if s.final]
    if args.dry_run:
        _print(spans, out)
        return 0
    try:
        long = len(spans) > _export.BATCH and out.errors.is_terminal and not out.json_mode
        sent, error = session.ship(spans, bar=long)
        traces = len({s.trace_id for s in spans})
        if error is not None and not args.follow:
            return out.error(f"{error}; {sent} of {len(spans)} spans were sent")
        if error is not None:
            out.note(f"{error}; {sent} of {len(spans)} spans were sent; will retry")
        elif out.json_mode:
            out.json({"sent": sent, "spans": len(spans), "traces": traces}, lines=True)
        else:
            out.note(f"sent {sent} spans in {traces} traces to {redact_url(session.endpoint)}")
        if not args.follow:
            return 0
        gc.freeze()
        gc.enable()
        retry = {s.run_id for s in spans if (s.trace_id, s.span_id) not in session.sent}
        return _follow(session, start, out, retry)
    finally:
        session.close()


def _follow(session: _Session, start: int, out: Output, retry: set[int]) -> int:
    """Ship each new complete span once, until Ctrl-C; ``retry``: runs with spans that
    could not be sent yet."""
    reader = session.reader
    follower = Follower(start, reader.ids_after, lambda after: reader.events(after_id=after))
    checked = time.monotonic()
    with _interruptible() as stop:
        while not stop.is_set():
            try:
                touched = session.add(follower.poll())
            except StoreBusy as exc:
                out.note(f"waiting for the database: {exc}")
                touched = set()
            if time.monotonic() - checked >= LIVENESS_EVERY_S:  # lost runs end here
                checked = time.monotonic()
                touched |= session.open_runs()
            touched |= retry
            states = _states(session.traces, {r: session.by_run[r] for r in touched})
            spans = [s for s in session.spans(touched, states) if s.final]
            sent, error = session.ship(spans, bar=False)
            if error is not None and not retry:  # once per outage, not once per poll
                out.note(f"{error}; will retry")
            elif error is None and retry:
                out.note("the endpoint takes spans again")
            retry = set()
            if error is not None:
                retry = {s.run_id for s in spans if (s.trace_id, s.span_id) not in session.sent}
            elif sent and out.json_mode:
                out.json({"sent": sent}, lines=True)
            stop.wait(POLL_S)
    return 0


@contextmanager
def _interruptible() -> Iterator[threading.Event]:
    """Ctrl-C ends the loop: KeyboardInterrupt as usual, and a flag the loop checks, so a
    library that swallows the exception (there are some) cannot keep it running."""
    stop = threading.Event()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        stop.set()
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: Ctrl-C is not ours to handle
        previous = None
    try:
        yield stop
    except KeyboardInterrupt:
        stop.set()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=["otlp"], help="the format: otlp (OTLP/HTTP protobuf)")
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="the OTLP/HTTP base URL, /v1/traces appended (default: $OTEL_EXPORTER_OTLP_"
        "TRACES_ENDPOINT, else $OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318)",
    )
    parser.add_argument(
        "--headers",
        metavar="K=V,...",
        help="request headers, as OTEL_EXPORTER_OTLP_HEADERS (which is read too)",
    )
    parser.add_argument(
        "--service-name", metavar="NAME", help="service.name (default: $OTEL_SERVICE_NAME, runlog)"
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--since", type=parse_since, metavar="WHEN", help="runs active since 10m, 2h, 1d or a time"
    )
    which.add_argument("--run", type=int, metavar="R", help="run R and the runs it started")
    parser.add_argument(
        "-f", "--follow", action="store_true", help="keep shipping new spans until Ctrl-C"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the spans, send nothing")
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds per batch, retries included",
    )


def _run_checked(reader: Reader, args: argparse.Namespace, out: Output) -> int:
    if args.timeout <= 0:
        raise CLIError("--timeout must be positive")
    return _run(reader, args, out)


COMMAND = Command(
    name="export",
    help="export otlp: send the table's traces to an OpenTelemetry (OTLP/HTTP) endpoint",
    description=(
        "Send every run as OpenTelemetry spans (one trace per root run, process spans, "
        "runlog spans, GenAI LLM spans) to an OTLP/HTTP endpoint. Honours "
        "OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "
        "OTEL_EXPORTER_OTLP_HEADERS and OTEL_SERVICE_NAME. Needs runlog[otlp]."
    ),
    arguments=_arguments,
    run=_run_checked,
)

__all__ = ["COMMAND", "parse_since"]
