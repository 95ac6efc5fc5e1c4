"""runlog.testing.capture: events of a block, in a temporary database, state restored."""

from __future__ import annotations

import os
from pathlib import Path

import runlog
from runlog.testing import capture

from support import rows


class TestCapture:
    def test_captures_events_of_the_block(self) -> None:
        """Events logged inside the block are returned in order, also after it."""
        with capture() as events:
            runlog.log_event("task.claimed", {"task_id": 7})
            runlog.log_event("task.completed", {"task_id": 7})
            assert events.types() == ["task.claimed", "task.completed"]
        (claimed,) = events.of_type("task.claimed")
        assert claimed.payload == {"task_id": 7}
        assert claimed.run_id == events.run_id

    def test_restores_the_previous_run(self, db_path: Path) -> None:
        """After the block the process logs to its own run and database again."""
        run_id = runlog.init(db=str(db_path), sync=True)
        with capture() as events:
            runlog.log_event("inside")
            assert runlog.current_run_id() == events.run_id
        runlog.log_event("outside")
        assert events.types() == ["inside"]
        assert [r["event_type"] for r in rows(db_path)] == ["process.started", "outside"]
        assert runlog.current_run_id() == run_id
        assert os.environ["PARENT_RUN_ID"] == str(run_id)
        assert not events.db_path.exists()
