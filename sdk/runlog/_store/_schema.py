"""The schema of the ``events`` table, once for every backend, as numbered migrations.

Each backend applies ``migrations(...)[version:]`` in one transaction and records the
new version (SQLite: ``PRAGMA user_version``; PostgreSQL: ``runlog_meta``), the way
Simon Willison's ``llm`` applies its numbered migrations.  Never edit a migration that
has shipped: append a new one.  Backends differ only in their integer types.
"""

from __future__ import annotations

Migrations = tuple[tuple[str, ...], ...]


def migrations(*, id_column: str, integer: str) -> Migrations:
    """The migrations with the backend's ``id`` column and integer type filled in."""
    return (
        (
            f"""CREATE TABLE IF NOT EXISTS events (
                id            {id_column},
                timestamp     {integer} NOT NULL,
                run_id        {integer} NOT NULL,
                parent_run_id {integer},
                event_type    TEXT NOT NULL,
                payload       TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS events_timestamp ON events(timestamp)",
            "CREATE INDEX IF NOT EXISTS events_run_id ON events(run_id)",
            "CREATE INDEX IF NOT EXISTS events_parent_run_id ON events(parent_run_id)",
            "CREATE INDEX IF NOT EXISTS events_event_type ON events(event_type)",
        ),
        # runlog.state counts a run's children: parent_run_id alone matches every event
        # of every child run, so the event type must be in the index too.
        (
            "CREATE INDEX IF NOT EXISTS events_parent_run_id_event_type"
            " ON events(parent_run_id, event_type)",
        ),
        # The run summaries of `runlog tree` and `runlog ui` count events per run and
        # type over a page of runs: with the type in the index that count reads the
        # index alone (on a million events, 20 process trees: 190 ms -> 110 ms).
        ("CREATE INDEX IF NOT EXISTS events_run_id_event_type ON events(run_id, event_type)",),
        # Every row pays for every index (about 1 us each on SQLite), and the two
        # composites above serve any lookup by run_id or parent_run_id alone as their
        # leftmost column: the single-column indexes only cost writes (issue 11).
        (
            "DROP INDEX IF EXISTS events_run_id",
            "DROP INDEX IF EXISTS events_parent_run_id",
        ),
    )


__all__ = ["Migrations", "migrations"]
