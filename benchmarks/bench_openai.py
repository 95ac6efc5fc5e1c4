"""The cost of ``runlog.instrument_openai()``: OpenAI client calls with and without it,
and beside OpenTelemetry's openai-v2 instrumentation.

Five measures, each contender's work interleaved with the others' in the same run
(order rotated each round), in fresh processes warmed up on calls and streams first
(except the loop-lag probe, whose point is the first counted stream of a process):

1. Over a socket.  The real ``openai`` client calls the stand-in server
   (``runlog_openai.standin``) in a process of its own on 127.0.0.1: ``call`` is
   ``chat.completions.create`` (not streamed), ``stream`` the same with ``stream=True``,
   200 content chunks read to the end, without ``include_usage`` (as most callers write
   it: runlog then counts the output with tiktoken).  Modes: ``uninstrumented``;
   ``llm_call by hand`` (calls only: ``with runlog.llm_call(...)`` and ``call.record``,
   the floor of what runlog's event costs apart from the integration); ``instrumented``
   (``instrument_openai()``); ``stream_usage`` (``instrument_openai(stream_usage=True)``);
   ``openai-v2`` (``OpenAIInstrumentor().instrument()`` with an SDK ``TracerProvider``,
   ``BatchSpanProcessor`` and an exporter that discards).  Each block is timed until
   ``runlog.flush()`` and the span processor's ``force_flush()`` return, so every
   record is out within the timed window; a block spans several of runlog's writer
   intervals (50 ms), so the writer works as it does in a running program rather than
   all at a flush every few calls.  Target: the
   instrumented call <= 1.02x the uninstrumented call (median of per-round ratios; wall
   and CPU of the client process, all its threads, are shown).

2. In memory.  The client's own ``http_client`` with a mock transport returns a canned
   chat completion and a canned 50-chunk stream (without usage, so runlog counts with
   tiktoken; and, as ``stream+usage``, with ``include_usage`` and its usage chunk): no
   sockets, so microseconds show.  Process CPU time (every thread: runlog's writer and
   OpenTelemetry's export thread included, flushes included) per call over the
   uninstrumented client, for runlog and for openai-v2, sync and ``AsyncOpenAI``.
   Each round runs the modes' blocks of one kind back to back; a mode's extra is the
   median of its per-round ratios to the uninstrumented block, times the uninstrumented
   median (the host's speed moves by up to half between seconds; a ratio of
   neighbouring blocks holds, a difference moves with it).
   Target: runlog's extra CPU <= 0.5x openai-v2's, per call and per stream.

3. Loop lag.  An asyncio task sleeps 1 ms in a loop and records how late each wake-up
   is while ``AsyncOpenAI`` streams (mock transport, yielding to the loop between chunks)
   run on the same loop, in fresh processes: with runlog (tiktoken counting, from the
   very first stream, where the encoding is loaded) and uninstrumented.  Printed: max
   and p99 lag, and the max during the first stream.  Target: runlog adds at most 1 ms
   to the max lag (printed, not asserted).

4. The stream wrapper alone: ``next()`` on 200 parsed chunks, through runlog's observer
   and bare, in one process; the difference per chunk is what each chunk costs.
   Target: < 1 us.  (It reaches into runlog's private stream code; when that moves, the
   row says so and the slope of measure 2 — CPU of a 250-chunk stream against a 50-chunk
   one — gives the same figure through the public API.)

5. Python work.  The same in-memory call and 50-chunk stream, counted in Python
   bytecodes executed (``sys.settrace`` with opcode events, on every thread: runlog's
   writer and background thread, OpenTelemetry's export thread), per operation over
   the uninstrumented client.  Deterministic where measure 2 moves with the host: it
   shows what each contender's Python does, not its C work (runlog's SQLite insert
   and JSON, tiktoken in the helper process) nor cache effects.  No target: it
   explains measure 2.

``--profile`` runs cProfile over runlog's mode of measure 2 and prints where its CPU
goes, per call and per stream.

Run:  .venv/bin/python benchmarks/bench_openai.py [--calls N] [--streams M] [--rounds R]
      [--repeat P] [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from _common import (
    Summary,
    discarding_tracer_provider,
    positive,
    ratio,
    record,
    run_json,
    table,
)

SCRIPT = Path(__file__).resolve()
CHUNKS = 200
REPLY = "ab" * CHUNKS
MESSAGES = [{"role": "user", "content": "Say ab two hundred times."}]
MODEL = "gpt-4o-mini"
BY_HAND = "llm_call by hand"
OTEL = "openai-v2"
MODES: dict[str, tuple[str, ...]] = {
    "uninstrumented": ("call", "stream"),
    BY_HAND: ("call",),
    "instrumented": ("call", "stream"),
    "stream_usage": ("call", "stream"),
    OTEL: ("call", "stream"),
}
"""Each mode of measure 1 and the kinds of call it is measured with."""
CALL_TARGET = 1.02
"""Measure 1: instrumented / uninstrumented non-streamed call."""
CPU_TARGET = 0.5
"""Measure 2: runlog's extra CPU / openai-v2's."""
LAG_TARGET_MS = 1.0
"""Measure 3: what runlog may add to the loop's max lag."""
CHUNK_TARGET_US = 1.0
"""Measure 4: the stream wrapper's cost per chunk."""
MOCK_CHUNKS = 50
LONG_CHUNKS = 250
MOCK_MODES = ("uninstrumented", "runlog", OTEL)
SYNC_KINDS = ("call", "stream", "stream+usage", "long stream")
ASYNC_KINDS = ("async call", "async stream")


