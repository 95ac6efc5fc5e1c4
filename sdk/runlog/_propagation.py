"""Trace context across processes: W3C ``TRACEPARENT`` beside ``PARENT_RUN_ID``.

OpenTelemetry ids for runlog's data are *derived*, never stored, so that the process
that writes an event and ``runlog export otlp`` reading it later compute the same ids:

* the trace of a root run: 16 bytes of SHA-256 over the root's identity in the table,
  its ``run_id`` and the nanosecond timestamp of its ``process.started`` row.  That row
  is the database's own record of the run: the root knows both values the moment it
  starts (no query), every reader of the table sees the same ones (SQLite or
  PostgreSQL, read-only, any host, any copy of the file), and two databases do not
  share a run started in the same nanosecond;
* a root started with a valid ``TRACEPARENT`` (a CI job, a web request traced with
  OpenTelemetry) adopts that trace instead, and its process span's parent is the
  span named there; its ``process.started`` records the header as ``traceparent``;
* a span: 8 bytes of SHA-256 over the trace id, the ``run_id`` and runlog's
  ``span_id`` within the run (0 for the run's own ``process <role>`` span).

A child process learns the span that started it from two variables: ``TRACEPARENT``
(for children instrumented with plain OpenTelemetry: the environment-carrier
specification) and ``PARENT_SPAN_ID`` (runlog's own ``span_id`` in the parent run,
recorded as ``parent_span_id`` in the child's ``process.started``).  At run start
``os.environ["TRACEPARENT"]`` is set to the run's process span, so children started
outside any span need nothing more; how the *current* span reaches children started
inside one is :mod:`runlog._spawn`'s concern.
"""

from __future__ import annotations

import os
from typing import Any

from ._errors import warn_once

TRACEPARENT = "TRACEPARENT"
SPAN_VAR = "PARENT_SPAN_ID"
_HEADER = r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$"
_MAX_ID = 2**63 - 1


def _sha256(data: bytes) -> bytes:
    from hashlib import sha256  # on first use: a process that never needs an id never pays

    return sha256(data).digest()


def root_trace_id(run_id: int, started_ns: int) -> int:
    """The trace id of a root run that did not adopt one (see the module docstring)."""
    digest = _sha256(b"runlog-trace\0%d\0%d" % (run_id, started_ns))
    return int.from_bytes(digest[:16], "big") or 1


def span_id(trace_id: int, run_id: int, span: int) -> int:
    """The OpenTelemetry span id of runlog span ``span`` of run ``run_id`` (0: the run)."""
    digest = _sha256(b"runlog-span\0%032x\0%d\0%d" % (trace_id, run_id, span))
    return int.from_bytes(digest[:8], "big") or 1


def format_traceparent(trace_id: int, parent: int) -> str:
    """A W3C ``traceparent`` header, sampled."""
    return f"00-{trace_id:032x}-{parent:016x}-01"


def parse_traceparent(raw: str | None) -> tuple[int, int] | None:
    """``(trace_id, span_id)`` of a valid header; None for absent or malformed ones."""
    if raw is None:
        return None
    import re

    found = re.match(_HEADER, raw.strip())
    if found is None:
        return None
    version, trace, parent, _flags, rest = found.groups()
    if version == "ff" or (version == "00" and rest) or set(trace) == {"0"} or set(parent) == {"0"}:
        return None
    return int(trace, 16), int(parent, 16)


class _Process:
    """This process's place in its trace, and what it inherited from its parent."""

    def __init__(self) -> None:
        self.trace_id: int | None = None
        self.run_id = 0
        self.header: str | None = os.environ.get(TRACEPARENT)
        """``TRACEPARENT`` as inherited (read once, like ``PARENT_RUN_ID``)."""
        self.span: str | None = os.environ.get(SPAN_VAR)
        """``PARENT_SPAN_ID`` as inherited."""


_process = _Process()
INHERITED = {TRACEPARENT: _process.header, SPAN_VAR: _process.span}
"""The variables as this process found them (restored by ``reset_for_tests``)."""


def inherit(header: str | None, span: int | None) -> None:
    """Take the parent's context from in-process state (fork, multiprocessing), not the
    environment, which only says where the parent *run* is."""
    _process.header = header
    _process.span = None if span is None else str(span)


