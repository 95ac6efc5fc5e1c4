"""The example system (examples/) end to end: real processes, the stand-in server, one database.

The demo runs twice as ``make demo`` would (offline: OPENAI_API_KEY unset, so the
supervisor starts the stand-in server) in a directory of its own, once per module; the
tests read what the first run left behind, then what both did, with plain sqlite3 and
with ``runlog.state``.  One more run uses PostgreSQL, where a server can be started.
The crash is deterministic: the worker holding the batch's 3rd task dies half-way
through its first attempt, whichever worker that is.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import runlog

from pg_server import fresh_database, server_for_tests
from support import child_env, rows

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WORKERS, TASKS, CRASH_TASK = 3, 8, 3
SUPERVISOR_ARGS = [
    "--workers",
    str(WORKERS),
    "--tasks",
    str(TASKS),
    "--crash-task",
    str(CRASH_TASK),
]
LLM_FIELDS = ("model_name", "latency_ms", "input_tokens", "output_tokens")


def run_example(script: str, cwd: Path, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run an example script to the end, offline, logging to ``db``; fail with its output."""
    env = child_env(RUNLOG_DB=db)
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "DEMO_PROVIDER"):
        env.pop(name, None)
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc


@dataclass
class Outcome:
    """What one run of the example left behind."""

    db: Path
    tasks_db: Path
    stdout: str

    def events(self, event_type: str) -> list[dict[str, Any]]:
        """The rows of one event type, in order, payloads decoded (plain sqlite3)."""
        return rows(self.db, "SELECT * FROM events WHERE event_type = ? ORDER BY id", event_type)

    def workers(self) -> list[dict[str, Any]]:
        """The workers' process.started rows."""
        return [r for r in self.events("process.started") if r["payload"]["role"] == "worker"]

    def crashed_run(self) -> dict[str, Any]:
        """The process.exited row of the one worker that crashed."""
        (row,) = [r for r in self.events("process.exited") if r["payload"]["reason"] != "normal"]
        return row


@dataclass
class Demos:
    """``examples/demo.py`` run twice in one directory, on one database."""

    first: Outcome
    """The first run, on a fresh database (a copy taken before the second run)."""
    second_stdout: str
    db: Path
    """The database after both runs."""


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Demos:
    """Run the demo (3 workers, 8 tasks, one crash) twice, as ``make demo`` twice would."""
    where = tmp_path_factory.mktemp("demo")
    db = where / "runlog.db"
    first = run_example("demo.py", where, str(db)).stdout
    snapshot = tmp_path_factory.mktemp("first")
    for name in ("runlog.db", "tasks.db"):
        src, dst = sqlite3.connect(where / name), sqlite3.connect(snapshot / name)
        with closing(src), closing(dst):
            src.backup(dst)
    second = run_example("demo.py", where, str(db)).stdout
    return Demos(Outcome(snapshot / "runlog.db", snapshot / "tasks.db", first), second, db)


@pytest.fixture
def one_run(demos: Demos) -> Outcome:
    """The first demo run: the supervisor once on a fresh database."""
    return demos.first


class TestProcessTree:
    def test_one_supervisor_root(self, one_run: Outcome) -> None:
        """Exactly one run has no parent, and it is the supervisor."""
        roots = [r for r in one_run.events("process.started") if r["parent_run_id"] is None]
        assert [r["payload"]["role"] for r in roots] == ["supervisor"]
        assert roots[0]["run_id"] == roots[0]["id"]

    def test_every_event_belongs_to_a_run_of_the_tree(self, one_run: Outcome) -> None:
        """Every row's run is one whose process.started is in the table."""
        started = {r["run_id"] for r in one_run.events("process.started")}
        assert {r["run_id"] for r in rows(one_run.db)} == started

    def test_workers_are_children_of_the_supervisor(self, one_run: Outcome) -> None:
        """All workers (the 3 first and the replacement) have the supervisor as parent."""
        (root,) = [r for r in one_run.events("process.started") if r["parent_run_id"] is None]
        workers = one_run.workers()
        assert len(workers) == WORKERS + 1
        assert {w["parent_run_id"] for w in workers} == {root["run_id"]}
        assert sorted(w["payload"]["instance_id"] for w in workers) == [
            f"worker-{n}" for n in range(1, WORKERS + 2)
        ]

    def test_worker_spawned_names_each_worker(self, one_run: Outcome) -> None:
        """Each worker.spawned carries the pid and instance_id of a worker that started."""
        spawned = [e["payload"] for e in one_run.events("worker.spawned")]
        started = {(w["payload"]["pid"], w["payload"]["instance_id"]) for w in one_run.workers()}
        assert {(s["pid"], s["instance_id"]) for s in spawned} == started
        assert [s["worker_instance_seq"] for s in spawned] == list(range(1, WORKERS + 2))
        assert all(s["instance_id"] == f"worker-{s['worker_instance_seq']}" for s in spawned)

    def test_every_run_exited(self, one_run: Outcome) -> None:
        """Every run logged process.exited; all but the crashed worker ended normally."""
        exits = {r["run_id"]: r["payload"] for r in one_run.events("process.exited")}
        assert set(exits) == {r["run_id"] for r in one_run.events("process.started")}
        normal = [p for p in exits.values() if p["reason"] == "normal"]
        assert len(normal) == len(exits) - 1
        assert all(p["exit_code"] == 0 and p["events_dropped"] == 0 for p in normal)