def _otel_available() -> bool:
    return importlib.util.find_spec("opentelemetry.instrumentation.openai_v2") is not None


# -- child: switching instrumentations -------------------------------------------------
class Switch:
    """Puts one instrumentation in place at a time: none, runlog's, or openai-v2."""

    def __init__(self) -> None:
        self.mode = "uninstrumented"
        self._processor: Any = None
        self._instrumentor: Any = None

    def set(self, mode: str) -> None:
        import runlog

        if mode == self.mode:
            return
        if self.mode == OTEL:
            self._instrumentor.uninstrument()
        runlog.uninstrument_openai()
        if mode in ("instrumented", "runlog", "stream_usage"):
            runlog.instrument_openai(stream_usage=mode == "stream_usage")
        elif mode == OTEL:
            if self._instrumentor is None:
                from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

                provider, self._processor = discarding_tracer_provider()
                self._instrumentor = OpenAIInstrumentor()
                self._provider = provider
            self._instrumentor.instrument(tracer_provider=self._provider)
        self.mode = mode

    def flush(self) -> None:
        """What each contender pays to have its record out: runlog's flush, the spans'."""
        import runlog

        runlog.flush()
        if self._processor is not None:
            self._processor.force_flush()


# -- child, measure 1: the socket ----------------------------------------------------------
def _call(client: Any) -> None:
    client.chat.completions.create(model=MODEL, messages=MESSAGES)


def _call_by_hand(client: Any) -> None:
    import runlog

    with runlog.llm_call(MODEL, messages=MESSAGES) as call:
        reply = client.chat.completions.create(model=MODEL, messages=MESSAGES)
        call.record(
            input_tokens=reply.usage.prompt_tokens,
            output_tokens=reply.usage.completion_tokens,
            finish_reason=reply.choices[0].finish_reason,
            response_model=reply.model,
            request_id=reply._request_id,
        )


def _stream(client: Any) -> None:
    for _ in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
        pass


def _block(run: Callable[[Any], None], client: Any, n: int, switch: Switch) -> list[float]:
    """Wall and CPU nanoseconds per call for ``n`` calls, persisting included."""
    gc.collect()
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    for _ in range(n):
        run(client)
    switch.flush()
    return [(time.perf_counter_ns() - wall) / n, (time.process_time_ns() - cpu) / n]


def work_client(
    url: str, db: Path, sizes: dict[str, int], rounds: int, modes: list[str]
) -> dict[str, Any]:
    """Rounds of one block per mode and kind (mode order rotated); the ns of every block."""
    from openai import OpenAI

    import runlog

    runlog.init(db=str(db), role="bench")
    client = OpenAI(base_url=url, api_key="sk-standin", max_retries=0)
    runs = {"call": _call, "stream": _stream}
    switch = Switch()
    for mode in modes:  # warm up every path: imports, tokenizer, connection
        switch.set(mode)
        for kind in MODES[mode]:
            _block(_call_by_hand if mode == BY_HAND else runs[kind], client, 3, switch)
    samples: dict[str, list[list[float]]] = {f"{m} {k}": [] for m in modes for k in MODES[m]}
    for rnd in range(rounds):
        for mode in _rotated(modes, rnd):
            switch.set(mode)
            for kind in MODES[mode]:
                run = _call_by_hand if mode == BY_HAND else runs[kind]
                samples[f"{mode} {kind}"].append(_block(run, client, sizes[kind], switch))
    switch.set("uninstrumented")
    client.close()
    return samples


def _rotated(names: list[str], rnd: int) -> list[str]:
    shift = rnd % len(names)
    return names[shift:] + names[:shift]


# -- child, measure 2 and 3: the in-memory transport -------------------------------------
def _httpx() -> ModuleType:
    """The httpx the installed ``openai`` is built on (``httpx`` or its successor)."""
    import openai

    base = openai.DefaultHttpxClient.__mro__[1]
    return importlib.import_module(base.__module__.partition(".")[0])


