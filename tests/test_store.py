"""The events table on SQLite: schema, indexes, file creation, database settings."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

import runlog
from runlog._store import open_store
from runlog._store._sqlite import MIGRATIONS, SCHEMA_VERSION, sqlite_path

from support import python, rows


class TestSchema:
    def test_table_has_exactly_the_designed_columns(self, db_path: Path) -> None:
        """The events table has the six columns of DESIGN.md, with their types and NOT NULLs."""
        runlog.init(db=str(db_path))
        conn = sqlite3.connect(db_path)
        cols = conn.execute("PRAGMA table_info(events)").fetchall()
        conn.close()
        shape = [(name, kind, notnull, pk) for _, name, kind, notnull, _, pk in cols]
        assert shape == [
            ("id", "INTEGER", 0, 1),
            ("timestamp", "INTEGER", 1, 0),
            ("run_id", "INTEGER", 1, 0),
            ("parent_run_id", "INTEGER", 0, 0),
            ("event_type", "TEXT", 1, 0),
            ("payload", "TEXT", 0, 0),
        ]

    def test_four_indexes_exist(self, db_path: Path) -> None:
        """timestamp, run_id, parent_run_id and event_type are each indexed."""
        runlog.init(db=str(db_path))
        conn = sqlite3.connect(db_path)
        indexed = {
            conn.execute(f"PRAGMA index_info({name!r})").fetchone()[2]
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='events'"
            )
        }
        conn.close()
        assert {"timestamp", "run_id", "parent_run_id", "event_type"} <= indexed

    @pytest.mark.parametrize(
        ("where", "index"),
        [
            ("run_id = 1", "events_run_id_event_type"),
            ("parent_run_id = 1", "events_parent_run_id_event_type"),
            ("event_type = 'x'", "events_event_type"),
            ("timestamp > 1", "events_timestamp"),
        ],
    )
    def test_every_designed_lookup_uses_an_index(
        self, db_path: Path, where: str, index: str
    ) -> None:
        """Lookups by each designed column search an index (a composite's leftmost
        column serves run_id and parent_run_id), never scan the table."""
        runlog.init(db=str(db_path))
        conn = sqlite3.connect(db_path)
        plan = " ".join(
            row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN SELECT * FROM events WHERE {where}")
        )
        conn.close()
        assert f"USING INDEX {index}" in plan, plan

    def test_schema_version_is_recorded(self, db_path: Path) -> None:
        """PRAGMA user_version holds the number of migrations applied."""
        runlog.init(db=str(db_path))
        conn = sqlite3.connect(db_path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.close()

    def test_older_schema_is_migrated_in_place(self, db_path: Path) -> None:
        """A database at schema version 1 gets the later migrations and keeps its rows."""
        conn = sqlite3.connect(db_path)
        for sql in MIGRATIONS[0]:
            conn.execute(sql)
        conn.execute("INSERT INTO events VALUES (1, 1, 1, NULL, 'process.started', '{}')")
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
        conn.close()
        runlog.init(db=str(db_path))
        conn = sqlite3.connect(db_path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        conn.close()
        assert {"events_parent_run_id_event_type", "events_run_id_event_type"} <= names
        assert [r["id"] for r in rows(db_path)] == [1, 2]

    def test_wal_journal(self, db_path: Path) -> None:
        """The database uses write-ahead logging so readers and many writers coexist."""
        runlog.init(db=str(db_path))
        conn = sqlite3.connect(db_path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()

    def test_creation_is_idempotent_and_keeps_rows(self, db_path: Path) -> None:
        """A second process opening an existing database keeps its rows and schema."""
        python("import runlog; runlog.init(role='a')", db_path)
        python("import runlog; runlog.init(role='b')", db_path)
        kinds = [(r["event_type"], r["payload"].get("role")) for r in rows(db_path)]
        assert kinds == [
            ("process.started", "a"),
            ("process.exited", None),
            ("process.started", "b"),
            ("process.exited", None),
        ]


class TestDatabaseFile:
    def test_new_file_is_owner_only(self, db_path: Path) -> None:
        """A database runlog creates is readable and writable by its owner only."""
        runlog.init(db=str(db_path))
        runlog.flush()
        assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600
        for suffix in ("-wal", "-shm"):
            side = Path(str(db_path) + suffix)
            if side.exists():
                assert stat.S_IMODE(os.stat(side).st_mode) == 0o600

    def test_default_is_runlog_db_in_working_directory(self, tmp_path: Path) -> None:
        """Without settings the database is ./runlog.db."""
        runlog.init()
        assert (tmp_path / "runlog.db").exists()

    def test_env_var_names_the_database(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """RUNLOG_DB as sqlite:///path selects the file."""
        monkeypatch.setenv("RUNLOG_DB", f"sqlite:///{tmp_path}/env.db")
        runlog.init()
        assert (tmp_path / "env.db").exists()

    def test_init_argument_beats_env(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """init(db=...) overrides RUNLOG_DB."""
        monkeypatch.setenv("RUNLOG_DB", str(tmp_path / "env.db"))
        runlog.init(db=str(tmp_path / "arg.db"))
        assert (tmp_path / "arg.db").exists()
        assert not (tmp_path / "env.db").exists()

    def test_missing_folders_are_created(self, tmp_path: Path) -> None:
        """A database path in folders that do not exist yet creates them."""
        runlog.init(db=str(tmp_path / "a" / "b" / "events.db"))
        assert (tmp_path / "a" / "b" / "events.db").exists()

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("events.db", "events.db"),
            ("sqlite:///events.db", "events.db"),
            ("sqlite:////abs/events.db", "/abs/events.db"),
            ("sqlite:///sub%20dir/e.db", "sub dir/e.db"),
        ],
    )
    def test_url_forms(self, url: str, expected: str) -> None:
        """Paths and sqlite:/// URLs map to the file they name (four slashes: absolute)."""
        assert sqlite_path(url) == Path(expected)