class TestCrashAndReplacement:
    def test_crashed_worker_exited_with_its_exception(self, one_run: Outcome) -> None:
        """The crashing worker's process.exited says exception, exit code 1, SimulatedCrash."""
        exited = one_run.crashed_run()["payload"]
        assert exited["reason"] == "exception"
        assert exited["exit_code"] == 1
        assert exited["error_type"] == "SimulatedCrash"

    def test_crash_left_the_task_failed_half_way(self, one_run: Outcome) -> None:
        """The crashed worker's task span failed after its first model call."""
        run_id = one_run.crashed_run()["run_id"]
        (failed,) = one_run.events("task.failed")
        assert failed["run_id"] == run_id
        assert failed["payload"]["error_type"] == "SimulatedCrash"
        inside = (run_id, failed["payload"]["span_id"])
        calls = one_run.events("llm_call.completed")
        assert [(c["run_id"], c["payload"]["parent_span_id"]) for c in calls].count(inside) == 1

    def test_supervisor_logged_the_crash_and_requeued_the_task(self, one_run: Outcome) -> None:
        """worker.crashed names the dead worker, its exit reason and the re-queued task."""
        (created,) = one_run.events("batch.created")
        crash_task = created["payload"]["task_ids"][CRASH_TASK - 1]
        dead = [w for w in one_run.workers() if w["run_id"] == one_run.crashed_run()["run_id"]]
        (crashed,) = one_run.events("worker.crashed")
        assert crashed["payload"]["instance_id"] == dead[0]["payload"]["instance_id"]
        assert crashed["payload"]["exit_code"] == 1
        assert crashed["payload"]["reason"] == "exception"
        assert crashed["payload"]["requeued_task_ids"] == [crash_task]

    def test_replacement_has_the_next_sequence_number(self, one_run: Outcome) -> None:
        """The replacement is spawned after the crash, with a seq above every other worker."""
        (crashed,) = one_run.events("worker.crashed")
        spawned = one_run.events("worker.spawned")
        (replacement,) = [s for s in spawned if s["payload"]["replaces"] is not None]
        assert replacement["payload"]["replaces"] == crashed["payload"]["instance_id"]
        assert replacement["id"] > crashed["id"]
        others = [s["payload"]["worker_instance_seq"] for s in spawned if s is not replacement]
        assert replacement["payload"]["worker_instance_seq"] == max(others) + 1 == WORKERS + 1