def _completion_body() -> bytes:
    reply = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ab" * MOCK_CHUNKS},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 14, "completion_tokens": MOCK_CHUNKS, "total_tokens": 64},
    }
    return json.dumps(reply).encode()


def _stream_events(chunks: int, usage: bool) -> list[bytes]:
    """The server-sent events of a stream of ``chunks`` content chunks, as OpenAI sends it."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000}
    base["model"] = MODEL

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            **base,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage:
            data["usage"] = None
        return data

    items = [chunk({"role": "assistant", "content": ""})]
    items += [chunk({"content": "ab"}) for _ in range(chunks)]
    items.append(chunk({}, "stop"))
    if usage:
        total = {"prompt_tokens": 14, "completion_tokens": chunks, "total_tokens": 14 + chunks}
        items.append({**base, "choices": [], "usage": total})
    events = [b"data: " + json.dumps(item).encode() + b"\n\n" for item in items]
    return [*events, b"data: [DONE]\n\n"]


class Canned:
    """The mock transport's handler: canned bodies chosen by what the request asks for."""

    def __init__(self, httpx: ModuleType, *, paced: bool = False) -> None:
        self.httpx = httpx
        self.paced = paced
        self.completion = _completion_body()
        self.streams = {
            (n, usage): _stream_events(n, usage)
            for n in (MOCK_CHUNKS, LONG_CHUNKS)
            for usage in (False, True)
        }

    def __call__(self, request: Any) -> Any:
        body = json.loads(request.content)
        if not body.get("stream"):
            return self.httpx.Response(
                200, content=self.completion, headers={"content-type": "application/json"}
            )
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        n = LONG_CHUNKS if body.get("max_tokens") == LONG_CHUNKS else MOCK_CHUNKS
        events = self.streams[(n, usage)]
        content: Any = _paced(events) if self.paced else b"".join(events)
        return self.httpx.Response(
            200, content=content, headers={"content-type": "text/event-stream"}
        )


async def _paced(events: list[bytes]) -> Any:
    """The events one by one, yielding to the loop in between, as a network would."""
    for event in events:
        await asyncio.sleep(0)
        yield event


def mock_client(*, asynchronous: bool = False, paced: bool = False) -> Any:
    """An OpenAI client whose requests never leave the process."""
    import openai

    httpx = _httpx()
    transport = httpx.MockTransport(Canned(httpx, paced=paced))
    if asynchronous:
        return openai.AsyncOpenAI(
            api_key="sk-mock",
            base_url="http://mock.invalid/v1",
            max_retries=0,
            http_client=httpx.AsyncClient(transport=transport),
        )
    return openai.OpenAI(
        api_key="sk-mock",
        base_url="http://mock.invalid/v1",
        max_retries=0,
        http_client=httpx.Client(transport=transport),
    )


def _mock_run(kind: str) -> Callable[[Any], None]:
    def call(client: Any) -> None:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)

    def stream(client: Any) -> None:
        extra: dict[str, Any] = {}
        if kind == "stream+usage":
            extra["stream_options"] = {"include_usage": True}
        if kind == "long stream":
            extra["max_tokens"] = LONG_CHUNKS
        for _ in client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, **extra
        ):
            pass

    return call if kind == "call" else stream


def _mock_run_async(kind: str) -> Callable[[Any], Awaitable[None]]:
    async def call(client: Any) -> None:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)

    async def stream(client: Any) -> None:
        async for _ in await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True
        ):
            pass

    return call if kind == "async call" else stream


def _cpu_block(run: Callable[[Any], None], client: Any, n: int, switch: Switch) -> float:
    """Process CPU ns per call over ``n`` calls, the flush included."""
    gc.collect()
    cpu = time.process_time_ns()
    for _ in range(n):
        run(client)
    switch.flush()
    return (time.process_time_ns() - cpu) / n


async def _cpu_block_async(
    run: Callable[[Any], Awaitable[None]], client: Any, n: int, switch: Switch
) -> float:
    gc.collect()
    cpu = time.process_time_ns()
    for _ in range(n):
        await run(client)
    switch.flush()
    return (time.process_time_ns() - cpu) / n


