"""The cost of ``runlog.instrument_openai()``: OpenAI client calls with and without it.

The real ``openai`` client calls the stand-in server (``runlog_openai.standin``), run
in a process of its own on 127.0.0.1 so that it does not share the client's GIL:

* call   - ``chat.completions.create`` (not streamed);
* stream - ``chat.completions.create(stream=True)`` of 200 content chunks, read to the
  end (without ``include_usage``, as most callers write it, so runlog counts the
  output with tiktoken when the stream ends).

Modes, which take turns (order rotated each round) inside each child process, on one
client and connection:

* ``uninstrumented``;
* ``llm_call by hand`` (calls only): ``with runlog.llm_call(...)`` around the call and
  ``call.record(usage...)``, what a user writes without the integration; the floor that
  shows what runlog's event itself costs, apart from the integration;
* ``instrumented``: ``instrument_openai()``;
* ``stream_usage``: ``instrument_openai(stream_usage=True)`` (exact usage, no tiktoken;
  the server then adds ``"usage": null`` to every chunk, which the client must parse).

runlog writes with its default background writer into a fresh SQLite file; each block
of calls is timed until ``runlog.flush()`` returns, so every event is in the table.
Target: instrumented time <= 1.05x the uninstrumented time.  Wall time over a socket
between two processes varies by tens of per cent from block to block on a small
machine, so every ratio pairs blocks of the same round (median of the per-round
ratios), and CPU time of the client process (all its threads: runlog's writer too) is
shown beside wall time: the instrumentation adds work, never waiting.

A second measure isolates the stream wrapper: ``next()`` on 200 parsed chunks, through
runlog's observer and bare, in one process; the difference per chunk is what each chunk
costs (the event at the end of the stream is not part of it).

Run:  .venv/bin/python benchmarks/bench_openai.py [--calls N] [--streams M] [--rounds R]
      [--repeat P] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import Summary, positive, ratio, run_json, table

SCRIPT = Path(__file__).resolve()
CHUNKS = 200
REPLY = "ab" * CHUNKS
MESSAGES = [{"role": "user", "content": "Say ab two hundred times."}]
MODEL = "gpt-4o-mini"
BY_HAND = "llm_call by hand"
MODES: dict[str, tuple[str, ...]] = {
    "uninstrumented": ("call", "stream"),
    BY_HAND: ("call",),
    "instrumented": ("call", "stream"),
    "stream_usage": ("call", "stream"),
}
"""Each mode and the kinds of call it is measured with."""
TARGET = 1.05


# -- child: the client side ----------------------------------------------------------------
def _set_mode(mode: str) -> None:
    import runlog

    if mode in ("instrumented", "stream_usage"):
        runlog.instrument_openai(stream_usage=mode == "stream_usage")
    else:
        runlog.uninstrument_openai()


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


def _block(run: Callable[[Any], None], client: Any, n: int) -> list[float]:
    """Wall and CPU nanoseconds per call for ``n`` calls, persisting included."""
    import runlog

    gc.collect()
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    for _ in range(n):
        run(client)
    runlog.flush()
    return [(time.perf_counter_ns() - wall) / n, (time.process_time_ns() - cpu) / n]


def work_client(url: str, db: Path, sizes: dict[str, int], rounds: int) -> dict[str, Any]:
    """Rounds of one block per mode and kind (mode order rotated); the ns of every block."""
    from openai import OpenAI

    import runlog

    runlog.init(db=str(db), role="bench")
    client = OpenAI(base_url=url, api_key="sk-standin", max_retries=0)
    runs = {"call": _call, "stream": _stream}
    modes = list(MODES)
    for mode in modes:  # warm up every path: imports, tokenizer, connection
        _set_mode(mode)
        for kind in MODES[mode]:
            _block(_call_by_hand if mode == BY_HAND else runs[kind], client, 3)
    samples: dict[str, list[list[float]]] = {f"{m} {k}": [] for m in modes for k in MODES[m]}
    for rnd in range(rounds):
        for mode in modes[rnd % len(modes) :] + modes[: rnd % len(modes)]:
            _set_mode(mode)
            for kind in MODES[mode]:
                run = _call_by_hand if mode == BY_HAND else runs[kind]
                samples[f"{mode} {kind}"].append(_block(run, client, sizes[kind]))
    runlog.uninstrument_openai()
    client.close()
    return samples


def work_chunks(rounds: int) -> dict[str, Any]:
    """ns per ``next()`` on 200 parsed chunks, through the observer and bare."""
    from openai.types.chat import ChatCompletionChunk

    import runlog
    from runlog_openai._endpoints import CHAT
    from runlog_openai._patch import PROVIDER
    from runlog_providers._phase import Phase
    from runlog_providers._streams import _observe
    from runlog_providers._tracker import Tracker

    chunks = [ChatCompletionChunk.model_validate(data) for data in _chunk_data()]
    bare: list[float] = []
    observed: list[float] = []
    for _ in range(rounds):
        call = runlog.llm_call(MODEL, messages=MESSAGES, stream=True)
        tracker = Tracker(call, PROVIDER, CHAT, stream=True, capture=False)
        tracker.phase = Phase.STREAMING  # as after the stream was parsed
        bare.append(_next_each(iter(chunks)))
        observed.append(_next_each(_observe(iter(chunks), tracker)))
        tracker.end("closed")
    return {"bare": bare, "observed": observed}


def _next_each(items: Any) -> float:
    """ns per ``next()`` over the 200 items, the stream's end not included."""
    pull = items.__next__
    t0 = time.perf_counter_ns()
    for _ in range(CHUNKS):
        pull()
    return (time.perf_counter_ns() - t0) / CHUNKS