class TestTasks:
    def test_every_task_claimed_exactly_once_per_attempt(self, one_run: Outcome) -> None:
        """Each task is claimed once, the crashed one a second time by another worker."""
        (created,) = one_run.events("batch.created")
        task_ids = created["payload"]["task_ids"]
        claims = [c for c in one_run.events("task.claimed") if c["payload"]["task_id"] is not None]
        per_task = Counter(c["payload"]["task_id"] for c in claims)
        crash_task = task_ids[CRASH_TASK - 1]
        assert per_task == Counter({t: 2 if t == crash_task else 1 for t in task_ids})
        again = [c for c in claims if c["payload"]["task_id"] == crash_task]
        assert [c["payload"]["attempt"] for c in again] == [1, 2]
        assert again[0]["run_id"] == one_run.crashed_run()["run_id"] != again[1]["run_id"]

    def test_every_worker_ends_with_an_empty_claim(self, one_run: Outcome) -> None:
        """A worker that lived to the end asked once more and found the queue empty."""
        empty = [c for c in one_run.events("task.claimed") if c["payload"]["task_id"] is None]
        assert len(empty) == WORKERS  # every worker but the crashed one
        assert all(c["payload"]["status"] == "ok" for c in empty)

    def test_every_task_completed_once_with_a_result(self, one_run: Outcome) -> None:
        """Each task has one task.completed span and one result.recorded event."""
        (created,) = one_run.events("batch.created")
        completed = Counter(e["payload"]["task_id"] for e in one_run.events("task.completed"))
        recorded = Counter(e["payload"]["task_id"] for e in one_run.events("result.recorded"))
        assert completed == recorded == Counter(created["payload"]["task_ids"])

    def test_queue_file_has_every_task_done(self, one_run: Outcome) -> None:
        """In the example's own queue, every task is done, the crashed one on attempt 2."""
        tasks = rows(one_run.tasks_db, "SELECT id, status, attempt FROM tasks ORDER BY id")
        assert [t["status"] for t in tasks] == ["done"] * TASKS
        assert sorted(t["attempt"] for t in tasks) == [1] * (TASKS - 1) + [2]


class TestLLMCalls:
    def test_every_call_logged_with_the_required_fields(self, one_run: Outcome) -> None:
        """Two calls per finished task plus the crashed one; each with all four fields."""
        calls = one_run.events("llm_call.completed")
        assert len(calls) == 2 * TASKS + 1
        for call in calls:
            payload = call["payload"]
            assert all(payload.get(field) is not None for field in LLM_FIELDS), payload
            assert payload["model_name"] == "gpt-4o-mini"
            assert payload["latency_ms"] > 0
            assert (payload["input_tokens"], payload["output_tokens"]) == (42, 14)
            assert payload["token_source"] == "usage"
        assert one_run.events("llm_call.failed") == []

    def test_streamed_and_plain_calls(self, one_run: Outcome) -> None:
        """Answers alternate between streamed and plain calls; streams have a first token."""
        calls = [c["payload"] for c in one_run.events("llm_call.completed")]
        streams = [c for c in calls if c["stream"]]
        assert 0 < len(streams) < len(calls)
        assert all(0 < s["time_to_first_token_ms"] <= s["latency_ms"] for s in streams)

    def test_calls_happen_inside_task_spans(self, one_run: Outcome) -> None:
        """Each call's parent span is a task span of the same worker run."""
        task_spans = {
            (e["run_id"], e["payload"]["span_id"]) for e in one_run.events("task.started")
        }
        for call in one_run.events("llm_call.completed"):
            assert (call["run_id"], call["payload"]["parent_span_id"]) in task_spans


class TestRevisionAndState:
    def test_revision_promoted_once(self, one_run: Outcome) -> None:
        """The supervisor promoted revision 1 after the batch, with no previous revision."""
        (root,) = [r for r in one_run.events("process.started") if r["parent_run_id"] is None]
        (promoted,) = one_run.events("revision.promoted")
        assert promoted["run_id"] == root["run_id"]
        assert promoted["payload"]["revision"] == 1
        assert promoted["payload"]["previous"] is None
        assert "good revision read back from the events table: None" in one_run.stdout

    def test_derived_state(self, one_run: Outcome, monkeypatch: pytest.MonkeyPatch) -> None:
        """runlog.state reads the good revision and the supervisor's four workers back."""
        monkeypatch.setenv("RUNLOG_DB", str(one_run.db))
        (root,) = [r for r in one_run.events("process.started") if r["parent_run_id"] is None]
        assert runlog.state.current_good_rev() == 1
        assert runlog.state.worker_instance_seq(root["run_id"]) == WORKERS + 1
        assert len(runlog.state.children(root["run_id"], role="worker")) == WORKERS + 1
        assert runlog.state.count_events("llm_call.completed") == 2 * TASKS + 1


