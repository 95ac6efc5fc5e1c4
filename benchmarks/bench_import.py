"""What ``import runlog`` and ``runlog tree`` cost a process: whole-process wall time.

Five commands take turns (order rotated every round), each in a fresh interpreter:
a bare ``python -c pass``, ``python -c "import runlog"``, OpenTelemetry's API
(``python -c "import opentelemetry.trace"``), ``python -c "import sqlite3"`` and the
``runlog tree`` command on a demo-like database (a supervisor, four workers with spans
and LLM calls, one dying of an exception: written through runlog's public API in a
temporary folder, no network), its output to a file as in a pipe.  The figure is each
command's median wall time minus the bare interpreter's; the ratios compare runlog
with OpenTelemetry's import, and ``runlog tree`` with ``import sqlite3``.
Then ``-X importtime`` shows where the first event's imports go (the five largest).

The children keep their bytecode (``PYTHONDONTWRITEBYTECODE`` is dropped, the cache
goes to a temporary folder): a machine that installed runlog has it, and compiling
the sources again in every child would be measured instead.

    python benchmarks/bench_import.py [--repeat 40]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Summary, child_env, positive, ratio, record, round_robin, table

COMMANDS = {
    "bare interpreter": "pass",
    "import runlog": "import runlog",
    "import opentelemetry.trace": "import opentelemetry.trace",
    "import sqlite3": "import sqlite3",
}
TREE = "runlog tree (demo db)"
FIRST_EVENT = "import runlog; runlog.log_event('bench.first')"

DEMO_WORKER = """
import sys, runlog
name, crash = sys.argv[1], sys.argv[2] == "crash"
runlog.init(role="worker", instance_id=name, version="1.0")
for task in range(3):
    with runlog.span("task", task_id=task):
        runlog.log_event("task.claimed", {"task_id": task})
        with runlog.llm_call("gpt-4o-mini", provider="openai") as call:
            call.record(input_tokens=42, output_tokens=14)
        if crash:
            raise RuntimeError(f"{name} crashed half-way through task {task}")
"""
DEMO_SUPERVISOR = """
import subprocess, sys, runlog
runlog.init(role="supervisor", instance_id="supervisor", version="1.0")
with runlog.span("supervise"):
    for n, crash in ((1, ""), (2, ""), (3, "crash"), (4, "")):
        runlog.flush()
        subprocess.run([sys.executable, "-c", sys.argv[1], f"worker-{n}", crash],
                       env=runlog.child_env(), stderr=subprocess.DEVNULL)
    runlog.log_event("revision.promoted", {"revision": 1})
"""
"""The demo's shape (examples/demo.py) without its task queue and API stand-in."""


def demo_db(folder: str) -> str:
    """A demo-like database in ``folder``, written by six runlog processes."""
    db = f"{folder}/demo.db"
    env = {**child_env(), "RUNLOG_DB": db}
    subprocess.run([sys.executable, "-c", DEMO_SUPERVISOR, DEMO_WORKER], env=env, check=True)
    return db


def tree_command(db: str) -> list[str]:
    """``runlog tree --db DB``: the console script next to this interpreter if installed."""
    script = Path(sys.executable).with_name("runlog")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "runlog"]
    return [*head, "tree", "--db", db]


def cached_env(cache: str) -> dict[str, str]:
    """The children's environment, keeping their bytecode in ``cache`` (see the docstring)."""
    env = child_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("COLUMNS", None)
    env["PYTHONPYCACHEPREFIX"] = cache
    return env


def wall(cmd: list[str], env: dict[str, str], out: int | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=out)
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
    with tempfile.TemporaryDirectory() as folder:
        samples = measure(folder, args.repeat)
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
    record("import runlog, over a bare interpreter", runlog_ms, 15.0, unit="ms")
    otel = over["import opentelemetry.trace"]
    if otel > 0:
        print(
            "import runlog / import opentelemetry.trace (over bare): "
            + ratio(max(over["import runlog"], 0.0) / otel, 0.5)
        )
        record(
            "import runlog / import opentelemetry.trace",
            max(over["import runlog"], 0.0) / otel,
            0.5,
        )
    tree_ms, sqlite_ms = over[TREE] * 1000, over["import sqlite3"] * 1000
    print(f"{TREE} over bare: {tree_ms:.1f} ms; import sqlite3 over bare: {sqlite_ms:.1f} ms")
    if sqlite_ms > 0:
        print(f"{TREE} / import sqlite3 (over bare): " + ratio(max(tree_ms, 0.0) / sqlite_ms, 2.0))
        record(f"{TREE} / import sqlite3 (over bare)", max(tree_ms, 0.0) / sqlite_ms, 2.0)
    print("\nlargest imports of `import runlog` + the first log_event (-X importtime, ms)")
    print(
        table(
            ["module", "cumulative ms"], [[m, f"{t:.1f}"] for m, t in largest_imports(FIRST_EVENT)]
        )
    )


def measure(folder: str, repeat: int) -> dict[str, list[float]]:
    """Wall times of every command, ``repeat`` rounds, in a fresh interpreter each."""
    commands = {name: [sys.executable, "-c", code] for name, code in COMMANDS.items()}
    commands[TREE] = tree_command(demo_db(folder))
    env = cached_env(f"{folder}/pycache")
    with open(os.devnull, "w") as sink:
        for cmd in commands.values():  # warm the file cache and write the bytecode
            wall(cmd, env, sink.fileno())
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _, name in round_robin(list(commands), repeat):
            samples[name].append(wall(commands[name], env, sink.fileno()))
    shutil.rmtree(f"{folder}/pycache", ignore_errors=True)
    return samples


if __name__ == "__main__":
    main()
