"""What each way of dying costs: events lost to SIGKILL, and how long SIGTERM takes.

A child logs ``work.step`` events (flat out, or paced), recording in a shared memory
page how many ``log_event`` calls have returned.  The parent kills it after a while
and counts the rows in the table: the difference is what the kill lost.

* SIGKILL, batched mode: the queue in memory is lost (README "Lifecycle guarantees").
* SIGKILL, sync mode: nothing ``log_event`` returned is lost.
* SIGTERM, batched mode, flat out: nothing lost; the time from the signal to the
  process's death is the final flush.

    python benchmarks/bench_exit.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import mmap
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Summary, child_env, positive, table

CHILD = """
import mmap, struct, sys, time, runlog
counter_path, sync, rate = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3])
with open(counter_path, "r+b") as f:
    counter = mmap.mmap(f.fileno(), 8)
runlog.init(role="victim", sync=sync)
pause = 1.0 / rate if rate else 0.0
i = 0
next_at = time.monotonic()
while True:
    runlog.log_event("work.step", {"i": i})
    i += 1
    counter[:8] = struct.pack("q", i)
    if pause:
        next_at += pause
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
"""


def one(signum: int, *, sync: bool, rate: float, run_for: float) -> tuple[int, int, float]:
    """Run the child for ``run_for`` seconds, send ``signum``; (logged, lost, seconds to die)."""
    folder = Path(tempfile.mkdtemp(prefix="runlog-bench-exit-"))
    db, counter_path, child = folder / "events.db", folder / "counter", folder / "child.py"
    counter_path.write_bytes(b"\0" * 8)
    child.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(child), str(counter_path), "1" if sync else "0", str(rate)],
        env={**child_env(), "RUNLOG_DB": str(db)},
    )
    with open(counter_path, "r+b") as f:
        counter = mmap.mmap(f.fileno(), 8)
        while struct.unpack("q", counter[:8])[0] == 0:
            time.sleep(0.01)
        time.sleep(run_for)
        sent = time.monotonic()
        proc.send_signal(signum)
        proc.wait(120)
        died = time.monotonic() - sent
        logged = struct.unpack("q", counter[:8])[0]
    conn = sqlite3.connect(db)
    (written,) = conn.execute(
        "SELECT COUNT(*) FROM events WHERE event_type = 'work.step'"
    ).fetchone()
    conn.close()
    for path in folder.iterdir():
        path.unlink()
    os.rmdir(folder)
    return logged, max(logged - written, 0), died


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=positive, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="run time before the signal")
    args = parser.parse_args()
    cases = [
        ("SIGKILL, batched, flat out", signal.SIGKILL, False, 0.0),
        ("SIGKILL, batched, 1,000 events/s", signal.SIGKILL, False, 1000.0),
        ("SIGKILL, sync, flat out", signal.SIGKILL, True, 0.0),
        ("SIGTERM, batched, flat out", signal.SIGTERM, False, 0.0),
    ]
    results: dict[str, list[tuple[int, int, float]]] = {name: [] for name, *_ in cases}
    for _ in range(args.repeat):
        for name, signum, sync, rate in cases:
            results[name].append(one(signum, sync=sync, rate=rate, run_for=args.seconds))
    rows = []
    for name, samples in results.items():
        lost = Summary.of([float(s[1]) for s in samples])
        logged = Summary.of([float(s[0]) for s in samples])
        died = Summary.of([s[2] * 1000 for s in samples])
        rows.append(
            [
                name,
                f"{logged.median:,.0f}",
                f"{lost.median:,.0f} [{lost.low:,.0f}-{lost.high:,.0f}]",
                f"{died.median:,.0f}",
            ]
        )
    print(
        f"\nExit costs (medians of {args.repeat}; child runs {args.seconds:.1f}s before the signal)"
    )
    print(table(["case", "events logged", "events lost [min-max]", "ms to die"], rows))


if __name__ == "__main__":
    main()
