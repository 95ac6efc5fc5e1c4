"""Runs: process.started adoption, PARENT_RUN_ID across real child processes, context."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

import pytest

import runlog
from runlog._runs import parse_parent_run_id

from support import python, rows


def started(db: Path) -> list[dict[str, object]]:
    return [r for r in rows(db) if r["event_type"] == "process.started"]


class TestAdoption:
    def test_run_id_is_the_id_of_process_started(self, db_path: Path) -> None:
        """init() returns the generated id of its process.started row, which is its run_id."""
        run_id = runlog.init(
            role="supervisor", instance_id="sup-1", version="1.2.3", db=str(db_path)
        )
        (row,) = rows(db_path)
        assert row["id"] == row["run_id"] == run_id == runlog.current_run_id()
        assert row["parent_run_id"] is None
        assert row["event_type"] == "process.started"

    def test_process_started_payload_identifies_the_process(self, db_path: Path) -> None:
        """The payload carries role, instance_id, pid, version, host, argv, python and extras."""
        runlog.init(role="worker", instance_id="w-3", version="9", db=str(db_path), region="eu")
        payload = rows(db_path)[0]["payload"]
        assert payload["role"] == "worker"
        assert payload["instance_id"] == "w-3"
        assert payload["pid"] == os.getpid()
        assert payload["version"] == "9"
        assert payload["region"] == "eu"
        assert {"host", "argv", "python"} <= payload.keys()

    def test_events_carry_the_run(self, db_path: Path) -> None:
        """Events logged after init() carry its run_id and parent_run_id."""
        run_id = runlog.init(db=str(db_path), sync=True)
        runlog.log_event("task.claimed", {"task_id": 7})
        last = rows(db_path)[-1]
        assert (last["run_id"], last["parent_run_id"], last["payload"]) == (
            run_id,
            None,
            {"task_id": 7},
        )

    def test_second_init_is_an_error(self, db_path: Path) -> None:
        """Calling init() twice raises RuntimeError naming the existing run."""
        run_id = runlog.init(db=str(db_path))
        with pytest.raises(RuntimeError, match=f"run_id {run_id}"):
            runlog.init(db=str(db_path))


class TestImplicitRun:
    def test_logging_before_init_starts_a_run(self, db_path: Path) -> None:
        """The first event without init() starts a run with role from RUNLOG_ROLE."""
        python(
            """
            import runlog
            runlog.log_event("early.event")
            """,
            db_path,
            RUNLOG_ROLE="cron",
        )
        events = rows(db_path)
        assert [e["event_type"] for e in events] == [
            "process.started",
            "early.event",
            "process.exited",
        ]
        assert events[0]["payload"]["role"] == "cron"
        assert {e["run_id"] for e in events} == {events[0]["id"]}

    def test_default_role_is_process(self, db_path: Path) -> None:
        """Without RUNLOG_ROLE an implicit run has role "process"."""
        python("import runlog; runlog.current_run_id()", db_path)
        assert started(db_path)[0]["payload"]["role"] == "process"  # type: ignore[index]

    def test_init_after_implicit_run_supersedes_it(self, db_path: Path) -> None:
        """init() after early events ends the implicit run and starts the named one."""
        python(
            """
            import runlog
            runlog.log_event("early")
            runlog.init(role="worker")
            runlog.log_event("late")
            """,
            db_path,
        )
        events = [(e["event_type"], e["run_id"]) for e in rows(db_path)]
        first, second = (e["id"] for e in started(db_path))
        assert events == [
            ("process.started", first),
            ("early", first),
            ("process.exited", first),
            ("process.started", second),
            ("late", second),
            ("process.exited", second),
        ]
        assert rows(db_path)[2]["payload"]["reason"] == "superseded"


CHILD_REPORT = """
import json, os, runlog
run_id = runlog.current_run_id()
print(json.dumps({"run_id": run_id, "env": os.environ.get("PARENT_RUN_ID")}))
"""


class TestPropagation:
    def test_subprocess_child_inherits_parent_run(self, db_path: Path) -> None:
        """A plain subprocess started after init() is a run whose parent is ours."""
        out = python(
            f"""
            import subprocess, sys, runlog
            runlog.init(role="supervisor")
            print(runlog.current_run_id())
            subprocess.run([sys.executable, "-c", {CHILD_REPORT!r}], check=True)
            """,
            db_path,
        ).stdout.split("\n")
        parent = int(out[0])
        child = json.loads(out[1])
        by_id = {e["id"]: e for e in started(db_path)}
        assert by_id[child["run_id"]]["parent_run_id"] == parent
        assert child["env"] == str(child["run_id"]), "the child's own children see the child"

    def test_grandchild_chain(self, db_path: Path) -> None:
        """Three generations of processes form a chain through parent_run_id."""
        python(
            """
            import subprocess, sys, runlog
            runlog.init(role="a")
            grandchild = "import runlog; runlog.init(role='c')"
            child = ("import subprocess, sys, runlog; runlog.init(role='b'); "
                     f"subprocess.run([sys.executable, '-c', {grandchild!r}], check=True)")
            subprocess.run([sys.executable, "-c", child], check=True)
            """,
            db_path,
        )
        runs = {e["payload"]["role"]: e for e in started(db_path)}  # type: ignore[index]
        assert runs["a"]["parent_run_id"] is None
        assert runs["b"]["parent_run_id"] == runs["a"]["id"]
        assert runs["c"]["parent_run_id"] == runs["b"]["id"]

    @pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
    def test_multiprocessing_child(self, db_path: Path, method: str) -> None:
        """A multiprocessing child (spawn, fork, forkserver) is a run under the parent's run."""
        python(
            f"""
            import multiprocessing as mp, runlog

            def work(n):
                runlog.log_event("child.work", {{"n": n}})

            if __name__ == "__main__":
                runlog.init(role="parent")
                ctx = mp.get_context({method!r})
                procs = [ctx.Process(target=work, args=(i,)) for i in range(2)]
                for p in procs: p.start()
                for p in procs: p.join()
                assert all(p.exitcode == 0 for p in procs)
            """,
            db_path,
        )
        events = rows(db_path)
        parent = next(e for e in events if e["payload"].get("role") == "parent")
        works = [e for e in events if e["event_type"] == "child.work"]
        assert sorted(e["payload"]["n"] for e in works) == [0, 1]
        child_runs = {e["run_id"] for e in works}
        assert len(child_runs) == 2 and parent["id"] not in child_runs
        by_id = {e["id"]: e for e in events}
        for run_id in child_runs:
            assert by_id[run_id]["event_type"] == "process.started"
            assert by_id[run_id]["parent_run_id"] == parent["id"]
            exits = [
                e for e in events if e["run_id"] == run_id and e["event_type"] == "process.exited"
            ]
            assert len(exits) == 1, f"{method} child must log process.exited once"

    def test_os_fork_child_is_a_new_run(self, db_path: Path) -> None:
        """After os.fork() the child logs under a new run whose parent is the forking run."""
        python(
            """
            import os, runlog
            runlog.init(role="forker")
            runlog.log_event("before.fork")
            pid = os.fork()
            if pid == 0:
                runlog.log_event("in.child")
                runlog.flush()
                os._exit(0)
            os.waitpid(pid, 0)
            runlog.log_event("after.fork")
            """,
            db_path,
        )
        events = rows(db_path)
        parent = events[0]
        child_event = next(e for e in events if e["event_type"] == "in.child")
        assert child_event["run_id"] != parent["id"]
        assert child_event["parent_run_id"] == parent["id"]
        child_start = next(e for e in events if e["id"] == child_event["run_id"])
        assert child_start["payload"]["forked_from_pid"] == parent["payload"]["pid"]
        assert [e["event_type"] for e in events].count("before.fork") == 1, "no event twice"
        assert next(e for e in events if e["event_type"] == "after.fork")["run_id"] == parent["id"]

    def test_child_env_for_custom_launchers(self, db_path: Path) -> None:
        """child_env() copies the environment with PARENT_RUN_ID set to the current run
        (and TRACEPARENT to the run's span, see test_otlp)."""
        run_id = runlog.init(db=str(db_path))
        env = runlog.child_env({"PATH": "/bin"})
        assert env == {
            "PATH": "/bin",
            "PARENT_RUN_ID": str(run_id),
            "RUNLOG_DB": str(db_path),
            "TRACEPARENT": os.environ["TRACEPARENT"],
        }
        assert runlog.child_env()["PARENT_RUN_ID"] == str(run_id)

    def test_exec_replaces_process_and_keeps_parent(self, db_path: Path) -> None:
        """os.exec* keeps PARENT_RUN_ID, so the new program is a child of the run."""
        python(
            f"""
            import os, sys, runlog
            runlog.init(role="launcher")
            runlog.flush()
            os.execv(sys.executable, [sys.executable, "-c", {CHILD_REPORT!r}])
            """,
            db_path,
        )
        first, second = started(db_path)
        assert second["parent_run_id"] == first["id"]


