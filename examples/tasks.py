"""The example's task queue: a small SQLite file of its own, shared by the worker processes.

Why not the ``events`` table?  ``events`` is an append-only record of what happened;
a queue needs rows that change (queued -> claimed -> done).  Keeping the queue apart
also means it works whatever database ``RUNLOG_DB`` names, SQLite or PostgreSQL: the
example runs on one host, so a local file is enough.

How a claim stays atomic across processes: ``claim()`` is one write transaction,
opened with ``BEGIN IMMEDIATE`` (which takes SQLite's write lock before reading), around
a single ``UPDATE ... WHERE id = (SELECT the oldest queued task) RETURNING ...``.  Only
one connection holds the write lock at a time, and a task leaves ``queued`` in the same
statement that picks it, so two workers can never claim the same task; the others
wait for the lock (busy timeout) and pick the next one.

A crashed worker's task: the supervisor notices that the process exited with an
error and calls ``requeue()``, which puts the tasks that worker still held back to
``queued`` (the next claim hands them out again, with ``attempt`` one higher).
``complete()`` succeeds only while the worker still holds the claim, so a result can
never land on a task that was handed to someone else.

Needs SQLite 3.35 or newer (``RETURNING``), which Python 3.10+ normally ships.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

APP_VERSION = "1.0"
"""The version of this example application, recorded in every ``process.started``."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id          INTEGER PRIMARY KEY,
    created_by  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id       INTEGER PRIMARY KEY,
    batch    INTEGER NOT NULL REFERENCES batches(id),
    prompt   TEXT NOT NULL,
    status   TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'claimed', 'done')),
    worker   TEXT,
    attempt  INTEGER NOT NULL DEFAULT 0,
    result   TEXT
);
CREATE INDEX IF NOT EXISTS tasks_batch_status ON tasks(batch, status);
"""


@dataclass(frozen=True)
class Task:
    """One claimed task: what a worker needs to do it."""

    id: int
    batch: int
    prompt: str
    attempt: int
    """1 for the first claim; one more each time the task is handed out again."""


class TaskQueue:
    """The queue file; open one per process (a connection is not shared across processes)."""

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        """Open (and create, if needed) the queue at ``path``.

        ``timeout``: seconds to wait for another process's write lock.
        """
        self._conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> TaskQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that holds the write lock from its first statement."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def create_batch(self, prompts: Sequence[str], created_by: str) -> tuple[int, list[int]]:
        """Queue one task per prompt; return the batch id and the task ids, in order."""
        with self._write() as conn:
            batch = conn.execute(
                "INSERT INTO batches (created_by) VALUES (?) RETURNING id", (created_by,)
            ).fetchone()[0]
            ids = [
                conn.execute(
                    "INSERT INTO tasks (batch, prompt) VALUES (?, ?) RETURNING id", (batch, prompt)
                ).fetchone()[0]
                for prompt in prompts
            ]
        return batch, ids

    def claim(self, batch: int, worker: str) -> Task | None:
        """Hand the oldest queued task of ``batch`` to ``worker``; None when none is left."""
        with self._write() as conn:
            row = conn.execute(
                """
                UPDATE tasks SET status = 'claimed', worker = ?, attempt = attempt + 1
                WHERE id = (
                    SELECT id FROM tasks WHERE batch = ? AND status = 'queued'
                    ORDER BY id LIMIT 1
                )
                RETURNING id, batch, prompt, attempt
                """,
                (worker, batch),
            ).fetchone()
        return None if row is None else Task(*row)

    def complete(self, task: Task, worker: str, result: str) -> None:
        """Store the result of a task ``worker`` holds; raise if it no longer holds it."""
        with self._write() as conn:
            done = conn.execute(
                "UPDATE tasks SET status = 'done', result = ? "
                "WHERE id = ? AND worker = ? AND status = 'claimed'",
                (result, task.id, worker),
            ).rowcount
        if done != 1:
            raise RuntimeError(f"{worker} no longer holds task {task.id}")

    def requeue(self, batch: int, worker: str) -> list[int]:
        """Put the unfinished tasks of a dead ``worker`` back in the queue; return their ids."""
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE tasks SET status = 'queued', worker = NULL "
                "WHERE batch = ? AND worker = ? AND status = 'claimed' RETURNING id",
                (batch, worker),
            ).fetchall()
        return sorted(task_id for (task_id,) in rows)

    def unfinished(self, batch: int) -> int:
        """How many tasks of ``batch`` are not done yet."""
        row = self._conn.execute(
            "SELECT count(*) FROM tasks WHERE batch = ? AND status != 'done'", (batch,)
        ).fetchone()
        return int(row[0])


__all__ = ["APP_VERSION", "Task", "TaskQueue"]
