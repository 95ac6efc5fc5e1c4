"""The ``runlog`` command on databases written by real runlog processes.

Most tests call ``main()`` in this process (fast, output captured as plain text); the
error messages, exit codes and ``tail -f`` run ``python -m runlog`` as a real process.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runlog._cli import main
from runlog._cli._liveness import liveness
from runlog._cli._stats import percentile
from runlog._cli._tail import STALL_S, Follower
from runlog._store import Event

from support import child_env, python, rows, spawn

# A supervisor and three workers: one that works, one whose LLM call and span fail and
# that dies of the exception, one that vanishes without process.exited (os._exit).
SUPERVISOR = '''
import subprocess, sys
import runlog

WORKER_OK = """
import runlog
runlog.init(role="worker", instance_id="worker-1", version="1.0")

@runlog.traced_event("task.claimed")
def claim():
    return 1

claim()
with runlog.span("task", task_id=1):
    with runlog.llm_call("gpt-4o-mini") as call:
        call.record(input_tokens=100, output_tokens=20)
    with runlog.llm_call("gpt-4o", stream=True) as call:
        call.first_token()
        call.record(input_tokens=50, output_tokens=10)
"""
WORKER_FAIL = """
import runlog
runlog.init(role="worker", instance_id="worker-2", version="1.0")
with runlog.span("task", task_id=2):
    with runlog.llm_call("gpt-4o"):
        raise RuntimeError("rate limited")
