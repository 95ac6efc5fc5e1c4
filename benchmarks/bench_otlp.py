"""``runlog export otlp`` throughput against the OpenTelemetry SDK exporting its own spans.

* runlog export: ``runlog export otlp`` over a database of 100,000 events (per
  iteration: a span with a plain event and an LLM call inside, and a traced call:
  5 events, 3 spans and 1 span event), timed from the command's start to its end:
  reading the table, mapping, building the SDK's ``ReadableSpan`` objects and sending
  them with OpenTelemetry's OTLP/HTTP exporter, 512 spans a request;
* otel sdk: the same number of spans (the same share with one event) made by the
  SDK's own tracer, ``BatchSpanProcessor`` (512 a batch) with the same OTLP/HTTP
  exporter, timed until ``force_flush()`` returns.

Both send to one local receiver in a process of its own that decodes every request
(``ExportTraceServiceRequest``) and counts the spans, so nothing lost goes unnoticed.
Each repetition is a fresh child process; the contenders take turns.

A second table is the caller-side cost of ``runlog.log_event`` outside and inside a
span (inside, the event records the span's ``span_id``: one ``ContextVar.get`` and a
dict copy).

Run:  .venv/bin/python benchmarks/bench_otlp.py [--events N] [--repeat R] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _common import Summary, child_env, ratio, round_robin, run_json, table, us

SCRIPT = Path(__file__).resolve()
PER_ITERATION = 5  # events: span started + completed, a plain event, llm_call, traced call


# -- the receiver (a child process) ----------------------------------------------------
def serve() -> None:
    """Decode OTLP requests, count spans; GET / answers the count.  Ends at stdin EOF."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    lock = threading.Lock()
    count = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            request = ExportTraceServiceRequest.FromString(body)
            n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            with lock:
                count[0] += n
            self._answer(b"")

        def do_GET(self) -> None:
            with lock:
                self._answer(str(count[0]).encode())

        def _answer(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()


def received(endpoint: str) -> int:
    with urllib.request.urlopen(endpoint) as reply:
        return int(reply.read())


# -- workers ------------------------------------------------------------------------------
def make_db(db: Path, iterations: int) -> None:
    import runlog

    runlog.init(db=str(db), role="bench")

    @runlog.traced_event("bench.call")
    def call() -> None:
        pass

    for i in range(iterations):
        with runlog.span("bench.item", i=i):
            runlog.log_event("bench.note", {"i": i})
            with runlog.llm_call("gpt-4o-mini") as llm:
                llm.record(input_tokens=10, output_tokens=5, finish_reason="stop")
        call()
    runlog.flush()


def work_runlog(db: Path, endpoint: str) -> dict[str, Any]:
    from runlog._cli import main

    t0 = time.perf_counter_ns()
    status = main(["export", "otlp", "--db", str(db), "--endpoint", endpoint, "--json"])
    took = time.perf_counter_ns() - t0
    if status != 0:
        raise SystemExit(status)
    return {"ns": took}


def work_otel(spans: int, endpoint: str) -> dict[str, Any]:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=1 << 22, max_export_batch_size=512)
    )
    tracer = provider.get_tracer("bench")
    t0 = time.perf_counter_ns()
    with tracer.start_as_current_span("process bench"):
        for i in range(spans // 3):
            with tracer.start_as_current_span("bench.item", attributes={"i": i}) as item:
                item.add_event("bench.note", {"i": i})
                with tracer.start_as_current_span("chat gpt-4o-mini") as llm:
                    llm.set_attribute("gen_ai.usage.input_tokens", 10)
                    llm.set_attribute("gen_ai.usage.output_tokens", 5)
            with tracer.start_as_current_span("bench.call"):
                pass
    provider.force_flush(600_000)
    took = time.perf_counter_ns() - t0
    provider.shutdown()
    return {"ns": took}


def work_log_event(db: Path, n: int) -> dict[str, Any]:
    """Caller-side ns per log_event, outside and inside a span (medians of 10 rounds)."""
    import runlog

    runlog.init(db=str(db), role="bench")
    samples: dict[str, list[float]] = {"outside": [], "inside": []}
    payload = {"task_id": 7, "queue": "default"}
    for _ in range(10):
        for where in ("outside", "inside"):
            span = runlog.span("bench.s") if where == "inside" else None
            if span is not None:
                span.__enter__()
            t0 = time.perf_counter_ns()
            for _ in range(n):
                runlog.log_event("bench.e", payload)
            samples[where].append((time.perf_counter_ns() - t0) / n)
            if span is not None:
                span.__exit__(None, None, None)
            runlog.flush()
    return {k: statistics.median(v) for k, v in samples.items()}


# -- the parent -----------------------------------------------------------------------------
def child(*args: str) -> dict[str, Any]:
    return run_json([sys.executable, str(SCRIPT), "--child", *args], env=child_env())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "serve":
            serve()
            return 0
        if kind == "make":
            make_db(Path(rest[0]), int(rest[1]))
            result: dict[str, Any] = {}
        elif kind == "runlog":
            result = work_runlog(Path(rest[0]), rest[1])
        elif kind == "otel":
            result = work_otel(int(rest[0]), rest[1])
        else:
            result = work_log_event(Path(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return 0
    if args.quick:
        args.events, args.repeat = 5_000, 1
    iterations = args.events // PER_ITERATION
    spans = 3 * iterations + 1
    tmp = Path(tempfile.mkdtemp(prefix="bench_otlp_"))
    db = tmp / "export.db"
    child("make", str(db), str(iterations))
    receiver = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--child", "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert receiver.stdout is not None
    endpoint = f"http://127.0.0.1:{receiver.stdout.readline().strip()}"
    times: dict[str, list[float]] = {"runlog export": [], "otel sdk": []}
    lost = False
    try:
        for _, name in round_robin(list(times), args.repeat):
            before = received(endpoint)
            if name == "runlog export":
                ns = child("runlog", str(db), endpoint)["ns"]
            else:
                ns = child("otel", str(spans), endpoint)["ns"]
            got = received(endpoint) - before
            lost |= got != spans
            times[name].append(spans / (ns / 1e9))
        costs = child("log_event", str(tmp / "log.db"), str(20_000 if not args.quick else 2_000))
    finally:
        receiver.communicate("")
    print(f"\n{args.events:,} events -> {spans:,} spans per export, {args.repeat} repetitions\n")
    rows = []
    for name, samples in times.items():
        s = Summary.of(samples)
        rows.append([name, f"{s.median:,.0f}", f"{s.low:,.0f}-{s.high:,.0f}"])
    print(table(["contender", "spans/s (median)", "range"], rows))
    r = statistics.median(times["runlog export"]) / statistics.median(times["otel sdk"])
    print(f"\nrunlog export / otel sdk throughput: {ratio(r)}")
    print(
        f"\nlog_event caller-side: outside a span {us(costs['outside'])} us, "
        f"inside (records span_id) {us(costs['inside'])} us"
    )
    if lost:
        print("FAIL: the receiver did not get every span")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
