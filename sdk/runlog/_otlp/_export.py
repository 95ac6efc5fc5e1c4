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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigurationError
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
        self.endpoint = endpoint
        self._exporter = OTLPSpanExporter(endpoint=endpoint, headers=dict(headers), timeout=timeout)
        self._resource_of = resources
        self._resources: dict[int, Any] = {}
        self._scope: Any = None

    def _resource(self, run_id: int) -> Any:
        if run_id not in self._resources:
            from opentelemetry.sdk.resources import Resource

            self._resources[run_id] = Resource(dict(self._resource_of(run_id)))
        return self._resources[run_id]

    def _make_scope(self, cls: Any) -> Any:
        self._scope = _scope(cls)
        return self._scope

    def readable(self, span: SpanData) -> Any:
        """The SDK's ``ReadableSpan`` for ``span``."""
        from opentelemetry import trace
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)
        context = trace.SpanContext(span.trace_id, span.span_id, is_remote=False, trace_flags=flags)
        parent = None
        if span.parent_id is not None:
            parent = trace.SpanContext(
                span.trace_id, span.parent_id, is_remote=True, trace_flags=flags
            )
        status = (
            trace.Status(trace.StatusCode.ERROR, span.error)
            if span.error is not None
            else trace.Status(trace.StatusCode.UNSET)
        )
        return ReadableSpan(
            name=span.name,
            context=context,
            parent=parent,
            resource=self._resource(span.run_id),
            attributes=span.attributes,
            events=[Event(e.name, e.attributes, e.timestamp) for e in span.events],
            kind=trace.SpanKind.CLIENT if span.kind == "CLIENT" else trace.SpanKind.INTERNAL,
            status=status,
            start_time=span.start,
            end_time=span.end,
            instrumentation_scope=self._scope or self._make_scope(InstrumentationScope),
        )

    def send(
        self,
        spans: Sequence[SpanData],
        progress: Progress,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """Send ``spans`` in batches, in order; raise :class:`ExportError` at the first
        batch the endpoint did not acknowledge (``progress.sent`` counts the rest)."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        for start in range(0, len(spans), BATCH):
            batch = spans[start : start + BATCH]
            readable = [self.readable(span) for span in batch]
            with _listening() as reasons:
                result = self._exporter.export(readable)
            if result is not SpanExportResult.SUCCESS:
                raise ExportError(_reason(self.endpoint, reasons.messages))
            progress.sent += len(batch)
            if on_batch is not None:
                on_batch(len(batch))

    def close(self) -> None:
        with _listening():
            self._exporter.shutdown()  # type: ignore[no-untyped-call]


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
