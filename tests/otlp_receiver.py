"""A real OTLP/HTTP traces receiver on 127.0.0.1, for tests and the benchmark.

It decodes the wire protobuf (``ExportTraceServiceRequest``, from ``opentelemetry-proto``)
of every POST to ``/v1/traces`` and keeps the spans as plain dicts.  ``answers`` queues
HTTP statuses to give instead of 200 (a refusal, a transient 503), one per request.
Waiting for spans is on a condition variable, never a sleep.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def value(v: AnyValue) -> Any:
    """An OTLP attribute value as Python."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def attrs(items: Any) -> dict[str, Any]:
    """OTLP ``KeyValue`` list as a dict."""
    return {kv.key: value(kv.value) for kv in items}


def _event(event: Any) -> dict[str, Any]:
    return {"name": event.name, "time": event.time_unix_nano, "attributes": attrs(event.attributes)}


class Receiver:
    """``with Receiver() as r:`` serves on ``r.endpoint`` (a base URL) until the block ends."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.changed:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "status": status}
                    )
                if status == 200 and self.path == "/v1/traces":
                    receiver._take(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString() if status == 200 else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                with receiver.changed:
                    receiver.changed.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _take(self, request: ExportTraceServiceRequest) -> None:
        got = []
        for rs in request.resource_spans:
            resource = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(
                        {
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex() or None,
                            "name": s.name,
                            "kind": KINDS.get(s.kind, str(s.kind)),
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                            "attributes": attrs(s.attributes),
                            "events": [
                                {
                                    "name": e.name,
                                    "time": e.time_unix_nano,
                                    "attributes": attrs(e.attributes),
                                }
                                for e in s.events
                            ],
                            "status": STATUS.get(s.status.code, str(s.status.code)),
                            "status_message": s.status.message,
                            "resource": resource,
                            "scope": ss.scope.name,
                        }
                    )
        with self.changed:
            self.spans += got
            self.changed.notify_all()

    def wait_for(self, test: Callable[[list[dict[str, Any]]], bool], timeout: float) -> bool:
        """Wait until ``test(spans)`` holds (True) or ``timeout`` passes (False)."""
        with self.changed:
            return self.changed.wait_for(lambda: test(self.spans), timeout)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


__all__ = ["Receiver", "attrs", "value"]
