"""runlog.state: supervisor state derived from events, on real processes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import runlog
from runlog import state
from runlog._runs import get_runtime

from support import python


class TestWorkerInstanceSeq:
    def test_counts_worker_processes_started_under_the_supervisor(self, db_path: Path) -> None:
        """Each worker child's process.started (role worker) raises the count by one."""
        sup = runlog.init(role="supervisor", db=str(db_path))
        assert state.worker_instance_seq() == 0
        for seq in (1, 2, 3):
            python(
                f"import runlog; runlog.init(role='worker', instance_id='worker-{seq}')",
                db_path,
                PARENT_RUN_ID=str(sup),
            )
            assert state.worker_instance_seq() == seq
        assert state.worker_instance_seq(sup) == 3

    def test_other_roles_and_other_supervisors_do_not_count(self, db_path: Path) -> None:
        """Non-worker children and workers of another supervisor are not counted."""
        sup = runlog.init(role="supervisor", db=str(db_path))
        python("import runlog; runlog.init(role='monitor')", db_path, PARENT_RUN_ID=str(sup))
        python("import runlog; runlog.init(role='worker')", db_path, PARENT_RUN_ID="9999")
        python(
            "import runlog; runlog.log_event('worker.note', {'role': 'worker'})",
            db_path,
            PARENT_RUN_ID=str(sup),
        )
        assert state.worker_instance_seq() == 0
        assert state.worker_instance_seq(9999) == 1

    def test_sees_events_this_process_logged_just_before(self, db_path: Path) -> None:
        """A read flushes first: it sees the process's own queued events."""
        runlog.init(db=str(db_path))
        runlog.log_event("revision.promoted", {"revision": "r1"})  # still queued
        assert state.current_good_rev() == "r1"


class TestCurrentGoodRev:
    def test_none_before_any_promotion(self, db_path: Path) -> None:
        """Without a revision.promoted event there is no good revision."""
        runlog.init(db=str(db_path))
        assert state.current_good_rev() is None

    def test_latest_promotion_wins_across_runs(self, db_path: Path) -> None:
        """The most recent revision.promoted of any run is the current good revision."""
        python("import runlog; runlog.log_event('revision.promoted', {'revision': 'a1'})", db_path)
        python("import runlog; runlog.log_event('revision.promoted', {'revision': 'b2'})", db_path)
        runlog.init(db=str(db_path))
        assert state.current_good_rev() == "b2"


class TestGeneralHelpers:
    def test_count_latest_children_events(self, db_path: Path) -> None:
        """count_events, latest_payload, children and events filter by type, run and payload."""
        sup = runlog.init(role="supervisor", db=str(db_path))
        for i in range(3):
            runlog.log_event("task.created", {"task_id": i, "queue": "q1" if i else "q0"})
        python(
            "import runlog; runlog.init(role='worker', instance_id='w1')",
            db_path,
            PARENT_RUN_ID=str(sup),
        )
        assert state.count_events("task.created") == 3
        assert state.count_events("task.created", queue="q1") == 2
        assert state.count_events(run_id=sup) == 4
        assert state.latest_payload("task.created") == {"task_id": 2, "queue": "q1"}
        assert state.latest_payload("task.missing") is None
        (child,) = state.children()
        assert child.payload["instance_id"] == "w1" and child.parent_run_id == sup
        assert [e.payload["task_id"] for e in state.events("task.created", limit=2)] == [0, 1]

    def test_bad_payload_field_name(self, db_path: Path) -> None:
        """Payload filters take plain field names only."""
        runlog.init(db=str(db_path))
        with pytest.raises(ValueError, match="plain field names"):
            state.count_events("x", **{"a.b": "1"})

    def test_queries_use_the_indexes(self, db_path: Path) -> None:
        """SQLite answers the state queries runlog sends from indexes, never a table scan."""
        sup = runlog.init(role="supervisor", db=str(db_path))
        runlog.flush()
        sent: list[str] = []
        conn = get_runtime().store._conn  # type: ignore[attr-defined]
        conn.set_trace_callback(sent.append)
        state.worker_instance_seq(sup)
        state.current_good_rev()
        conn.set_trace_callback(None)
        selects = [sql for sql in sent if sql.startswith("SELECT")]
        assert len(selects) == 2
        check = sqlite3.connect(db_path)
        for sql in selects:
            plan = " / ".join(r[3] for r in check.execute("EXPLAIN QUERY PLAN " + sql))
            assert "SEARCH events USING" in plan and "SCAN events" not in plan, (sql, plan)
        check.close()