class TestBadConfiguration:
    def test_unknown_scheme(self) -> None:
        """An unsupported URL scheme is a ConfigurationError that names it."""
        with pytest.raises(runlog.ConfigurationError, match="mysql://x/y"):
            runlog.init(db="mysql://x/y")

    def test_directory_as_database(self, tmp_path: Path) -> None:
        """A directory given as the database path is refused with its name."""
        with pytest.raises(runlog.ConfigurationError, match=str(tmp_path)):
            runlog.init(db=str(tmp_path))

    def test_unwritable_path(self, tmp_path: Path) -> None:
        """A path whose folder cannot be created raises an error naming the path."""
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        target = blocker / "sub" / "events.db"
        with pytest.raises(runlog.ConfigurationError, match=str(target)):
            runlog.init(db=str(target))

    def test_not_a_database(self, tmp_path: Path) -> None:
        """A file that is not SQLite gives a clear error at init()."""
        bogus = tmp_path / "bogus.db"
        bogus.write_bytes(b"this is not a database" * 100)
        with pytest.raises(runlog.StoreUnavailableError, match=r"bogus\.db"):
            runlog.init(db=str(bogus))

    def test_sqlite_url_with_host(self) -> None:
        """sqlite://host/path is refused: SQLite files have no host."""
        with pytest.raises(runlog.ConfigurationError, match="names a host"):
            open_store("sqlite://example/x.db").create()

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("RUNLOG_SYNC", "maybe"),
            ("RUNLOG_LOCK_TIMEOUT", "soon"),
            ("RUNLOG_MAX_PAYLOAD_BYTES", "0"),
        ],
    )
    def test_bad_environment_values(
        self, name: str, value: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A malformed RUNLOG_* variable is a ConfigurationError naming it."""
        monkeypatch.setenv(name, value)
        with pytest.raises(
            runlog.ConfigurationError,
            match=name.removeprefix("RUNLOG_").lower() if value == "0" else name,
        ):
            runlog.init()

    def test_wrong_argument_type(self) -> None:
        """init() with a wrongly typed argument raises TypeError at once."""
        with pytest.raises(TypeError, match="sync"):
            runlog.init(sync="yes")  # type: ignore[arg-type]


def foreign_database(path: Path, *, events: bool = True, version: int = 0) -> bytes:
    """Another application's SQLite file (rollback journal, its own tables); its bytes."""
    conn = sqlite3.connect(path)
    if events:
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, name TEXT, at TEXT)")
        conn.execute("INSERT INTO events (name, at) VALUES ('launch', '2026-01-01')")
    else:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    return path.read_bytes()


