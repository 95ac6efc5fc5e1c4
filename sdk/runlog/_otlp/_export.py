"""Shipping :class:`~runlog._otlp._mapping.SpanData` with OpenTelemetry's OTLP/HTTP exporter.

The protocol is OpenTelemetry's own (``opentelemetry-exporter-otlp-proto-http``, the
``runlog[otlp]`` extra), fed with the SDK's ``ReadableSpan`` objects built here, so no
tracer, processor or provider is involved.  The exporter retries what is worth
retrying (connection errors, 429, 502-504, with back-off, within ``timeout``) and
logs why it gave up; this module listens to that log to turn a failure into one
line.  Batches are sent in order and a span counts as sent only when the batch
holding it was acknowledged, so a failure says exactly how much went through.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigurationError
from .._store import redact_url
from ._mapping import SpanData

DEFAULT_ENDPOINT = "http://localhost:4318"
TRACES_PATH = "v1/traces"
BATCH = 512
_LOGGERS = ("opentelemetry.exporter",)


def resolve_endpoint(given: str | None, env: Mapping[str, str] = os.environ) -> str:
    """The traces URL: ``--endpoint`` (a base URL, as ``OTEL_EXPORTER_OTLP_ENDPOINT``),
    else ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as is), else the base from
    ``OTEL_EXPORTER_OTLP_ENDPOINT``, else a local collector; ``/v1/traces`` appended to
    a base unless it is already there."""
    if not given:
        traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if traces:
            return traces
    base = given or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT
    if base.rstrip("/").endswith("/" + TRACES_PATH):
        return base
    return f"{base.rstrip('/')}/{TRACES_PATH}"


def parse_headers(given: str | None) -> dict[str, str]:
    """``--headers`` in the format of ``OTEL_EXPORTER_OTLP_HEADERS``
    (``key=value,key2=value2``, values URL-encoded)."""
    from urllib.parse import unquote

    out: dict[str, str] = {}
    for item in (given or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--headers wants key=value pairs, got {item.strip()!r}")
        out[key.strip().lower()] = unquote(value.strip())
    return out


def service_name(given: str | None, env: Mapping[str, str] = os.environ) -> str:
    """``--service-name``, else ``OTEL_SERVICE_NAME``, else ``runlog``."""
    return given or env.get("OTEL_SERVICE_NAME") or "runlog"


class ExportError(Exception):
    """The endpoint refused a batch or could not be reached, after the exporter's retries."""


@dataclass
class Progress:
    """How many spans were acknowledged by the endpoint."""

    sent: int = 0


