"""What ``import runlog`` costs a process: whole-process wall time over fresh interpreters.

Three commands take turns (order rotated every round), each in a fresh interpreter:
a bare ``python -c pass``, ``python -c "import runlog"`` and OpenTelemetry's API
(``python -c "import opentelemetry.trace"``).  The figure is each command's median wall
time minus the bare interpreter's; the ratio compares runlog with OpenTelemetry.
Then ``-X importtime`` shows where the first event's imports go (the five largest).

    python benchmarks/bench_import.py [--repeat 40]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time

from _common import Summary, child_env, positive, ratio, round_robin, table

COMMANDS = {
    "bare interpreter": "pass",
    "import runlog": "import runlog",
    "import opentelemetry.trace": "import opentelemetry.trace",
}
FIRST_EVENT = "import runlog; runlog.log_event('bench.first')"


def wall(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=child_env(), check=True)
    return time.perf_counter() - start


def largest_imports(code: str, count: int = 5) -> list[tuple[str, float]]:
    """The ``count`` largest cumulative imports below the top level, from -X importtime."""
    with tempfile.TemporaryDirectory() as folder:
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            env={**child_env(), "RUNLOG_DB": f"{folder}/events.db"},
            capture_output=True,
            text=True,
            check=True,
        )
    found: list[tuple[str, float]] = []
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(2)) <= 3:  # top-level imports and their children
            found.append((match.group(3), int(match.group(1)) / 1000))
    return sorted(found, key=lambda item: -item[1])[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=positive, default=40, help="rounds (default 40)")
    args = parser.parse_args()
    for code in COMMANDS.values():  # warm the file cache
        wall(code)
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _, name in round_robin(list(COMMANDS), args.repeat):
        samples[name].append(wall(COMMANDS[name]))
    bare = Summary.of(samples["bare interpreter"]).median
    over = {name: Summary.of(s).median - bare for name, s in samples.items()}
    rows = [
        [name, f"{Summary.of(s).median * 1000:.1f}", f"{over[name] * 1000:+.1f}"]
        for name, s in samples.items()
    ]
    print(f"\nimport cost, whole-process wall time (medians of {args.repeat} fresh interpreters)")
    print(table(["command", "wall ms", "over bare, ms"], rows))
    runlog_ms = over["import runlog"] * 1000
    verdict = "PASS" if runlog_ms <= 15 else "FAIL"
    print(f"import runlog over bare: {runlog_ms:.1f} ms  {verdict} (target <= 15 ms)")
    otel = over["import opentelemetry.trace"]
    if otel > 0:
        print(
            "import runlog / import opentelemetry.trace (over bare): "
            + ratio(max(over["import runlog"], 0.0) / otel, 0.5)
        )
    print("\nlargest imports of `import runlog` + the first log_event (-X importtime, ms)")
    print(
        table(
            ["module", "cumulative ms"], [[m, f"{t:.1f}"] for m, t in largest_imports(FIRST_EVENT)]
        )
    )


if __name__ == "__main__":
    main()