def _chunk_data() -> list[dict[str, Any]]:
    """The 200 content chunks the stand-in streams, as JSON objects."""
    from runlog_openai._standin._behaviour import Behaviour
    from runlog_openai._standin._replies import Exchange, chat_completions

    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    exchange = Exchange(1, body, Behaviour(reply=REPLY, chunks=CHUNKS), int(time.time()))
    events = chat_completions(exchange)
    assert isinstance(events, list)
    return [dict(e.data) for e in events if e.delta]


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


def bench_calls(url: str, tmp: Path, sizes: dict[str, int], repeat: int, rounds: int) -> bool:
    """Children in turn; a table of times and paired ratios; True if the targets are met."""
    blocks: dict[str, list[list[float]]] = {}
    for rep in range(repeat):
        found = child(["--worker", "client", "--url", url, "--db", str(tmp / f"c{rep}.db"),
                       "--calls", str(sizes["call"]), "--streams", str(sizes["stream"]),
                       "--rounds", str(rounds)])  # fmt: skip
        for key, values in found.items():
            blocks.setdefault(key, []).extend(values)
    rows, met = [], True
    for kind in ("call", "stream"):
        base = blocks[f"uninstrumented {kind}"]
        for mode in (m for m in MODES if kind in MODES[m]):
            mine = blocks[f"{mode} {kind}"]
            wall, cpu = (Summary.of([b[i] for b in mine]).median for i in (0, 1))
            row = [f"{kind}: {mode}", f"{wall / 1000:,.1f}", f"{cpu / 1000:,.1f}", "", ""]
            if mode != "uninstrumented":
                wall_x, cpu_x = (_paired(mine, base, i) for i in (0, 1))
                target = None if mode == BY_HAND else TARGET
                met &= target is None or wall_x <= TARGET
                row[3:] = [ratio(wall_x, target), ratio(cpu_x)]
            rows.append(row)
    print(table(["kind: mode", "wall us", "cpu us", "wall ratio", "cpu ratio"], rows))
    _print_differences(blocks)
    print(f"(medians of {len(base)} blocks per mode, each of {sizes['call']} calls or "
          f"{sizes['stream']} streams, timed until runlog.flush() returns; ratios: median "
          "of per-round ratios)")  # fmt: skip
    return met


def _print_differences(blocks: dict[str, list[list[float]]]) -> None:
    """The integration's own share, and the end-to-end CPU per chunk of a stream."""

    def cpu_diff(a: str, b: str) -> float:
        pairs = zip(blocks[a], blocks[b], strict=True)
        return Summary.of([x[1] - y[1] for x, y in pairs]).median / 1000

    print(
        f"\nCPU per call: event by hand {cpu_diff(f'{BY_HAND} call', 'uninstrumented call'):+.1f}"
        f" us, integration {cpu_diff('instrumented call', 'uninstrumented call'):+.1f} us; "
        f"per chunk of a stream, end to end (per-call costs included): "
        f"{cpu_diff('instrumented stream', 'uninstrumented stream') / CHUNKS:+.2f} us"
    )


def _paired(mine: list[list[float]], base: list[list[float]], index: int) -> float:
    """Median of per-round ratios (blocks of the same round were measured side by side)."""
    return Summary.of([m[index] / b[index] for m, b in zip(mine, base, strict=True)]).median


def bench_chunks(rounds: int) -> None:
    found = child(["--worker", "chunks", "--rounds", str(rounds)])
    bare, observed = Summary.of(found["bare"]), Summary.of(found["observed"])
    rows = [
        ["bare iterator", f"{bare.median / 1000:.3f}", ""],
        ["runlog observer", f"{observed.median / 1000:.3f}", ratio(observed.median / bare.median)],
    ]
    print(table(["next() per chunk", "median us", "ratio"], rows))
    per_chunk = (observed.median - bare.median) / 1000
    print(f"\nstream wrapper overhead: {per_chunk:.2f} us per chunk ({rounds} rounds of {CHUNKS})")


def header(sizes: dict[str, int], repeat: int, rounds: int) -> None:
    import openai

    import runlog

    print(
        f"runlog {runlog.__version__}, openai {openai.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print(
        f"{repeat} child processes x {rounds} rounds; a block is {sizes['call']} calls "
        f"or {sizes['stream']} streams of {CHUNKS} chunks\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=positive, help="non-streamed calls per block (25)")
    parser.add_argument("--streams", type=positive, help="streams per block (3)")
    parser.add_argument("--rounds", type=positive, help="rounds per child process (30)")
    parser.add_argument("--repeat", type=positive, help="child processes (2)")
    parser.add_argument("--quick", action="store_true", help="tiny run: a smoke test")
    parser.add_argument("--worker", choices=["client", "chunks"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = {"call": args.calls or (5 if args.quick else 25)}
    sizes["stream"] = args.streams or (1 if args.quick else 3)
    rounds = args.rounds or (2 if args.quick else 30)
    if args.worker == "client":
        print(json.dumps(work_client(args.url, args.db, sizes, rounds)), flush=True)
        return 0
    if args.worker == "chunks":
        print(json.dumps(work_chunks(rounds)), flush=True)
        return 0
    repeat = args.repeat or (1 if args.quick else 2)
    header(sizes, repeat, rounds)
    server, url = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="runlog-bench-openai-") as tmp:
            met = bench_calls(url, Path(tmp), sizes, repeat, rounds)
    finally:
        server.terminate()
        server.wait()
    print()
    bench_chunks(50 if args.quick else 2000)
    if not met:
        print(f"\nabove the {TARGET:.2f}x target (see FAIL above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
