"""Print the headline rows every benchmark of ``make bench`` recorded, as one table.

Each script appends its figures (see ``_common.record``) to the file named by
``RUNLOG_BENCH_SUMMARY``; this reads that file and prints each row with its median,
range and target, PASS or FAIL.  Exit status 0 always: a missed target is a finding,
not a crash (the scripts themselves exit 1 when an event was lost).

Run:  .venv/bin/python benchmarks/summary.py FILE
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from _common import table


def cell(value: float, unit: str) -> str:
    return f"{value:.2f}x" if unit == "x" else f"{value:,.1f} {unit}"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    path = Path(argv[0])
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for e in entries:
        unit, target, spread = e["unit"], e["target"], e["spread"]
        verdict = "" if target is None else ("PASS" if e["value"] <= target else "FAIL")
        rows.append(
            [
                e["row"],
                cell(e["value"], unit),
                "" if spread is None else f"[{spread[0]:.2f}-{spread[1]:.2f}]",
                "" if target is None else f"<= {cell(target, unit)}",
                verdict,
            ]
        )
    print(f"\nmake bench summary: Python {platform.python_version()}, ", end="")
    print(f"{__import__('os').cpu_count()} CPUs, {platform.machine()}\n")
    print(table(["row", "median", "range", "target", ""], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