def work_mock(db: Path, sizes: dict[str, int], rounds: int, modes: list[str]) -> dict[str, Any]:
    """CPU ns per call of every mode and kind, one block each per round (order rotated)."""
    import runlog

    runlog.init(db=str(db), role="bench")
    switch = Switch()
    sync_client = mock_client()
    samples: dict[str, list[float]] = {}

    def n_of(kind: str) -> int:
        if kind == "long stream":
            return max(1, sizes["stream"] // 3)
        return sizes["call"] if "call" in kind else sizes["stream"]

    # The modes' blocks of one kind run back to back: the machine's speed, which can
    # change by half from one second to the next on a shared host, is then the same
    # for the blocks a round compares (see bench_mock's per-round ratios).
    for warm in (True, False):
        for rnd in range(2 if warm else rounds):
            for kind in SYNC_KINDS:
                for mode in _rotated(modes, rnd):
                    switch.set(mode)
                    ns = _cpu_block(_mock_run(kind), sync_client, n_of(kind), switch)
                    if not warm:
                        samples.setdefault(f"{mode} {kind}", []).append(ns)

    async def async_rounds() -> None:
        client = mock_client(asynchronous=True)
        for warm in (True, False):
            for rnd in range(2 if warm else rounds):
                for kind in ASYNC_KINDS:
                    for mode in _rotated(modes, rnd):
                        switch.set(mode)
                        run = _mock_run_async(kind)
                        ns = await _cpu_block_async(run, client, n_of(kind), switch)
                        if not warm:
                            samples.setdefault(f"{mode} {kind}", []).append(ns)
        await client.close()

    asyncio.run(async_rounds())
    switch.set("uninstrumented")
    return samples


def work_lag(db: Path, mode: str, streams: int) -> dict[str, Any]:
    """Wake-up lateness of a 1 ms sleeper while ``streams`` async streams run on its loop."""
    import runlog

    runlog.init(db=str(db), role="bench")
    if mode == "runlog":
        runlog.instrument_openai()
    client = mock_client(asynchronous=True, paced=True)
    run = _mock_run_async("async stream")

    async def main() -> dict[str, Any]:
        wakes: list[tuple[float, float]] = []  # (time, lateness s)
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                wakes.append((now, now - t0 - 0.001))

        task = asyncio.create_task(probe())
        await asyncio.sleep(0.02)
        windows = []
        for _ in range(streams):
            start = time.perf_counter()
            await run(client)
            windows.append((start, time.perf_counter()))
            await asyncio.sleep(0.005)  # the end-of-stream work of another thread shows here
        stop.set()
        await task
        await client.close()
        begin, first_end = windows[0]
        during = [lag for t, lag in wakes if t >= begin]
        first = [lag for t, lag in wakes if begin <= t <= first_end + 0.002]
        later = [lag for t, lag in wakes if t > first_end + 0.002]
        return {
            "max_ms": max(during) * 1000,
            "p99_ms": _percentile(during, 0.99) * 1000,
            "first_max_ms": max(first or [0.0]) * 1000,
            "later_max_ms": max(later or [0.0]) * 1000,
            "wakes": len(during),
        }

    found = asyncio.run(main())
    runlog.flush()
    return found


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def work_profile(db: Path, n: int) -> None:
    """cProfile of runlog's mode on the mock transport: where its CPU goes per call."""
    import cProfile
    import pstats

    import runlog

    runlog.init(db=str(db), role="bench")
    switch = Switch()
    client = mock_client()
    switch.set("runlog")
    for kind in ("call", "stream"):
        _cpu_block(_mock_run(kind), client, 20, switch)  # warm: imports, tokenizer
        profiler = cProfile.Profile()
        profiler.enable()
        _cpu_block(_mock_run(kind), client, n, switch)
        profiler.disable()
        stats = pstats.Stats(profiler)
        print(f"\n== runlog, {kind} (mock transport), {n} calls: us per call, runlog's code only")
        _print_runlog_stats(stats, n)
    switch.set("uninstrumented")


def _print_runlog_stats(stats: Any, n: int) -> None:
    """The runlog functions by cumulative and by own time, in us per call."""
    rows = []
    for (path, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():
        if "runlog" not in path:
            continue
        where = f"{Path(path).parent.name}/{Path(path).name}:{line} {name}"
        rows.append((where, calls / n, tottime * 1e6 / n, cumtime * 1e6 / n))
    for title, key in (("cumulative", 3), ("own time", 2)):
        top = sorted(rows, key=lambda r: r[key], reverse=True)[:15]
        cells = [[w, f"{c:.1f}", f"{t:.1f}", f"{cu:.1f}"] for w, c, t, cu in top]
        print(f"-- by {title}")
        print(table(["function", "calls/op", "own us/op", "cum us/op"], cells))


# -- child, measure 5: bytecodes ----------------------------------------------------------
def work_ops(db: Path, n: int, modes: list[str]) -> dict[str, Any]:
    """Bytecodes executed per call and per stream, every thread, for each mode."""
    import threading

    counting = [False]
    executed = [0]

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode" and counting[0]:
            executed[0] += 1
        return tracer

    threading.settrace(tracer)  # runlog's and OpenTelemetry's threads, started from here on
    os.environ["RUNLOG_FLUSH_INTERVAL"] = "10"  # no idle wake-ups: the flush writes
    import runlog

    runlog.init(db=str(db), role="bench")
    switch = Switch()
    client = mock_client()
    found: dict[str, float] = {}
    for mode in modes:
        switch.set(mode)
        for kind in ("call", "stream"):
            run = _mock_run(kind)
            for _ in range(5):  # warm: imports, the tokenizer, first-use caches
                run(client)
            switch.flush()
            time.sleep(0.2)
            sys.settrace(tracer)
            executed[0], counting[0] = 0, True
            for _ in range(n):
                run(client)
            switch.flush()
            time.sleep(0.2)  # background work that follows the flush (none expected)
            counting[0] = False
            sys.settrace(None)
            found[f"{mode} {kind}"] = executed[0] / n
    switch.set("uninstrumented")
    return found


# -- child, measure 4: the stream wrapper --------------------------------------------------
def work_chunks(rounds: int) -> dict[str, Any]:
    """ns per ``next()`` on 200 parsed chunks, through the observer and bare."""
    try:
        from openai.types.chat import ChatCompletionChunk

        import runlog
        from runlog_openai._endpoints import CHAT
        from runlog_openai._patch import PROVIDER
        from runlog_providers._phase import Phase
        from runlog_providers._streams import _observe
        from runlog_providers._tracker import Tracker
    except ImportError as exc:
        return {"skipped": f"runlog's private stream code moved ({exc})"}

    chunks = [ChatCompletionChunk.model_validate(data) for data in _chunk_data()]
    bare: list[float] = []
    observed: list[float] = []
    try:
        for _ in range(rounds):
            call = runlog.llm_call(MODEL, messages=MESSAGES, stream=True)
            tracker = Tracker(call, PROVIDER, CHAT, stream=True, capture=False)
            tracker.phase = Phase.STREAMING  # as after the stream was parsed
            bare.append(_next_each(iter(chunks)))
            observed.append(_next_each(_observe(iter(chunks), tracker)))
            tracker.end("closed")
    except (TypeError, AttributeError) as exc:
        return {"skipped": f"runlog's private stream code changed ({exc})"}
    return {"bare": bare, "observed": observed}


def _next_each(items: Iterator[Any]) -> float:
    """ns per ``next()`` over the 200 items, the stream's end not included."""
    pull = items.__next__
    t0 = time.perf_counter_ns()
    for _ in range(CHUNKS):
        pull()
    return (time.perf_counter_ns() - t0) / CHUNKS


def _chunk_data() -> list[dict[str, Any]]:
    """200 content chunks as the server sends them, as JSON objects."""
    events = _stream_events(CHUNKS, usage=False)[1:-2]
    return [json.loads(e.removeprefix(b"data: ")) for e in events]


# -- parent: server, children, tables --------------------------------------------------
def start_server() -> tuple[subprocess.Popen[str], str]:
    """The stand-in in its own process; its base URL."""
    server = subprocess.Popen(
        [sys.executable, "-m", "runlog_openai.standin", "--reply", REPLY, "--chunks", str(CHUNKS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


def child(args: list[str]) -> dict[str, Any]:
    return run_json([sys.executable, str(SCRIPT), *args])


def bench_calls(
    url: str, tmp: Path, sizes: dict[str, int], repeat: int, rounds: int, modes: list[str]
) -> bool:
    """Measure 1: children in turn; a table of times and paired ratios; True if met."""
    blocks: dict[str, list[list[float]]] = {}
    for rep in range(repeat):
        found = child(["--worker", "client", "--url", url, "--db", str(tmp / f"c{rep}.db"),
                       "--calls", str(sizes["call"]), "--streams", str(sizes["stream"]),
                       "--rounds", str(rounds), "--modes", ",".join(modes)])  # fmt: skip
        for key, values in found.items():
            blocks.setdefault(key, []).extend(values)
    rows, met = [], True
    for kind in ("call", "stream"):
        base = blocks[f"uninstrumented {kind}"]
        for mode in (m for m in modes if kind in MODES[m]):
            mine = blocks[f"{mode} {kind}"]
            wall, cpu = (Summary.of([b[i] for b in mine]).median for i in (0, 1))
            row = [f"{kind}: {mode}", f"{wall / 1000:,.1f}", f"{cpu / 1000:,.1f}", "", ""]
            if mode != "uninstrumented":
                wall_x, cpu_x = (_paired(mine, base, i) for i in (0, 1))
                target = CALL_TARGET if (mode, kind) == ("instrumented", "call") else None
                met &= target is None or wall_x <= target
                row[3:] = [ratio(wall_x, target), ratio(cpu_x, target)]
                if target is not None:
                    record(
                        f"OpenAI {kind} over a socket: instrumented / uninstrumented",
                        wall_x,
                        target,
                    )
            rows.append(row)
    print("1. over a socket, against the stand-in (wall and CPU per call, flush included)")
    print(table(["kind: mode", "wall us", "cpu us", "wall ratio", "cpu ratio"], rows))
    _print_differences(blocks, modes)
    print(f"(medians of {len(base)} blocks per mode, each of {sizes['call']} calls or "
          f"{sizes['stream']} streams of {CHUNKS} chunks; ratios: median of per-round "
          "ratios)")  # fmt: skip
    return met


def _print_differences(blocks: dict[str, list[list[float]]], modes: list[str]) -> None:
    """The integration's own share, and the end-to-end CPU per chunk of a stream."""

    def cpu_diff(a: str, b: str) -> float:
        pairs = zip(blocks[a], blocks[b], strict=True)
        return Summary.of([x[1] - y[1] for x, y in pairs]).median / 1000

    base = "uninstrumented call"
    parts = [
        f"event by hand {cpu_diff(f'{BY_HAND} call', base):+.1f} us",
        f"runlog {cpu_diff('instrumented call', base):+.1f} us",
    ]
    if OTEL in modes:
        parts.append(f"openai-v2 {cpu_diff(f'{OTEL} call', base):+.1f} us")
    per_chunk = cpu_diff("instrumented stream", "uninstrumented stream") / CHUNKS
    print(
        f"\nCPU per call: {', '.join(parts)}; runlog per chunk of a stream, end to end "
        f"(per-call costs included): {per_chunk:+.2f} us"
    )


def _paired(mine: list[list[float]], base: list[list[float]], index: int) -> float:
    """Median of per-round ratios (blocks of the same round were measured side by side)."""
    return Summary.of([m[index] / b[index] for m, b in zip(mine, base, strict=True)]).median


def bench_mock(
    tmp: Path, sizes: dict[str, int], repeat: int, rounds: int, modes: list[str]
) -> tuple[bool, float | None]:
    """Measure 2: extra CPU per call over the uninstrumented client; True if met."""
    samples: dict[str, list[float]] = {}
    for rep in range(repeat):
        found = child(["--worker", "mock", "--db", str(tmp / f"m{rep}.db"),
                       "--calls", str(sizes["mock call"]), "--streams", str(sizes["mock stream"]),
                       "--rounds", str(rounds), "--modes", ",".join(modes)])  # fmt: skip
        for key, values in found.items():
            samples.setdefault(key, []).extend(values)

    def extra(mode: str, kind: str) -> float:
        """us over the uninstrumented client: the median of the per-round ratios, times
        the uninstrumented median.  A ratio of two blocks run back to back holds when
        the host's speed moves between rounds; a difference would move with it."""
        base = samples[f"uninstrumented {kind}"]
        pairs = zip(samples[f"{mode} {kind}"], base, strict=True)
        ratio_ = statistics.median(m / b for m, b in pairs)
        return (ratio_ - 1) * statistics.median(base) / 1000

    rows, met = [], True
    kinds = [*SYNC_KINDS[:3], "call + stream", *ASYNC_KINDS, "async call + stream"]
    for kind in kinds:
        parts = kind.split(" + ")
        if len(parts) == 2:  # a call and a stream: the row
            prefix = "async " if kind.startswith("async") else ""
            parts = [parts[0], prefix + parts[1] if prefix else parts[1]]
        base = sum(statistics.median(samples[f"uninstrumented {k}"]) for k in parts) / 1000
        mine = sum(extra("runlog", k) for k in parts)
        row = [kind, f"{base:,.1f}", f"{mine:+,.1f}", "", ""]
        if OTEL in modes:
            theirs = sum(extra(OTEL, k) for k in parts)
            x = mine / theirs if theirs > 0 else float("inf")
            met &= x <= CPU_TARGET
            verdict = ratio(x, CPU_TARGET) if theirs > 0 else "n/a (too noisy: repeat)"
            row[3:] = [f"{theirs:+,.1f}", verdict]
            if len(parts) == 2:
                record(f"OpenAI CPU, {kind}: runlog / openai-v2 (in memory)", x, CPU_TARGET)
        rows.append(row)
    print(f"2. in memory (mock transport; CPU per call, all threads, flush included; streams "
          f"of {MOCK_CHUNKS} chunks)")  # fmt: skip
    headers = ["kind", "uninstr. us", "runlog +us", "openai-v2 +us", "runlog / openai-v2"]
    print(table(headers, rows))
    slope = (extra("runlog", "long stream") - extra("runlog", "stream")) / (
        LONG_CHUNKS - MOCK_CHUNKS
    )
    print(f"(medians of {len(samples['uninstrumented call'])} blocks per mode and kind, each "
          f"of {sizes['mock call']} calls or {sizes['mock stream']} streams; +us: median of "
          "per-round ratios to the uninstrumented client, times its median)")  # fmt: skip
    print(f"runlog per chunk, from a {LONG_CHUNKS}- against a {MOCK_CHUNKS}-chunk stream: "
          f"{slope:+.2f} us")  # fmt: skip
    return met, slope


def bench_ops(tmp: Path, n: int, modes: list[str]) -> None:
    """Measure 5: bytecodes per operation over the uninstrumented client."""
    found = child(["--worker", "ops", "--db", str(tmp / "ops.db"), "--calls", str(n),
                   "--modes", ",".join(["uninstrumented", *modes])])  # fmt: skip
    rows = []
    extra: dict[str, dict[str, float]] = {}
    for kind in ("call", "stream"):
        base = found[f"uninstrumented {kind}"]
        extra[kind] = {m: found[f"{m} {kind}"] - base for m in modes}
    extra["call + stream"] = {m: extra["call"][m] + extra["stream"][m] for m in modes}
    for kind, by_mode in extra.items():
        base = sum(found[f"uninstrumented {k}"] for k in kind.split(" + "))
        row = [kind, f"{base:,.0f}", *(f"{by_mode[m]:+,.0f}" for m in modes)]
        if OTEL in modes and by_mode[OTEL] > 0:
            row.append(f"{by_mode['runlog'] / by_mode[OTEL]:.2f}x")
        rows.append(row)
    print(f"5. Python work: bytecodes executed per operation, every thread, in memory "
          f"({n} of each; deterministic: C work and caches not included)")  # fmt: skip
    headers = ["kind", "uninstr.", *(f"{m} +" for m in modes)]
    if OTEL in modes:
        headers.append("runlog / openai-v2")
    print(table(headers, rows))
    if OTEL in modes and extra["call + stream"][OTEL] > 0:
        x = extra["call + stream"]["runlog"] / extra["call + stream"][OTEL]
        record("OpenAI Python bytecodes, call + stream: runlog / openai-v2", x, None)


def bench_lag(tmp: Path, repeat: int, streams: int) -> None:
    """Measure 3: fresh processes, alternating; the medians of their max and p99 lag."""
    found: dict[str, list[dict[str, Any]]] = {"uninstrumented": [], "runlog": []}
    for rep, mode in ((r, m) for r in range(repeat) for m in _rotated(list(found), r)):
        db = str(tmp / f"l{rep}-{mode}.db")
        args = ["--worker", "lag", "--lag-mode", mode, "--db", db, "--streams", str(streams)]
        found[mode].append(child(args))
    rows = []
    medians: dict[str, dict[str, float]] = {}
    for mode, results in found.items():
        cells = {k: statistics.median(r[k] for r in results) for k in results[0]}
        worst = max(r["max_ms"] for r in results)
        medians[mode] = cells
        rows.append([mode, f"{cells['max_ms']:.2f}", f"{worst:.2f}", f"{cells['p99_ms']:.2f}",
                     f"{cells['first_max_ms']:.2f}", f"{cells['later_max_ms']:.2f}"])  # fmt: skip
    print(f"3. loop lag: a 1 ms sleeper's lateness while AsyncOpenAI streams {streams} streams "
          f"of {MOCK_CHUNKS} chunks on its loop, from the first (fresh processes)")  # fmt: skip
    headers = ["mode", "max ms", "worst max ms", "p99 ms", "1st stream max", "later max"]
    print(table(headers, rows))
    added = medians["runlog"]["max_ms"] - medians["uninstrumented"]["max_ms"]
    later = medians["runlog"]["later_max_ms"] - medians["uninstrumented"]["later_max_ms"]
    verdict = "PASS" if added <= LAG_TARGET_MS else "FAIL"
    record("AsyncOpenAI streams: max loop lag added by runlog", added, LAG_TARGET_MS, unit="ms")
    print(f"runlog adds {added:+.2f} ms to the max lag  {verdict} (target <= "
          f"+{LAG_TARGET_MS:.2f} ms; medians over {repeat} processes per mode); "
          f"after the first stream: {later:+.2f} ms")  # fmt: skip


def bench_chunks(rounds: int, slope: float | None) -> None:
    """Measure 4: the stream wrapper per chunk."""
    found = child(["--worker", "chunks", "--rounds", str(rounds)])
    print("4. stream wrapper, next() per parsed chunk")
    if "skipped" in found:
        print(f"skipped: {found['skipped']}")
        if slope is not None:
            verdict = "PASS" if slope < CHUNK_TARGET_US else "FAIL"
            print(f"from measure 2's slope: {slope:+.2f} us per chunk  {verdict} (target < "
                  f"{CHUNK_TARGET_US:.2f} us)")  # fmt: skip
        return
    bare, observed = Summary.of(found["bare"]), Summary.of(found["observed"])
    rows = [
        ["bare iterator", f"{bare.median / 1000:.3f}", ""],
        ["runlog observer", f"{observed.median / 1000:.3f}", ratio(observed.median / bare.median)],
    ]
    print(table(["next() per chunk", "median us", "ratio"], rows))
    per_chunk = (observed.median - bare.median) / 1000
    verdict = "PASS" if per_chunk < CHUNK_TARGET_US else "FAIL"
    record("OpenAI stream wrapper per chunk", per_chunk, CHUNK_TARGET_US, unit="us")
    print(f"stream wrapper overhead: {per_chunk:.2f} us per chunk  {verdict} (target < "
          f"{CHUNK_TARGET_US:.2f} us; {rounds} rounds of {CHUNKS})")  # fmt: skip


def header(sizes: dict[str, int], repeat: int, rounds: int) -> None:
    import openai

    import runlog

    otel = "not installed (make bench installs the bench extra)"
    if _otel_available():
        from importlib.metadata import version

        otel = version("opentelemetry-instrumentation-openai-v2")
    print(
        f"runlog {runlog.__version__}, openai {openai.__version__} (on {_httpx().__name__}), "
        f"openai-v2 instrumentation {otel}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"{repeat} child processes x {rounds} rounds per measure; a socket block is "
        f"{sizes['call']} calls or {sizes['stream']} streams of {CHUNKS} chunks\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=positive, help="non-streamed calls per block (100)")
    parser.add_argument("--streams", type=positive, help="streams per block (3)")
    parser.add_argument("--rounds", type=positive, help="rounds per child process (20)")
    parser.add_argument("--repeat", type=positive, help="child processes (2; loop lag: 6)")
    parser.add_argument("--quick", action="store_true", help="tiny run: a smoke test")
    parser.add_argument("--profile", action="store_true", help="cProfile runlog's calls")
    parser.add_argument(
        "--worker",
        choices=["client", "mock", "lag", "chunks", "profile", "ops"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--modes", help=argparse.SUPPRESS)
    parser.add_argument("--lag-mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    sizes = {"call": args.calls or (5 if quick else 100)}
    sizes["stream"] = args.streams or (1 if quick else 3)
    rounds = args.rounds or (2 if quick else 20)
    modes = args.modes.split(",") if args.modes else []
    if args.worker == "client":
        print(json.dumps(work_client(args.url, args.db, sizes, rounds, modes)), flush=True)
        return 0
    if args.worker == "mock":
        print(json.dumps(work_mock(args.db, sizes, rounds, modes)), flush=True)
        return 0
    if args.worker == "lag":
        print(json.dumps(work_lag(args.db, args.lag_mode, sizes["stream"])), flush=True)
        return 0
    if args.worker == "chunks":
        print(json.dumps(work_chunks(rounds)), flush=True)
        return 0
    if args.worker == "ops":
        print(json.dumps(work_ops(args.db, sizes["call"], modes)), flush=True)
        return 0
    repeat = args.repeat or (1 if quick else 2)
    if args.worker == "profile":
        work_profile(args.db, sizes["call"])
        return 0
    if args.profile:  # in a child, so that runlog's writer is done before its file goes
        with tempfile.TemporaryDirectory(prefix="runlog-bench-openai-") as tmp:
            db, n = str(Path(tmp) / "p.db"), str(args.calls or (50 if quick else 500))
            cmd = [sys.executable, str(SCRIPT), "--worker", "profile", "--db", db, "--calls", n]
            return subprocess.run(cmd, check=False).returncode
    header(sizes, repeat, rounds)
    otel = [OTEL] if _otel_available() else []
    sizes["mock call"] = 10 if quick else 120
    sizes["mock stream"] = 3 if quick else 20
    met = True
    server, url = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="runlog-bench-openai-") as name:
            tmp = Path(name)
            met &= bench_calls(url, tmp, sizes, repeat, rounds, [*MODES][:4] + otel)
            print()
            mock_rounds = rounds
            mock_modes = [*MOCK_MODES[:2], *otel]
            mock_met, slope = bench_mock(tmp, sizes, repeat, mock_rounds, mock_modes)
            met &= mock_met
            print()
            bench_lag(tmp, args.repeat or (2 if quick else 6), 5 if quick else 20)
    finally:
        server.terminate()
        server.wait()
    print()
    bench_chunks(50 if quick else 2000, slope)
    print()
    with tempfile.TemporaryDirectory(prefix="runlog-bench-openai-") as name:
        bench_ops(Path(name), 3 if quick else 10, ["runlog", *otel])
    if not met:
        print("\nsome targets missed (see FAIL above)")
    if not otel:
        print("\nopenai-v2 not installed: its rows are missing (make bench installs them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