"""
WORKER_LOST = """
import os, runlog
runlog.init(role="worker", instance_id="worker-3", version="1.0", sync=True)
runlog.log_event("task.claimed", {"task_id": 3})
os._exit(0)
"""
runlog.init(role="supervisor", instance_id="sup-1", version="1.0")
runlog.log_event("revision.promoted", {"revision": "r1"})
for code in (WORKER_OK, WORKER_FAIL, WORKER_LOST):
    runlog.flush()
    subprocess.run([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
'''

Run = Callable[..., tuple[int, str, str]]


def write_scenario(db: str) -> None:
    """Run the supervisor scenario against ``db`` (a path or a URL)."""
    python(SUPERVISOR, None, RUNLOG_DB=db)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database written once by the scenario's four processes (read-only afterwards)."""
    db = tmp_path_factory.mktemp("scenario") / "events.db"
    write_scenario(str(db))
    return db


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """``main(args)`` in this process: (exit status, stdout, stderr), 200 columns wide."""
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def runlog_process(*args: object, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m runlog ARGS`` as a real process, with ``env`` added to a clean one."""
    return subprocess.run(
        [sys.executable, "-m", "runlog", *map(str, args)],
        env=child_env(None, COLUMNS="200", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def tree_json(cli: Run, db: object, *args: object) -> list[dict[str, Any]]:
    code, out, err = cli("tree", "--db", db, "--json", *args)
    assert code == 0, err
    result: list[dict[str, Any]] = json.loads(out)
    return result


def by_instance(nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every run of a JSON tree by instance_id (or role)."""
    out: dict[str, dict[str, Any]] = {}
    for node in nodes:
        out[node["instance_id"] or node["role"]] = node
        out.update(by_instance(node["children"]))
    return out


class TestTree:
    def test_draws_runs_under_their_parents_with_status_and_counts(
        self, cli: Run, scenario: Path
    ) -> None:
        """Each worker hangs under the supervisor with its status, spans, calls and tokens."""
        code, out, err = cli("tree", "--db", scenario)
        assert code == 0 and err == ""
        lines = out.splitlines()
        assert lines[0] == f"sqlite:///{scenario}"
        sup, ok, fail, lost = lines[1:]
        assert sup.startswith("└── #1 supervisor sup-1 · pid ")
        assert " · exited normal · " in sup and " · 3 events" in sup
        assert ok.startswith("    ├── #") and "worker worker-1" in ok
        assert "exited normal" in ok and "7 events · 1 span · 2 LLM calls" in ok
        assert "150 in / 30 out tokens" in ok
        assert "worker worker-2" in fail
        assert "exited exception RuntimeError: rate limited" in fail
        assert "1 span (1 failed) · 1 LLM call (1 failed)" in fail
        assert lost.startswith("    └── #") and "worker worker-3" in lost
        assert " · lost · ≥ " in lost and "no process.exited and the process is gone" in lost

    def test_json_is_the_same_tree(self, cli: Run, scenario: Path) -> None:
        """--json nests the runs as the drawing does, with every count and the exit."""
        (sup,) = tree_json(cli, scenario)
        assert [c["instance_id"] for c in sup["children"]] == ["worker-1", "worker-2", "worker-3"]
        runs = by_instance([sup])
        assert runs["sup-1"]["status"] == "exited" and not runs["sup-1"]["failed"]
        ok = runs["worker-1"]
        assert ok["parent_run_id"] == sup["run_id"] and ok["host"] == socket.gethostname()
        assert (ok["spans"], ok["llm_calls"], ok["input_tokens"], ok["output_tokens"]) == (
            1,
            2,
            150,
            30,
        )
        assert ok["exit"] == {"reason": "normal", "exit_code": 0, "events_dropped": 0}
        fail = runs["worker-2"]
        assert fail["exit"]["reason"] == "exception" and fail["failed"]
        assert (fail["span_failures"], fail["llm_failures"]) == (1, 1)
        lost = runs["worker-3"]
        assert lost["status"] == "lost" and lost["exit"] is None and lost["failed"]

    def test_run_id_draws_only_that_subtree(self, cli: Run, scenario: Path) -> None:
        """tree RUN_ID starts the drawing at that run."""
        worker = by_instance(tree_json(cli, scenario))["worker-2"]
        (only,) = tree_json(cli, scenario, worker["run_id"])
        assert only["instance_id"] == "worker-2" and only["children"] == []
        code, out, _ = cli("tree", "--db", scenario, worker["run_id"])
        assert code == 0 and "worker-1" not in out and "worker-2" in out

    def test_last_keeps_the_most_recent_roots(self, cli: Run, db_path: Path) -> None:
        """-n N draws only the N most recent root runs; without it every root, oldest first."""
        for name in ("first", "second", "third"):
            python(f"import runlog; runlog.init(role='{name}')", db_path)
        assert [r["role"] for r in tree_json(cli, db_path)] == ["first", "second", "third"]
        assert [r["role"] for r in tree_json(cli, db_path, "-n", 2)] == ["second", "third"]

    def test_a_live_run_is_running_then_lost_once_killed(self, cli: Run, db_path: Path) -> None:
        """A run whose process is alive is running; SIGKILLed, it becomes lost."""
        code = "import runlog, sys; runlog.init(sync=True); print('up'); sys.stdin.read()"
        child = spawn(code, db_path)
        assert child.stdout is not None and child.stdout.readline() == "up\n"
        (node,) = tree_json(cli, db_path)
        assert node["status"] == "running" and node["pid"] == child.pid and not node["failed"]
        child.kill()
        child.wait()
        (node,) = tree_json(cli, db_path)
        assert node["status"] == "lost" and node["failed"]

    def test_a_run_on_another_host_is_unknown(self, cli: Run, db_path: Path) -> None:
        """Without process.exited, a run logged on another host cannot be checked: unknown."""
        python("import os, runlog; runlog.init(sync=True, host='elsewhere'); os._exit(0)", db_path)
        (node,) = tree_json(cli, db_path)
        assert node["status"] == "unknown" and "host elsewhere" in node["notes"][0]
        code, out, _ = cli("tree", "--db", db_path)
        assert code == 0 and "unknown · ≥ " in out

    def test_orphans_and_explicit_runs_are_drawn(self, cli: Run, db_path: Path) -> None:
        """A run whose parent is elsewhere is a root; an explicit run_id hangs under its parent."""
        python("import runlog; runlog.init(role='orphan')", db_path, PARENT_RUN_ID="9999")
        python(
            "import runlog; runlog.log_event('task.claimed', {'task_id': 1},"
            " run_id=500, parent_run_id=1)",
            db_path,
        )
        (orphan,) = tree_json(cli, db_path)
        assert orphan["notes"] == ["parent run 9999 is not in this database"]
        (explicit,) = [c for c in orphan["children"] if c["run_id"] == 500]
        assert explicit["role"] is None and explicit["events"] == 1
        assert "explicit run_id" in explicit["notes"][0]

    def test_an_empty_database_has_no_runs(self, cli: Run, db_path: Path) -> None:
        """A runlog database without events says so and exits 0; --json gives []."""
        python(f"import runlog._store as s; s.open_store({str(db_path)!r}).create()")
        code, out, err = cli("tree", "--db", db_path)
        assert (code, out) == (0, "") and "no runs in" in err
        assert tree_json(cli, db_path) == []


class TestLiveness:
    def test_a_live_pid_that_started_after_the_run_was_reused(self) -> None:
        """A live pid whose process began after the run started belongs to another process."""
        if not Path("/proc/self/stat").exists():
            pytest.skip("needs /proc")
        long_ago = 946_684_800 * 10**9  # 2000-01-01
        state, note = liveness(socket.gethostname(), os.getpid(), long_ago)
        assert state == "lost" and note is not None and "newer process" in note

    def test_a_live_pid_older_than_the_run_is_running(self) -> None:
        """This process started before now: a run starting now with its pid is running."""
        assert liveness(socket.gethostname(), os.getpid(), time.time_ns()) == ("running", None)

    def test_other_hosts_and_missing_fields_are_unknown(self) -> None:
        """Another host's pid, or no pid at all, cannot be checked."""
        assert liveness("not-" + socket.gethostname(), os.getpid(), 0)[0] == "unknown"
        assert liveness(socket.gethostname(), None, 0)[0] == "unknown"


class TestTail:
    def test_prints_the_last_n_events_one_line_each(self, cli: Run, scenario: Path) -> None:
        """-n N prints the N newest events, oldest first: time, run, type, payload."""
        code, out, _ = cli("tail", "--db", scenario, "-n", 3)
        lines = out.splitlines()
        assert code == 0 and len(lines) == 3
        assert "#1 sup-1" in lines[-1] and "process.exited" in lines[-1]
        assert lines[-1].endswith("reason=normal exit_code=0 events_dropped=0")
        assert "worker-3" in lines[0] and "process.started" in lines[0]
        assert "task.claimed" in lines[1] and lines[1].endswith("task_id=3")

    def test_filters_by_type_and_run(self, cli: Run, scenario: Path) -> None:
        """--type (repeatable) and --run narrow the events printed."""
        types = ("--type", "llm_call.completed", "--type", "llm_call.failed")
        code, out, _ = cli("tail", "--db", scenario, *types)
        assert code == 0 and len(out.splitlines()) == 3
        assert 'error="rate limited"' in out.splitlines()[-1]
        worker = by_instance(tree_json(cli, scenario))["worker-3"]["run_id"]
        code, out, _ = cli("tail", "--db", scenario, "--run", worker)
        assert [line.split()[4] for line in out.splitlines()] == ["process.started", "task.claimed"]

    def test_json_lines(self, cli: Run, scenario: Path) -> None:
        """--json prints one JSON object per event with the table's columns."""
        code, out, _ = cli("tail", "--db", scenario, "--json", "-n", 2)
        assert code == 0
        events = [json.loads(line) for line in out.splitlines()]
        assert [e["event_type"] for e in events] == ["task.claimed", "process.exited"]
        assert events[0]["payload"] == {"task_id": 3}
        assert set(events[0]) == {
            "id",
            "timestamp",
            "run_id",
            "parent_run_id",
            "event_type",
            "payload",
        }
        assert rows(scenario)[-1]["id"] == events[-1]["id"]

    def test_follow_prints_new_events_until_ctrl_c(self, db_path: Path) -> None:
        """tail -f prints rows as they are committed; SIGINT ends it with status 0."""
        python("import runlog; runlog.log_event('seed.logged', {'n': 0})", db_path)
        proc = subprocess.Popen(
            [sys.executable, "-m", "runlog", "tail", "-f", "--db", str(db_path), "-n", "1"],
            env=child_env(None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = LineReader(proc)
        try:
            assert "process.exited" in lines.next()  # the last existing event
            python("import runlog; runlog.log_event('late.logged', {'n': 1})", db_path)
            got = [lines.next() for _ in range(3)]
            assert ["process.started" in got[0], "late.logged" in got[1]] == [True, True]
            assert "n=1" in got[1] and "process.exited" in got[2]
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
        assert "Traceback" not in err and lines.rest() == []


class LineReader:
    """A child's stdout read line by line on a thread, each line awaited with a deadline."""

    def __init__(self, proc: subprocess.Popen[str], timeout: float = 15.0) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._timeout = timeout
        assert proc.stdout is not None
        stdout = proc.stdout
        threading.Thread(target=self._pump, args=(stdout,), daemon=True).start()

    def _pump(self, stdout: Any) -> None:
        for line in stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next(self) -> str:
        """The next line; fails the test if none comes within the deadline."""
        line = self._lines.get(timeout=self._timeout)
        assert line is not None, "the command ended early"
        return line

    def rest(self) -> list[str]:
        """The lines printed after those read (once the child has ended)."""
        out = []
        while (line := self._lines.get(timeout=self._timeout)) is not None:
            out.append(line)
        return out


class TestFollower:
    """The follower's bookkeeping, driven by hand: ids that appear out of order."""

    def make(self, table: dict[int, str], now: list[float]) -> Follower:
        def ids_after(after: int) -> list[int]:
            return sorted(i for i in table if i > after)

        def fetch(after: int) -> list[Event]:
            return [Event(i, 0, 1, None, table[i], {}) for i in sorted(table) if i > after]

        return Follower(0, ids_after, fetch, clock=lambda: now[0])

    def test_an_id_that_commits_late_is_still_printed_once(self) -> None:
        """Id 2 visible after id 3 (PostgreSQL commit order) is printed when it appears."""
        table, now = {1: "a", 3: "c"}, [0.0]
        follower = self.make(table, now)
        assert [e.id for e in follower.poll()] == [1, 3]
        assert follower.watermark == 1
        table[2] = "b"
        assert [e.id for e in follower.poll()] == [2]
        assert follower.watermark == 3 and follower.poll() == []

    def test_a_gap_that_never_fills_is_given_up(self) -> None:
        """After STALL_S, a missing id (a rolled-back write) no longer holds the watermark."""
        table, now = {1: "a", 3: "c"}, [0.0]
        follower = self.make(table, now)
        follower.poll()
        now[0] = STALL_S / 2
        follower.poll()
        assert follower.watermark == 1
        now[0] = STALL_S + 0.1
        assert follower.poll() == [] and follower.watermark == 3
        table[4] = "d"
        assert [e.id for e in follower.poll()] == [4]


class TestStats:
    CALLS = """
    import runlog
    for ms in range(1, 21):
        runlog.log_event("llm_call.completed", {"model_name": "m1", "latency_ms": ms,
            "input_tokens": 10, "output_tokens": 5, "token_source": "usage", "stream": False})
    for ttft in (30, 10, 20):
        runlog.log_event("llm_call.completed", {"model_name": "m2", "latency_ms": 100,
            "input_tokens": 7, "output_tokens": None, "token_source": "unavailable",
            "stream": True, "time_to_first_token_ms": ttft})
    runlog.log_event("llm_call.completed", {"model_name": "m2", "latency_ms": 50,
        "input_tokens": 3, "output_tokens": 4, "token_source": "tiktoken",
        "counted": ["output_tokens"], "stream": False})
    runlog.log_event("llm_call.failed", {"model_name": "m2", "latency_ms": 9000,
        "error_type": "APITimeoutError", "input_tokens": 99})
    """

    def test_per_model_latency_ttft_tokens_and_sources(self, cli: Run, db_path: Path) -> None:
        """Nearest-rank percentiles over completed calls; TTFT over streams; honest sources."""
        python(self.CALLS, db_path)
        code, out, _ = cli("stats", "--db", db_path, "--json")
        assert code == 0
        m1, m2 = json.loads(out)
        assert m1 == {
            "model": "m1",
            "calls": 20,
            "failures": 0,
            "latency_p50_ms": 10.0,
            "latency_p95_ms": 19.0,
            "latency_max_ms": 20.0,
            "streams": 0,
            "ttft_p50_ms": None,
            "input_tokens": 200,
            "output_tokens": 100,
            "token_sources": {"usage": 20},
            "partly_counted": 0,
            "cached_input_tokens": 0,
            "cache_write_input_tokens": 0,
            "reasoning_tokens": 0,
            "cost_usd": None,
            "unpriced": 20,
            "cost_estimated": 0,
        }
        assert (m2["calls"], m2["failures"], m2["latency_max_ms"]) == (5, 1, 100.0)
        assert (m2["streams"], m2["ttft_p50_ms"]) == (3, 20.0)
        assert (m2["input_tokens"], m2["output_tokens"]) == (24, 4)
        assert m2["token_sources"] == {"unavailable": 3, "tiktoken": 1}
        assert m2["partly_counted"] == 1

    def test_table_for_people(self, cli: Run, scenario: Path) -> None:
        """The table has a row per model with its counts and token sources."""
        code, out, _ = cli("stats", "--db", scenario)
        assert code == 0 and "LLM calls per model" in out
        (mini,) = [line for line in out.splitlines() if "gpt-4o-mini" in line]
        (full,) = [line for line in out.splitlines() if "gpt-4o " in line]
        cells = [c.strip() for c in full.split("│")[1:-1]]
        assert cells[:3] == ["gpt-4o", "2", "1"] and cells[-4:-2] == ["50", "10"]
        assert cells[-1] == "usage 1"
        assert cells[6].endswith("(1)")  # one stream, with its time to first token
        mini_cells = [c.strip() for c in mini.split("│")[1:-1]]
        assert mini_cells[-4:-2] == ["100", "20"] and mini_cells[-1] == "usage 1"

    def test_no_calls(self, cli: Run, db_path: Path) -> None:
        """A database without LLM calls says so; --json gives []."""
        python("import runlog; runlog.init()", db_path)
        code, out, err = cli("stats", "--db", db_path)
        assert (code, out) == (0, "") and "no LLM calls" in err
        assert cli("stats", "--db", db_path, "--json")[1] == "[]\n"

    def test_nearest_rank(self) -> None:
        """Percentiles are values that occurred: nearest rank, not interpolation."""
        assert percentile([], 50) is None
        assert percentile([5.0], 95) == 5.0
        assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
        assert percentile([4.0, 1.0, 3.0, 2.0], 95) == 4.0


class TestShow:
    def test_one_runs_events_in_order_under_its_identity(self, cli: Run, scenario: Path) -> None:
        """The run's line and identity on top, then each of its events in id order."""
        worker = by_instance(tree_json(cli, scenario))["worker-2"]
        code, out, _ = cli("show", "--db", scenario, worker["run_id"])
        assert code == 0
        lines = out.splitlines()
        assert lines[0].startswith(f"#{worker['run_id']} worker worker-2 · pid ")
        assert lines[1].startswith("parent #1 · host ") and "version 1.0" in lines[1]
        events = [line.split()[3] for line in lines[4:]]
        assert events == [
            "process.started",
            "task.started",
            "llm_call.failed",
            "task.failed",
            "process.exited",
        ]
        assert "error_type=RuntimeError" in lines[-1]

    def test_json_has_the_run_and_its_events(self, cli: Run, scenario: Path) -> None:
        """--json gives the run's summary and its events as the table holds them."""
        code, out, _ = cli("show", "--db", scenario, 1, "--json")
        assert code == 0
        shown = json.loads(out)
        assert shown["run"]["instance_id"] == "sup-1" and len(shown["run"]["children"]) == 3
        table = [r for r in rows(scenario) if r["run_id"] == 1]
        assert [e["id"] for e in shown["events"]] == [r["id"] for r in table]
        assert shown["events"][1]["payload"] == {"revision": "r1"}


class TestErrors:
    """Mistakes get one clear line on stderr and a status, never a traceback."""

    def check(self, proc: subprocess.CompletedProcess[str], status: int, message: str) -> None:
        assert proc.returncode == status, proc.stderr
        assert message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""

    @pytest.mark.parametrize("command", ["tree", "tail", "stats", "show 1"])
    def test_missing_database(self, command: str, tmp_path: Path) -> None:
        """No file at --db: exit 1, the path named, and no file created."""
        missing = tmp_path / "nothing.db"
        proc = runlog_process(*command.split(), "--db", missing)
        self.check(proc, 1, f"runlog: error: no runlog database at '{missing}'")
        assert not missing.exists() and list(tmp_path.iterdir()) == []

    def test_default_database_says_where_it_looked(self, tmp_path: Path) -> None:
        """Without --db and RUNLOG_DB the message names runlog.db and how to choose another."""
        proc = subprocess.run(
            [sys.executable, "-m", "runlog", "tree"],
            env=child_env(None),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        where = tmp_path / "runlog.db"
        self.check(proc, 1, f"no runlog database at '{where}' (the default database: give --db")
        assert not (tmp_path / "runlog.db").exists()

    def test_runlog_db_is_the_default(self, scenario: Path, tmp_path: Path) -> None:
        """RUNLOG_DB chooses the database when --db is not given, as in the SDK."""
        proc = runlog_process("show", "1", RUNLOG_DB=str(scenario))
        assert proc.returncode == 0 and "supervisor sup-1" in proc.stdout
        missing = tmp_path / "gone.db"
        self.check(runlog_process("stats", RUNLOG_DB=str(missing)), 1, "(from RUNLOG_DB)")

    def test_not_a_runlog_database(self, tmp_path: Path) -> None:
        """A text file, or an SQLite file without an events table, is refused."""
        text = tmp_path / "notes.txt"
        text.write_text("hello\n" * 100)
        self.check(runlog_process("tree", "--db", text), 1, "is not a runlog database")
        other = tmp_path / "other.db"
        sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
        self.check(runlog_process("stats", "--db", other), 1, "is not a runlog database")
        self.check(runlog_process("tree", "--db", "mysql://h/db"), 1, "unsupported database URL")

    @pytest.mark.parametrize("command", ["show 999", "tree 999", "tail --run 999"])
    def test_unknown_run(self, command: str, scenario: Path) -> None:
        """A run id with no events: exit 1 and a message naming it."""
        proc = runlog_process(*command.split(), "--db", scenario)
        self.check(proc, 1, f"runlog: error: no run 999 in sqlite:///{scenario}")

    @pytest.mark.parametrize(
        "args",
        [
            [],
            ["frobnicate"],
            ["show"],
            ["show", "abc"],
            ["tail", "-n", "-1"],
            ["tail", "--run", str(2**63)],
            ["tail", "--run", "0"],
            ["tree", str(2**64)],
            ["show", "-5"],
            ["tail", "-n", str(10**30)],
            ["tree", "-n", str(2**63)],
            ["tail", "--type", "a\x1b[2J"],
            ["tail", "--db", "x\x1b]0;title\x07"],
        ],
    )
    def test_usage_errors_exit_2(self, args: list[str]) -> None:
        """A missing or bad argument (an id past 64 bits too) is one escaped line, status 2."""
        proc = runlog_process(*args)
        self.check(proc, 2, "runlog")
        assert len(proc.stderr.splitlines()) == 1 and "\x1b" not in proc.stderr
        assert "error:" in proc.stderr and "--help" in proc.stderr

    def test_reading_changes_nothing(self, scenario: Path, cli: Run) -> None:
        """Every command leaves the table, its schema version and the folder as they were."""
        before = (rows(scenario), sqlite3.connect(scenario).execute("PRAGMA user_version"))
        version = before[1].fetchone()
        files = sorted(p.name for p in scenario.parent.iterdir())
        for args in (["tree"], ["tail", "-n", "5"], ["stats"], ["show", "1"]):
            assert cli(*args, "--db", scenario)[0] == 0
        after = sqlite3.connect(scenario).execute("PRAGMA user_version").fetchone()
        assert rows(scenario) == before[0] and after == version
        assert sorted(p.name for p in scenario.parent.iterdir()) == files


VOLATILE = {"pid", "started", "timestamp", "argv", "traceparent"}  # ids derive from time


def stable(data: Any) -> Any:
    """``data`` without the fields that differ from one run of the scenario to the next."""
    if isinstance(data, dict):
        return {
            k: stable(v) for k, v in data.items() if k not in VOLATILE and not k.endswith("_ms")
        }
    if isinstance(data, list):
        return [stable(v) for v in data]
    return data


class TestPostgres:
    def test_commands_give_the_same_answers_as_on_sqlite(
        self, cli: Run, pg_url: str, scenario: Path
    ) -> None:
        """The same scenario read from PostgreSQL and from SQLite gives the same JSON."""
        write_scenario(pg_url)
        for args in (["tree"], ["stats"], ["show", "3"], ["tail", "-n", "30"]):
            answers = []
            for db in (pg_url, scenario):
                code, out, err = cli(*args, "--db", db, "--json")
                assert code == 0, err
                lines = args[0] == "tail"
                answers.append(
                    stable([json.loads(x) for x in out.splitlines()] if lines else json.loads(out))
                )
            assert answers[0] == answers[1], args
        code, out, _ = cli("show", "--db", pg_url, "999")
        assert code == 1


HOSTILE_TEXT = "\x1b[2J\x1b]0;owned\x07\x9b31m\u202eevil\r\x08[red]x[/][/bogus]"
HOSTILE_RUN = f"""
import runlog
H = {HOSTILE_TEXT!r}
runlog.init(role="worker" + H, instance_id="w" + H, version=H, sync=True)
runlog.log_event("task" + H, {{"note": H, "k" + H: [H, {{"deep": H}}]}})
with runlog.llm_call("gpt" + H) as call:
    call.record(input_tokens=1, output_tokens=2)
with runlog.span("job" + H.replace(".", "")):
    pass
raise RuntimeError(H)
"""
# Characters that must never reach a terminal from the data.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture(scope="module")
def hostile_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database whose run, events, payloads, model and exit error hold control sequences."""
    db = tmp_path_factory.mktemp("hostile") / "events.db"
    python(HOSTILE_RUN, None, check=False, RUNLOG_DB=str(db))
    return db


def strings(data: Any) -> list[str]:
    """Every string in decoded JSON, keys included."""
    if isinstance(data, dict):
        return [*data, *(s for v in data.values() for s in strings(v))]
    if isinstance(data, list):
        return [s for v in data for s in strings(v)]
    return [data] if isinstance(data, str) else []


class TestEscapes:
    """Defect 6: data in the table drove the terminal of whoever ran the command."""

    @pytest.mark.parametrize("command", ["tree", "tail", "show 1", "stats", "tree 1"])
    def test_control_characters_are_shown_escaped(
        self, command: str, cli: Run, hostile_db: Path
    ) -> None:
        """Every command prints \\x1b where the data has ESC, and markup as text."""
        code, out, err = cli(*command.split(), "--db", hostile_db)
        assert code == 0, err
        assert not UNSAFE.search(out), repr(out)
        assert "\\x1b[2J" in out and "\\x9b" in out and "\\u202e" in out
        if command != "stats":
            assert "[red]x[/][/bogus]" in out

    @pytest.mark.parametrize("command", ["tree", "tail", "show 1", "stats"])
    def test_json_keeps_the_data_and_escapes_it(
        self, command: str, cli: Run, hostile_db: Path
    ) -> None:
        """--json output holds the exact text, with every control character as \\u escape."""
        code, out, _ = cli(*command.split(), "--db", hostile_db, "--json")
        assert code == 0
        assert not UNSAFE.search(out.replace("\n", "")), repr(out)
        lines = out.splitlines() if command == "tail" else [out]
        decoded = [json.loads(line) for line in lines]
        assert any(HOSTILE_TEXT in text for text in strings(decoded)), out

    def test_messages_are_escaped(self, tmp_path: Path) -> None:
        """An error quoting a path with control characters prints them escaped."""
        proc = runlog_process("tree", "--db", str(tmp_path / "nothing.db"), "--json")
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1
        env_db = str(tmp_path / "x\x1b[2J.db")
        proc = subprocess.run(
            [sys.executable, "-m", "runlog", "tree"],
            env=child_env(RUNLOG_DB=env_db),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1 and "\x1b" not in proc.stderr and "\\x1b[2J" in proc.stderr


# -- `runlog tree` to a pipe or a file: the plain path, and the full command's output ------
def write_runs(db: Path, events: list[tuple[int, int | None, str, dict[str, Any] | None]]) -> None:
    """A runlog database holding ``events``: (run_id, parent_run_id, event_type, payload)."""
    python(f"import runlog._store as s; s.open_store({str(db)!r}).create()")
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO events (timestamp, run_id, parent_run_id, event_type, payload)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (1_700_000_000_000_000_000 + i * 1_234_567, run, parent, kind, json.dumps(data))
                for i, (run, parent, kind, data) in enumerate(events)
            ],
        )
    conn.close()


def started(run: int, parent: int | None, role: object = "worker", **more: object) -> Any:
    """A ``process.started`` row of ``run`` (pid 1: this test's host, a live pid)."""
    payload = {"role": role, "pid": 1, "host": socket.gethostname(), **more}
    return (run, parent, "process.started", payload)


def exited(run: int, parent: int | None, reason: str = "normal", **more: object) -> Any:
    """A ``process.exited`` row of ``run``."""
    return (run, parent, "process.exited", {"reason": reason, "exit_code": 0, **more})


def completed(run: int, parent: int | None, **payload: object) -> Any:
    """An ``llm_call.completed`` row of ``run``."""
    return (run, parent, "llm_call.completed", {"model_name": "gpt-4o-mini", **payload})


LONG_ERROR = "the upstream said no " * 6
VARIED = [
    started(1, None, "supervisor", instance_id="sup 1"),
    (1, None, "revision.promoted", {"revision": "r1"}),
    started(2, 1, instance_id="worker-1"),
    completed(2, 1, input_tokens=1200, output_tokens=34, cost_usd=0.0123, cost_source="t"),
    (2, 1, "llm_call.repriced", {"call_id": 4, "cost_usd": 0.5, "cost_source": "r"}),
    completed(2, 1, input_tokens=5, output_tokens=7, cost_usd=None, cost_source="unpriced"),
    completed(2, 1, input_tokens=3, output_tokens=True, cost_usd=2.5, cost_estimated=True),
    (2, 1, "llm_call.failed", {"model_name": "gpt-4o", "error_type": "RateLimit"}),
    (2, 1, "task.started", {"task_id": 1}),
    (2, 1, "task.failed", {"task_id": 1}),
    (2, 1, "task.claimed", {"status": "error"}),
    (2, 1, "task.claimed", {"status": "ok"}),
    exited(2, 1, "exception", error_type="UpstreamError", error=LONG_ERROR, exit_code=1),
    started(3, 1, "a-rather-long-role-name-for-wrapping", instance_id="w " * 30),
    exited(3, 1, "signal", signal="SIGTERM"),
    (4, 2, "task.claimed", {"task_id": 4}),
    started(5, 999, role=None),
    exited(5, 999, exit_code=3),
    started(6, None, pid=None, host="elsewhere"),
    *[started(run, run - 1, error_type="x" * 90) for run in range(10, 18)],
    *[exited(run, run - 1, "exception", error_type="E" * 150) for run in range(10, 18)],
    started(20, None, "lost-one", pid=2**22 + 12345),
    started(21, None, "on-another-host", host="elsewhere", pid=7),
    (21, None, "task.claimed", {"task_id": 9}),
]
"""Runs that exercise every part of a label: costs (priced, unpriced, estimated, repriced),
failures, long texts that wrap and fold, orphans, an explicit run, a deep chain, no exit."""


@pytest.fixture(scope="module")
def varied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database of :data:`VARIED`."""
    db = tmp_path_factory.mktemp("varied") / "events.db"
    write_runs(db, VARIED)
    return db


def full_tree(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    """What the full command (argparse, rich, the store's Reader) prints for ``args``."""
    capsys.readouterr()
    code = cli_full(["tree", *args])
    out, err = capsys.readouterr()
    return code, out, err


def cli_full(argv: list[str]) -> int:
    from runlog._cli import _full

    return _full(argv)


def quick_tree(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int | None, str]:
    """What the plain path prints for ``args`` (None: it leaves them to the full command)."""
    from runlog._cli._quick import tree

    capsys.readouterr()
    code = tree(args)
    out, err = capsys.readouterr()
    assert err == ""
    return code, out


class TestPlainTree:
    """``runlog tree`` to a pipe answers without argparse, rich or the store, byte for byte
    as the full command would, or leaves the answer to it."""

    @pytest.mark.parametrize("columns", [None, "200", "80", "61"])
    @pytest.mark.parametrize(
        "args", [[], ["-n", "1"], ["--last=2"], ["2"], ["10"], ["1", "-n", "3"], ["3"]]
    )
    def test_same_output_as_the_full_command(
        self,
        columns: str | None,
        args: list[str],
        varied: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Wrapped, folded and nested labels, costs and failures come out the same."""
        if columns is None:
            monkeypatch.delenv("COLUMNS", raising=False)
        else:
            monkeypatch.setenv("COLUMNS", columns)
        argv = ["--db", str(varied), *args]
        code, out = quick_tree(capsys, argv)
        assert code == 0
        assert (code, out, "") == full_tree(capsys, argv)
        assert out.startswith(f"sqlite:///{varied}\n")

    def test_the_scenario_and_the_demo_like_runs_too(
        self, scenario: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The database of real runlog processes (a lost worker among them) is drawn alike,
        and ``main`` takes the plain path for it."""
        monkeypatch.chdir(scenario.parent)
        monkeypatch.delenv("COLUMNS", raising=False)
        for argv in (["--db", str(scenario)], ["--db", scenario.name], ["--db=./events.db"]):
            code, out = quick_tree(capsys, argv)
            assert (code, out, "") == full_tree(capsys, argv)
        monkeypatch.setenv("RUNLOG_DB", scenario.name)
        assert quick_tree(capsys, [])[1] == full_tree(capsys, [])[1] != ""

    @pytest.mark.parametrize(
        "args",
        [
            ["--json"],
            ["-n", "0"],
            ["-n5"],
            ["--la", "1"],
            ["999"],
            ["1", "2"],
            ["--db"],
            ["-h"],
            ["+1"],
        ],
    )
    def test_anything_else_is_left_to_the_full_command(
        self, args: list[str], varied: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """JSON, usage errors, unknown runs, abbreviations: the full command answers."""
        assert quick_tree(capsys, ["--db", str(varied), *args]) == (None, "")

    @pytest.mark.parametrize("role", ["\x1b[31mred", "漢字", "tab\there", "x\u00a0y"])
    def test_text_to_escape_or_measure_is_left_to_rich(
        self, role: str, db_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Control characters (escaped), wide characters (two cells) go the full way."""
        write_runs(db_path, [started(1, None, role), exited(1, None)])
        assert quick_tree(capsys, ["--db", str(db_path)]) == (None, "")
        code, out, _ = full_tree(capsys, ["--db", str(db_path)])
        assert code == 0 and "#1 " in out

    @pytest.mark.parametrize(
        "env",
        [
            {"FORCE_COLOR": "1", "TERM": "xterm"},
            {"TTY_COMPATIBLE": "1", "TERM": "xterm-256color", "COLORTERM": "truecolor"},
            {"FORCE_COLOR": "1", "NO_COLOR": "1"},
            {"FORCE_COLOR": "1", "TERM": "dumb"},
            {"FORCE_COLOR": "", "TERM": "xterm"},
            {"FORCE_COLOR": "1", "TTY_COMPATIBLE": "0"},
        ],
    )
    @pytest.mark.parametrize("args", [[], ["2"]])
    def test_a_terminal_gets_the_colours_of_rich(
        self,
        env: dict[str, str],
        args: list[str],
        varied: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Where rich would see a terminal, the same escape sequences come out (none for
        a dumb one; bold and dim alone under NO_COLOR)."""
        for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR", "COLORTERM"):
            monkeypatch.delenv(name, raising=False)
        for name, value in {"COLUMNS": "90", **env}.items():
            monkeypatch.setenv(name, value)
        argv = ["--db", str(varied), *args]
        code, out = quick_tree(capsys, argv)
        assert code == 0
        assert (code, out, "") == full_tree(capsys, argv)
        terminal = env.get("TTY_COMPATIBLE", env.get("FORCE_COLOR")) == "1"
        assert ("\x1b[" in out) == (terminal and env.get("TERM") != "dumb")

    def test_the_default_database_is_the_sdks(self) -> None:
        """The one copy this path keeps (importing _config costs dataclasses)."""
        from runlog._cli import _quick
        from runlog._config import DEFAULT_DB

        assert _quick.DEFAULT_DB == DEFAULT_DB


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from("ab  ·≥…"), min_size=0, max_size=80),
    width=st.integers(min_value=1, max_value=30),
)
def test_wrap_is_rich_wrap(text: str, width: int) -> None:
    """The plain path's word wrap gives rich's lines for single-cell text."""
    from rich.console import Console
    from rich.text import Text

    from runlog._cli._quick import wrap

    console = Console(width=width)
    expected = [line.plain for line in Text(text).wrap(console, width)]
    assert wrap(text, width) == expected


def test_an_unopenable_database_is_left_to_the_full_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file SQLite cannot read (not a database) is reported by the full command."""
    db = tmp_path / "junk.db"
    db.write_bytes(b"not a database at all" * 100)
    assert quick_tree(capsys, ["--db", str(db)]) == (None, "")
    code, _, err = full_tree(capsys, ["--db", str(db)])
    assert code == 1 and "not a runlog database" in err
