"""A minimal supervisor/worker system: the supervisor starts two workers, each logs work.

Run it with ``make demo``.  Every process writes to the SQLite file that RUNLOG_DB
names (default ``runlog.db`` here); afterwards the supervisor prints the process tree
it can rebuild from the ``events`` table alone.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import runlog

WORKER = Path(__file__).with_name("worker.py")


def main() -> None:
    db = os.environ.setdefault("RUNLOG_DB", "runlog.db")
    run_id = runlog.init(role="supervisor", instance_id="supervisor", version="demo")
    print(f"supervisor run {run_id} writing to {db}")
    for seq in (1, 2):
        # No env= needed: the child inherits PARENT_RUN_ID from this process.
        proc = subprocess.Popen([sys.executable, str(WORKER), f"worker-{seq}"])
        runlog.log_event("worker.spawned", {"pid": proc.pid, "instance_id": f"worker-{seq}"})
        proc.wait()
    runlog.flush()
    print_tree(db, run_id)


def print_tree(db: str, root: int) -> None:
    """Print every event of the supervisor's run and of its children, indented by depth."""
    conn = sqlite3.connect(db)
    children = [
        r
        for (r,) in conn.execute(
            "SELECT id FROM events WHERE event_type = 'process.started' AND parent_run_id = ?",
            (root,),
        )
    ]
    for depth, run in [(0, root)] + [(1, c) for c in children]:
        for event_type, payload in conn.execute(
            "SELECT event_type, payload FROM events WHERE run_id = ? ORDER BY id", (run,)
        ):
            fields = json.loads(payload)
            brief = {k: v for k, v in fields.items() if k not in ("argv", "python", "host")}
            print(f"{'    ' * depth}[run {run}] {event_type} {json.dumps(brief)}")
    conn.close()


if __name__ == "__main__":
    main()
