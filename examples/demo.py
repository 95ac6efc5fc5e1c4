"""``make demo``: run the example system once, then show what runlog recorded.

The supervisor (examples/supervisor.py) queues 8 tasks and starts 3 workers
(examples/worker.py); the worker that takes the batch's 3rd task dies half-way
through it, and the supervisor re-queues the task and starts a replacement.  Then the
``runlog`` command prints the run tree and the LLM statistics, ``runlog.state``
the state a supervisor derives from the table, and the last line is the
``runlog ui`` command that shows it all in a browser.

Everything goes to the database ``RUNLOG_DB`` names (default: ``runlog.db`` in the
working directory; a ``postgresql://`` URL works too).  It is kept between runs: run
the demo twice and the second supervisor reads back the revision the first promoted.
To start fresh, delete ``runlog.db`` and ``tasks.db`` (the example's task queue).

Offline by default: the supervisor starts a local stand-in for the OpenAI API (and
Anthropic's).  Set ``OPENAI_API_KEY`` (and optionally ``OPENAI_BASE_URL``,
``OPENAI_MODEL``) to call a real endpoint instead.  ``DEMO_PROVIDER=anthropic`` runs
the workers on Anthropic (``ANTHROPIC_API_KEY``, ``ANTHROPIC_MODEL`` for a real one),
``DEMO_PROVIDER=mixed`` half of them; ``runlog tree`` and ``runlog stats`` show what
each run and each model cost.

    python examples/demo.py [--no-crash] [more supervisor options, see supervisor.py -h]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import runlog

SUPERVISOR_SCRIPT = Path(__file__).resolve().with_name("supervisor.py")


def heading(title: str) -> None:
    """Print a section title, before a child process writes below it."""
    print(f"\n=== {title} ===", flush=True)


def runlog_command(*args: str) -> None:
    """Run the ``runlog`` command (``python -m runlog``) on the database RUNLOG_DB names."""
    heading(f"runlog {' '.join(args)}")
    subprocess.run([sys.executable, "-m", "runlog", *args], check=True)


def ui_command() -> str:
    """``runlog``, or the path of the virtualenv's script when it is not on PATH."""
    script = Path(sys.executable).with_name("runlog")
    if shutil.which("runlog") == str(script) or not script.exists():
        return "runlog"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def print_state() -> None:
    """Print what a supervisor derives from the table; reading starts no run of our own."""
    heading("derived state (runlog.state)")
    last = runlog.state.latest_event("process.started", role="supervisor")
    if last is None:
        print("no supervisor has run yet")
        return
    state = {
        "current_good_rev()": runlog.state.current_good_rev(),
        f"worker_instance_seq({last.run_id})": runlog.state.worker_instance_seq(last.run_id),
        "supervisor runs recorded": runlog.state.count_events("process.started", role="supervisor"),
        f"cost({last.run_id}, subtree=True)": _usd(runlog.state.cost(last.run_id, subtree=True)),
    }
    for label, value in state.items():
        print(f"{label:<28} {value}")


def _usd(cost: runlog.state.Cost) -> str:
    unpriced = f" ({cost.unpriced} calls unpriced)" if cost.unpriced else ""
    return f"${cost.usd:.6f} over {cost.calls} calls{unpriced}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the supervisor, then print the run tree, the LLM statistics and the state."""
    parser = argparse.ArgumentParser(description="Run the runlog example system once.")
    parser.add_argument("--no-crash", action="store_true", help="let every worker live")
    args, supervisor_args = parser.parse_known_args(argv)
    os.environ.setdefault("RUNLOG_DB", "runlog.db")  # the supervisor and `runlog` read it

    heading(f"the example system, logging to {os.environ['RUNLOG_DB']}")
    crash = [] if args.no_crash else ["--crash-task", "3"]
    command = [sys.executable, str(SUPERVISOR_SCRIPT), "--workers", "3", "--tasks", "8"]
    code = subprocess.run([*command, *crash, *supervisor_args]).returncode
    if code != 0:
        print(f"the supervisor failed (exit code {code})", file=sys.stderr)
        return code

    runlog_command("tree", "--last", "1")  # the run that just ended
    runlog_command("stats")
    print_state()
    heading("look at it in a browser")
    print(f"{ui_command()} ui --db {shlex.quote(os.environ['RUNLOG_DB'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