def start_fields(parent_run_id: int | None) -> dict[str, Any]:
    """Fields for ``process.started``; also settles the trace this run belongs to.

    A malformed ``TRACEPARENT`` is ignored with one warning.
    """
    raw = _process.header
    parsed = parse_traceparent(raw)
    if raw is not None and raw.strip() and parsed is None:
        warn_once(
            f"bad-traceparent:{raw}",
            "ignoring malformed %s=%r (expected 00-<32 hex>-<16 hex>-<2 hex>)",
            TRACEPARENT,
            raw,
        )
    _process.trace_id = None if parsed is None else parsed[0]
    fields: dict[str, Any] = {}
    if raw is not None and parsed is not None:
        # A root adopts it; a child keeps it for an export whose table lacks the parent.
        fields["traceparent"] = raw.strip()
    if parent_run_id is None:
        return fields
    parent_span = _parse_span(_process.span)
    if parent_span is not None:
        fields["parent_span_id"] = parent_span
    return fields


def _parse_span(raw: str | None) -> int | None:
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if text.isascii() and text.isdigit() and 0 < int(text) <= _MAX_ID:
        return int(text)
    warn_once(f"bad-span:{raw}", "ignoring malformed %s=%r", SPAN_VAR, raw)
    return None


def run_started(run_id: int, parent_run_id: int | None, started_ns: int) -> None:
    """Note the run's trace and put its process span into ``os.environ`` for children."""
    if _process.trace_id is None and parent_run_id is None:
        _process.trace_id = root_trace_id(run_id, started_ns)
    _process.run_id = run_id
    os.environ.pop(SPAN_VAR, None)
    if _process.trace_id is None:  # a child whose parent passed no trace: nothing to pass on
        os.environ.pop(TRACEPARENT, None)
    else:
        os.environ[TRACEPARENT] = format_traceparent(
            _process.trace_id, span_id(_process.trace_id, run_id, 0)
        )


def header_for(span: int | None) -> str | None:
    """The ``TRACEPARENT`` naming runlog span ``span`` of this run (None: the run itself)."""
    trace = _process.trace_id
    if trace is None or not _process.run_id:
        return None
    return format_traceparent(trace, span_id(trace, _process.run_id, span or 0))


def child_vars(span: int | None) -> dict[str, str]:
    """The variables that place a child under runlog span ``span`` of this run (None: the
    run itself); empty before the run has started."""
    if not _process.run_id:
        return {}
    out: dict[str, str] = {}
    header = header_for(span)
    if header is not None:
        out[TRACEPARENT] = header
    if span is not None:
        out[SPAN_VAR] = str(span)
    return out


def export_inherited() -> None:
    """Before a run of its own, put what this process inherited into ``os.environ`` (a
    forked child about to exec took its context from memory, not the environment)."""
    if _process.run_id:
        return
    for name, value in ((TRACEPARENT, _process.header), (SPAN_VAR, _process.span)):
        if value is not None:
            os.environ[name] = value


def apply(env: dict[str, str], span: int | None) -> dict[str, str]:
    """``env`` with the variables for a child under ``span`` (a stale span var removed)."""
    env.pop(SPAN_VAR, None)
    env.update(child_vars(span))
    return env


Snapshot = tuple[int | None, int, str | None, str | None, str | None, str | None]


def snapshot() -> Snapshot:
    """This process's trace context, for a block that runs a run of its own in between
    (``runlog.testing.capture``) to put back with :func:`restore`."""
    p = _process
    return (
        p.trace_id,
        p.run_id,
        p.header,
        p.span,
        os.environ.get(TRACEPARENT),
        os.environ.get(SPAN_VAR),
    )


def restore(saved: Snapshot) -> None:
    """Put back what :func:`snapshot` saved."""
    _process.trace_id, _process.run_id, _process.header, _process.span = saved[:4]
    for name, value in ((TRACEPARENT, saved[4]), (SPAN_VAR, saved[5])):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def reset_for_tests() -> None:
    """Forget the run's trace and restore the variables as they were (tests only)."""
    for name, value in INHERITED.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _process.__init__()  # type: ignore[misc]


__all__ = [
    "INHERITED",
    "SPAN_VAR",
    "TRACEPARENT",
    "apply",
    "child_vars",
    "export_inherited",
    "format_traceparent",
    "header_for",
    "inherit",
    "parse_traceparent",
    "reset_for_tests",
    "restore",
    "root_trace_id",
    "run_started",
    "snapshot",
    "span_id",
    "start_fields",
]