class TestForeignFiles:
    """Defect 5: a failed init() switched another application's file to WAL for good."""

    def test_foreign_events_table_is_left_byte_identical(self, tmp_path: Path) -> None:
        """An unrelated events table: a clear error naming what was found, nothing changed."""
        path = tmp_path / "app.db"
        before = foreign_database(path)
        with pytest.raises(runlog.ConfigurationError) as caught:
            runlog.init(db=str(path))
        message = str(caught.value)
        assert "not a runlog database" in message and "columns (id, name, at)" in message
        assert "user_version) 0" in message and str(path) in message
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no -wal, no -shm
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        conn.close()

    def test_another_applications_versioned_file_is_left_alone(self, tmp_path: Path) -> None:
        """No events table but a schema version of its own: not runlog's to migrate."""
        path = tmp_path / "app.db"
        before = foreign_database(path, events=False, version=7)
        with pytest.raises(runlog.ConfigurationError, match="no events table"):
            runlog.init(db=str(path))
        assert path.read_bytes() == before

    def test_implicit_run_on_a_foreign_file_changes_nothing(self, tmp_path: Path) -> None:
        """Without init(), the event is dropped and reported once; the file stays as it was."""
        path = tmp_path / "app.db"
        before = foreign_database(path)
        proc = python("import runlog; runlog.log_event('x', {'a': 1})", path)
        assert "not a runlog database" in proc.stderr
        assert path.read_bytes() == before

    def test_runlog_database_at_an_older_version_is_still_ours(self, db_path: Path) -> None:
        """The check accepts runlog's own files at every schema version."""
        runlog.init(db=str(db_path), sync=True)
        runlog.flush()
        from runlog._runs import reset_for_tests

        reset_for_tests()
        runlog.init(db=str(db_path), sync=True)
        assert len(rows(db_path)) == 2

    def test_foreign_events_table_on_postgresql_is_left_alone(self, pg_url: str) -> None:
        """PostgreSQL: an unrelated events table is refused, no table or index added."""
        import psycopg

        catalog = (
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = current_schema() ORDER BY 1"
        )
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE events (id SERIAL PRIMARY KEY, name TEXT, timestamp TEXT)")
            conn.execute("INSERT INTO events (name, timestamp) VALUES ('launch', 'today')")
            before = conn.execute(catalog).fetchall(), conn.execute("TABLE events").fetchall()
        with pytest.raises(runlog.ConfigurationError, match=r"columns \(id, name, timestamp\)"):
            runlog.init(db=pg_url)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            after = conn.execute(catalog).fetchall(), conn.execute("TABLE events").fetchall()
        assert after == before


class TestBatchInsert:
    """A batch is one multi-row INSERT per ``rows_per_statement`` rows, in one transaction."""

    @pytest.mark.parametrize("count", [1, 2, 999, 1000, 1001, 2500])
    def test_every_row_in_order(self, db_path: Path, count: int) -> None:
        store = open_store(str(db_path))
        store.create()
        store.write([(-1, 7, None, "opens", "{}")])  # the connection reads its limit first
        store._rows_per_statement = 1000  # type: ignore[attr-defined]
        batch = [(i, 7, None, "batch.row", f'{{"i":{i}}}') for i in range(count)]
        store.write(batch)
        store.close()
        assert [(r["timestamp"], r["payload"]["i"]) for r in rows(db_path)[1:]] == [
            (i, i) for i in range(count)
        ]

    def test_a_failing_batch_writes_nothing(self, db_path: Path) -> None:
        """A bad row in the third statement rolls back the two statements before it."""
        store = open_store(str(db_path))
        store.create()
        store.write([(0, 7, None, "opens", "{}")])  # the connection reads its limit first
        store._rows_per_statement = 10  # type: ignore[attr-defined]
        batch: list[tuple[object, ...]] = [(i, 7, None, "batch.row", "{}") for i in range(25)]
        batch[23] = (23, 7, None, None, "{}")  # event_type NOT NULL
        with pytest.raises(Exception, match="NOT NULL"):
            store.write(batch)  # type: ignore[arg-type]
        store.write([(99, 7, None, "after", "{}")])
        store.close()
        assert [r["event_type"] for r in rows(db_path)] == ["opens", "after"]