class _Reasons(logging.Handler):
    """Collects the exporter's own account of a failure (and keeps it off the terminal)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # a broken log record must not hide the failure itself
            self.messages.append(str(record.msg))


@contextmanager
def _listening() -> Iterator[_Reasons]:
    handler = _Reasons()
    saved = []
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate, logger.level))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for logger, propagate, level in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate
            logger.setLevel(level)


class Shipper:
    """One OTLP/HTTP exporter and the resources of the runs it ships."""

    def __init__(
        self,
        endpoint: str,
        headers: Mapping[str, str],
        timeout: float,
        resources: Callable[[int], Mapping[str, Any]],
    ) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ConfigurationError(
                f"runlog export otlp needs OpenTelemetry's OTLP exporter ({exc}); "
                "install it with: pip install 'runlog[otlp]'"
            ) from None
        self.endpoint = redact_url(endpoint)  # for messages
        self._exporter = OTLPSpanExporter(endpoint=endpoint, headers=dict(headers), timeout=timeout)
        self._resource_of = resources
        self._resources: dict[int, Any] = {}
        self._sdk = _Sdk()

    def _resource(self, run_id: int) -> Any:
        if run_id not in self._resources:
            from opentelemetry.sdk.resources import Resource

            self._resources[run_id] = Resource(dict(self._resource_of(run_id)))
        return self._resources[run_id]

    def readable(self, span: SpanData) -> Any:
        """The SDK's ``ReadableSpan`` for ``span``."""
        sdk = self._sdk
        trace = sdk.trace
        context = trace.SpanContext(span.trace_id, span.span_id, False, sdk.flags)
        parent = None
        if span.parent_id is not None:
            parent = trace.SpanContext(span.trace_id, span.parent_id, True, sdk.flags)
        status = sdk.unset
        if span.error is not None:
            status = trace.Status(trace.StatusCode.ERROR, span.error)
        return sdk.ReadableSpan(
            name=span.name,
            context=context,
            parent=parent,
            resource=self._resource(span.run_id),
            attributes=span.attributes,
            events=[sdk.Event(e.name, e.attributes, e.timestamp) for e in span.events],
            kind=sdk.client if span.kind == "CLIENT" else sdk.internal,
            status=status,
            start_time=span.start,
            end_time=span.end,
            instrumentation_scope=sdk.scope,
        )

    def send(
        self,
        spans: Sequence[SpanData],
        progress: Progress,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """Send ``spans`` in batches, in order; raise :class:`ExportError` at the first
        batch the endpoint did not acknowledge (``progress.sent`` counts the ones before).

        A thread of its own sends while this one builds the next batches (what the SDK's
        ``BatchSpanProcessor`` does), so the wait for each answer costs nothing.
        """
        batches: queue.Queue[list[Any] | None] = queue.Queue(maxsize=4)
        failure: list[str] = []
        sender = threading.Thread(
            target=self._sender, args=(batches, progress, on_batch, failure), daemon=True
        )
        sender.start()
        try:
            for start in range(0, len(spans), BATCH):
                if failure:
                    break
                batches.put([self.readable(span) for span in spans[start : start + BATCH]])
        finally:
            batches.put(None)
            sender.join()
        if failure:
            raise ExportError(failure[0])

    def _sender(
        self,
        batches: queue.Queue[list[Any] | None],
        progress: Progress,
        on_batch: Callable[[int], None] | None,
        failure: list[str],
    ) -> None:
        from opentelemetry.sdk.trace.export import SpanExportResult

        while (batch := batches.get()) is not None:
            if failure:
                continue  # drain: the producer stops at its next batch
            try:
                with _listening() as reasons:
                    result = self._exporter.export(batch)
            except Exception as exc:  # the exporter's own fault: report it, never hang
                failure.append(f"exporting to {self.endpoint} failed: {exc!r}")
                continue
            if result is not SpanExportResult.SUCCESS:
                failure.append(_reason(self.endpoint, reasons.messages))
                continue
            progress.sent += len(batch)
            if on_batch is not None:
                on_batch(len(batch))

    def close(self) -> None:
        with _listening():
            self._exporter.shutdown()  # type: ignore[no-untyped-call]


class _Sdk:
    """The OpenTelemetry SDK names a ``ReadableSpan`` is built from, imported once."""

    def __init__(self) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.trace: Any = trace
        self.Event: Any = Event
        self.ReadableSpan: Any = ReadableSpan
        self.flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)
        self.unset = trace.Status(trace.StatusCode.UNSET)
        self.client = trace.SpanKind.CLIENT
        self.internal = trace.SpanKind.INTERNAL
        self.scope = _scope(InstrumentationScope)


def _scope(cls: Any) -> Any:
    from .. import __name__ as package

    try:
        from importlib.metadata import version

        release = version("runlog")
    except Exception:
        release = None
    return cls(package, release)


def _reason(endpoint: str, messages: list[str]) -> str:
    """One line: what the endpoint said (or why it could not be reached)."""
    last = next((m for m in reversed(messages) if "Failed to export" in m), None)
    transient = next((m for m in reversed(messages) if "Transient error" in m), None)
    if last and "code: None" not in last and "timeout" not in last:
        detail = last.split("batch", 1)[-1].strip()
        return f"{endpoint} refused the spans ({detail})"
    cause = transient or last or "no answer"
    if "Transient error" in cause:
        cause = cause.split("Transient error", 1)[1].split(" encountered", 1)[0].strip()
    return f"cannot reach {endpoint}: {_short(cause)}"


def _short(text: str) -> str:
    """The innermost reason of a requests/urllib3 error chain."""
    for marker in ("Errno", "Connection refused", "timed out", "Name or service"):
        at = text.find(marker)
        if at >= 0:
            return text[at:].split("'))", 1)[0].split("))", 1)[0].rstrip("')\"")
    return text[:200]


__all__ = [
    "BATCH",
    "DEFAULT_ENDPOINT",
    "ExportError",
    "Progress",
    "Shipper",
    "parse_headers",
    "resolve_endpoint",
    "service_name",
]