class TestParentRunIdParsing:
    @pytest.mark.parametrize("raw", [None, "", "   "])
    def test_absent_or_empty_is_root(
        self, raw: str | None, caplog: pytest.LogCaptureFixture
    ) -> None:
        """No or an empty PARENT_RUN_ID makes a root run without a warning."""
        assert parse_parent_run_id(raw) is None
        assert not caplog.records

    @pytest.mark.parametrize("raw", ["12", " 12 ", "9223372036854775807"])
    def test_valid(self, raw: str) -> None:
        """Positive 64-bit integers are accepted."""
        assert parse_parent_run_id(raw) == int(raw)

    @pytest.mark.parametrize(
        "raw", ["abc", "-1", "0", "9223372036854775808", "1e3", "+5", "٣", "12abc"]
    )
    def test_malformed_warns_and_is_root(self, db_path: Path, raw: str) -> None:
        """A malformed PARENT_RUN_ID logs one warning and the run becomes a root."""
        proc = python(
            "import runlog; runlog.init(); runlog.log_event('x'); runlog.log_event('y')",
            db_path,
            PARENT_RUN_ID=raw,
        )
        assert proc.stderr.count("malformed PARENT_RUN_ID") == 1
        assert all(e["parent_run_id"] is None for e in rows(db_path))


class TestContext:
    def test_threads_see_the_process_run(self, db_path: Path) -> None:
        """A thread started after init() logs under the process's run."""
        run_id = runlog.init(db=str(db_path), sync=True)
        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(runlog.current_run_id()))
        thread.start()
        thread.join()
        assert seen == [run_id]

    def test_asyncio_tasks_see_the_process_run(self, db_path: Path) -> None:
        """asyncio tasks log under the process's run."""
        run_id = runlog.init(db=str(db_path), sync=True)

        async def main() -> list[int]:
            async def one(i: int) -> int:
                await asyncio.sleep(0)
                runlog.log_event("task.step", {"i": i})
                return runlog.current_run_id()

            return list(await asyncio.gather(*(one(i) for i in range(5))))

        assert asyncio.run(main()) == [run_id] * 5
        steps = [e for e in rows(db_path) if e["event_type"] == "task.step"]
        assert len(steps) == 5 and {e["run_id"] for e in steps} == {run_id}