class TestDemoTwice:
    def test_second_supervisor_reads_the_first_ones_revision(self, demos: Demos) -> None:
        """State survives across supervisor runs: the second run starts from revision 1."""
        assert "good revision read back from the events table: None" in demos.first.stdout
        assert "good revision read back from the events table: 1" in demos.second_stdout
        assert "promoted revision 2" in demos.second_stdout

    def test_two_supervisor_roots_each_with_their_workers(
        self, demos: Demos, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each run is its own root; worker numbering starts again under each supervisor."""
        monkeypatch.setenv("RUNLOG_DB", str(demos.db))
        roots = [e for e in runlog.state.events("process.started") if e.parent_run_id is None]
        assert [r.payload["role"] for r in roots] == ["supervisor", "supervisor"]
        for root in roots:
            assert runlog.state.worker_instance_seq(root.run_id) == WORKERS + 1
        assert runlog.state.current_good_rev() == 2

    def test_demo_prints_tree_stats_and_state(self, demos: Demos) -> None:
        """The demo shows the run tree, the LLM statistics and the derived state."""
        out = demos.second_stdout
        assert "=== runlog tree" in out
        assert "gpt-4o-mini" in out.split("=== runlog stats ===")[1]
        assert re.search(r"^current_good_rev\(\)\s+2$", out, re.MULTILINE)
        assert re.search(r"^supervisor runs recorded\s+2$", out, re.MULTILINE)
        assert out.rstrip().splitlines()[-1].endswith(f"runlog ui --db {demos.db}")
        stats = out.split("=== runlog stats ===")[1].split("===")[0]
        assert re.search(r"gpt-4o-mini .*\$0\.\d+", stats), stats
        assert "subtree $" in out.split("=== runlog tree")[1]


class TestTwoProviders:
    def test_mixed_workers_log_both_providers_with_cost(self, tmp_path: Path) -> None:
        """With --provider mixed, even workers call Anthropic; both log usage and cost."""
        db = tmp_path / "runlog.db"
        out = run_example("demo.py", tmp_path, str(db), "--no-crash", "--provider", "mixed")
        calls = [r["payload"] for r in rows(db) if r["event_type"] == "llm_call.completed"]
        by_provider = {p["provider"] for p in calls}
        assert by_provider == {"openai", "anthropic"}
        for payload in calls:
            assert payload["cached_input_tokens"] == 16
            assert payload["cost_source"].startswith("genai-prices ") and payload["cost_usd"] > 0
        stats = out.stdout.split("=== runlog stats ===")[1]
        assert "claude-haiku-4-5" in stats and "gpt-4o-mini" in stats and "total" in stats
        assert re.search(r"^cost\(\d+, subtree=True\)\s+\$0\.\d+ over \d+ calls$",
                         out.stdout, re.MULTILINE)  # fmt: skip


def workers_started(db: Path) -> int:
    """How many worker runs have started, read-only (the database may not exist yet)."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM events WHERE event_type = 'process.started' "
                "AND json_extract(payload, '$.role') = 'worker'"
            ).fetchone()
    except sqlite3.OperationalError:  # no file or no table yet
        return 0
    return int(count)


class TestStopping:
    def test_sigterm_stops_the_workers_before_the_supervisor_exits(self, tmp_path: Path) -> None:
        """A supervisor stopped with SIGTERM stops its worker first; both log their exit."""
        db = tmp_path / "runlog.db"
        env = child_env(RUNLOG_DB=str(db))
        env.pop("OPENAI_API_KEY", None)
        with (tmp_path / "output.txt").open("w") as output:
            proc = subprocess.Popen(
                [sys.executable, str(EXAMPLES / "supervisor.py"), "--workers", "1"],
                cwd=tmp_path,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 60
            while workers_started(db) < 1:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        events = rows(db)
        (root, worker) = [e for e in events if e["event_type"] == "process.started"]
        exits = {e["run_id"]: e for e in events if e["event_type"] == "process.exited"}
        assert worker["parent_run_id"] == root["run_id"]
        assert exits[root["run_id"]]["payload"]["reason"] == "signal"
        assert exits[worker["run_id"]]["id"] < exits[root["run_id"]]["id"]


class TestPostgres:
    def test_example_runs_on_postgresql(
        self, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With RUNLOG_DB a postgresql:// URL the example works the same (queue stays local)."""
        with fresh_database(server_for_tests(request.config)) as url:
            run_example("supervisor.py", tmp_path, url, *SUPERVISOR_ARGS)
            monkeypatch.setenv("RUNLOG_DB", url)
            roots = [e for e in runlog.state.events("process.started") if e.parent_run_id is None]
            assert len(roots) == 1
            assert runlog.state.worker_instance_seq(roots[0].run_id) == WORKERS + 1
            assert runlog.state.current_good_rev() == 1
            assert runlog.state.count_events("llm_call.completed") == 2 * TASKS + 1
