"""The SQLite backend: one file, many writer processes (WAL, busy timeout, retries).

The file is watched:

* **deleted or replaced** (another inode at the path), checked at most every 50 ms of
  writing and on every ``flush()``: the connection would go on writing to the unlinked
  inode, a silent total loss.  The rows written since the last check are counted as
  lost, the change is reported once, and writing resumes on a fresh file (schema
  included) at the same path.
* **``-shm`` no longer writable** (``chattr +i``, a permission change), checked before
  every write (one ``access`` call): SQLite's shared-memory map of the WAL index would
  raise SIGBUS when it next grows or faults a page in, killing the process.  The
  connection is dropped before that can happen, and writes fail (counted, reported
  once) until the file is usable again.  WAL stays: a rollback journal (no shared
  memory) would put two fsyncs on every commit and make readers block writers; the
  one case left is a change landing inside the microseconds of a write in progress.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

from .. import _forksafe
from .._errors import ConfigurationError, warn_once
from ._base import COLUMNS, ForeignDatabase, Row, StoreBusy, StoreFault
from ._schema import migrations

T = TypeVar("T")

# Numbered migrations (see _schema); the number applied is PRAGMA user_version.
MIGRATIONS = migrations(id_column="INTEGER PRIMARY KEY", integer="INTEGER")
SCHEMA_VERSION = len(MIGRATIONS)

_INSERT = (
    "INSERT INTO events (timestamp, run_id, parent_run_id, event_type, payload)"
    " VALUES (?, ?, ?, ?, ?)"
)
_ROW = "(?, ?, ?, ?, ?)"
_MAX_ROWS_PER_STATEMENT = 2_000
"""Rows in one ``INSERT``: the default batch in one statement (within SQLite's variable
limit, which is read from the connection)."""


@functools.lru_cache(maxsize=64)
def _insert(rows: int) -> str:
    """``INSERT ... VALUES (?, ...), (?, ...)`` for ``rows`` rows."""
    return _INSERT + (", " + _ROW) * (rows - 1)


_SQLITE_LIMIT_VARIABLE_NUMBER = 9  # sqlite3's constant from Python 3.11 on


def _variable_limit(conn: sqlite3.Connection) -> int:
    """How many ``?`` one statement may hold (32,766 since SQLite 3.32, 999 before)."""
    getlimit = getattr(conn, "getlimit", None)  # Python 3.11+
    if getlimit is not None:
        return int(getlimit(_SQLITE_LIMIT_VARIABLE_NUMBER))
    return 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


_BUSY_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
# How long one attempt lets SQLite's own busy handler wait; the writer retries on top.
_BUSY_TIMEOUT_S = 2.0
_CHECK_EVERY_S = 0.05  # how often a writing connection checks its file is still the one
_IN_SQLITE = _forksafe.Section("sqlite")
"""Every call into SQLite: a fork waits for them (SQLite's own mutexes, see _forksafe)."""


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _translate(exc: sqlite3.Error) -> Exception:
    return StoreBusy(str(exc)) if _is_busy(exc) else StoreFault(str(exc))


def sqlite_path(db: str) -> Path:
    """Map ``runlog.db``, ``/abs/path.db`` or ``sqlite:///path`` to a filesystem path."""
    if db.startswith("sqlite:"):
        parsed = urllib.parse.urlsplit(db)
        if parsed.netloc not in ("", "localhost"):
            raise ConfigurationError(
                f"SQLite URL {db!r} names a host; use sqlite:///relative.db or "
                "sqlite:////absolute/path.db"
            )
        raw = urllib.parse.unquote(parsed.path)
        raw = raw[1:] if raw.startswith("/") else raw
        if not raw:
            raise ConfigurationError(f"SQLite URL {db!r} has no file path")
        return Path(raw).expanduser()
    return Path(db).expanduser()


def _make_folders(folder: Path) -> None:
    """Create ``folder`` and each missing parent owner-only (``mkdir(parents=True)`` gives
    the parents the umask's mode, typically 0755)."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for one in reversed(missing):
        with suppress(FileExistsError):  # another process made it meanwhile
            one.mkdir(mode=0o700)


def _create_file(path: Path) -> None:
    """Create the database file (and its folder) readable by its owner only."""
    try:
        _make_folders(path.parent)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigurationError(
            f"runlog cannot create its SQLite database at {str(path)!r}: {exc.strerror}. "
            "Set RUNLOG_DB (or init(db=...)) to a writable path."
        ) from None
    os.close(fd)


class SQLiteStore:
    """The ``events`` table in one SQLite file, shared by any number of processes."""

    placeholder = "?"

    def __init__(
        self, db: str, *, readonly: bool = False, busy_timeout: float = _BUSY_TIMEOUT_S
    ) -> None:
        # Resolved once: a later os.chdir must not move the database under the process.
        self.path = sqlite_path(db).absolute()
        self.url = f"sqlite:///{self.path}"
        self.readonly = readonly
        self._busy_timeout = busy_timeout
        self._rows_per_statement = _MAX_ROWS_PER_STATEMENT
        self._shm = f"{self.path}-shm"
        self._conn: sqlite3.Connection | None = None
        self._lock = _forksafe.lock()
        self._identity: tuple[int, int] | None = None
        """(st_dev, st_ino) of the file the connection has open."""
        self._checked_at = 0.0
        self._unchecked_rows = 0
        self.lost = 0
        """Rows committed to a file that was deleted or replaced before they were read."""
        self.replaced = 0
        """How many times the file was found deleted or replaced (and made anew)."""
        _stores.add(self)

    # -- connection -------------------------------------------------------------
    def create(self) -> None:
        """Create the file and schema now, raising a clear error if the path is unusable."""
        name = str(self.path)
        if self.readonly:
            self._check_readable(name)
            return
        try:
            if self.path.is_dir():
                raise ConfigurationError(f"runlog's database path is a directory: {name!r}")
            _create_file(self.path)
            usable = os.access(self.path, os.R_OK | os.W_OK)
        except OSError as exc:
            raise ConfigurationError(
                f"runlog cannot use its SQLite database at {name!r}: {exc.strerror}"
            ) from None
        if not usable:
            raise ConfigurationError(
                f"runlog's SQLite database {name!r} is not writable by this process; "
                "set RUNLOG_DB (or init(db=...)) to a writable path"
            )
        try:
            self._run(lambda conn: None)
        except ForeignDatabase as exc:
            raise ConfigurationError(str(exc)) from None

    def _check_readable(self, name: str) -> None:
        if not self.path.is_file():
            raise ConfigurationError(f"no runlog database at {name!r}")
        try:
            tables = self._run(
                lambda conn: conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'events'"
                ).fetchall()
            )
        except StoreFault as exc:
            raise ConfigurationError(f"{name!r} is not a runlog database ({exc})") from None
        if not tables:
            raise ConfigurationError(f"{name!r} is not a runlog database (no events table)")

    def json_text(self, key: str) -> str:
        # As text, as PostgreSQL's ->> gives it: json_extract gives the number 7 for 7
        # (not equal to '7') and 1 for true.
        path = f"payload, '$.{key}'"
        return (
            f"CASE json_type({path}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'"
            f" ELSE CAST(json_extract({path}) AS TEXT) END"
        )

    def json_number(self, key: str) -> str:
        return (
            f"CASE WHEN json_type(payload, '$.{key}') IN ('integer', 'real')"
            f" THEN json_extract(payload, '$.{key}') END"
        )

    def _connect(self) -> sqlite3.Connection:
        if _forksafe.tainted(_IN_SQLITE.library):
            raise StoreFault(
                "this process was forked while another thread was inside SQLite; "
                "SQLite cannot be used here (its locks belong to that thread)"
            )
        # mode=rw: never silently create a new, empty file after the first one vanished.
        mode = "ro" if self.readonly else "rw"
        uri = f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode={mode}"
        conn = sqlite3.connect(
            uri,
            uri=True,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        if self.readonly:
            return conn
        try:
            _check_ours(conn, str(self.path))  # before anything changes the file
            self._identity = _identity(self.path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._checked_at = time.monotonic()
        self._rows_per_statement = min(_MAX_ROWS_PER_STATEMENT, _variable_limit(conn) // 5)
        return conn

    def _check_file(self) -> None:
        """Drop the connection if its file is gone or replaced.

        Called with the lock held, before a write.  After a replacement the file is made
        anew (``mode=rw`` alone would refuse to create it), schema and all.
        """
        self._checked_at = time.monotonic()
        unchecked, self._unchecked_rows = self._unchecked_rows, 0
        if self._conn is None:
            return
        identity = _identity(self.path)
        if identity != self._identity:
            self.lost += unchecked
            self.replaced += 1
            self._drop_connection()
            warn_once(
                f"replaced:{self.path}:{self.replaced}",
                "runlog's database %s was deleted or replaced; %d event(s) written to the "
                "old file are lost; writing resumes on a new file at the same path",
                self.url,
                unchecked,
            )
            if identity is None:
                try:
                    _create_file(self.path)
                except ConfigurationError as exc:  # the folder went too: fail this write
                    raise StoreFault(str(exc)) from None

    def _check_shm(self) -> None:
        """Refuse to write through a WAL index that SQLite could not extend (SIGBUS)."""
        if os.access(self._shm, os.W_OK) or not os.path.exists(self._shm):
            return
        # Closing would checkpoint through the map and raise SIGBUS itself: the
        # connection is set aside, never touched or freed again (one per outage).
        conn, self._conn = self._conn, None
        if conn is not None:
            _keep_forever(conn)
        raise StoreFault(f"{self._shm} (SQLite's WAL index) is not writable")

    def verify(self) -> None:
        """Check the file now (``flush()`` does, so its answer covers a deleted file)."""
        if self.readonly:
            return
        with _IN_SQLITE, self._lock:
            self._check_file()

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version >= SCHEMA_VERSION:
            return
        with _transaction(conn):
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            for statements in MIGRATIONS[version:]:
                for sql in statements:
                    conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _open(self) -> sqlite3.Connection:
        self._conn = self._connect()
        return self._conn

    def _failed(self, exc: sqlite3.Error) -> Exception:
        """Translate ``exc``; after a fault, reconnect next time (the file may be back)."""
        translated = _translate(exc)
        if isinstance(translated, StoreFault):
            self._drop_connection()
        return translated

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on the connection, mapping SQLite errors to StoreBusy/StoreFault."""
        with _IN_SQLITE, self._lock:
            try:
                return work(self._conn or self._open())
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(sqlite3.Error):
                conn.close()

    # -- the Store protocol -------------------------------------------------------
    def start_run(self, timestamp: int, parent_run_id: int | None, payload: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                cur = conn.execute(
                    _INSERT, (timestamp, 0, parent_run_id, "process.started", payload)
                )
                self._unchecked_rows += 1
                run_id = cur.lastrowid
                assert run_id is not None
                conn.execute("UPDATE events SET run_id = ? WHERE id = ?", (run_id, run_id))
            return run_id

        return self._run(work)

    def write(self, rows: Sequence[Row]) -> None:
        """Insert ``rows`` in one transaction, as few statements as the variable limit allows.

        One multi-row ``INSERT`` is one ``sqlite3_step``, run without the GIL: the
        whole batch, indexes and commit included, is written while the application's
        threads run Python.  ``executemany`` would release and take back the GIL for
        every row, and taking it back from a busy thread waits for the interpreter's
        switch interval (5 ms) each time.
        """
        # The hot path of every event: inline rather than through _run and _transaction.
        with _IN_SQLITE, self._lock:
            try:
                if time.monotonic() - self._checked_at >= _CHECK_EVERY_S:
                    self._check_file()
                self._check_shm()
                conn = self._conn or self._open()
                step = self._rows_per_statement
                if len(rows) <= step:  # one statement: its own transaction
                    conn.execute(_insert(len(rows)), list(chain.from_iterable(rows)))
                else:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        for start in range(0, len(rows), step):
                            chunk = rows[start : start + step]
                            conn.execute(_insert(len(chunk)), list(chain.from_iterable(chunk)))
                        conn.execute("COMMIT")
                    except BaseException:
                        _rollback(conn)
                        raise
                self._unchecked_rows += len(rows)
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query (``?`` placeholders) and return all rows."""
        return self._run(lambda conn: conn.execute(sql, params).fetchall())

    def close(self) -> None:
        with _IN_SQLITE, self._lock:
            self._drop_connection()

    def abandon(self) -> None:
        """In a forked child: forget the parent's connection without touching it.

        Closing an inherited SQLite connection can corrupt the parent's locks; it is
        kept alive instead, and never freed at all where SQLite is tainted (freeing it
        calls into SQLite, whose mutexes another thread of the parent held).
        """
        conn, self._conn = self._conn, None
        self._lock = _forksafe.lock()
        if conn is not None:
            if _forksafe.tainted(_IN_SQLITE.library):
                _keep_forever(conn)
            else:
                _abandoned.append(conn)


_abandoned: list[Any] = []
_stores: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
"""Every store of this process: a forked child abandons all of their connections."""


def _after_fork_in_child() -> None:
    for store in list(_stores):
        store.abandon()


def _keep_forever(conn: sqlite3.Connection) -> None:
    """Make sure ``conn`` is never closed, not even when the interpreter shuts down."""
    import ctypes

    ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _check_ours(conn: sqlite3.Connection, name: str) -> None:
    """Raise ForeignDatabase, changing nothing, unless the file is empty or runlog's.

    Another application's database (an ``events`` table of its own, or a schema version
    of its own) is left exactly as it was, journal mode included.
    """
    conn.execute("BEGIN")  # one snapshot: another process may be creating the schema
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(events)"))
    finally:
        conn.execute("COMMIT")
    if not columns and version == 0:
        return  # a new file, or a database without runlog's table yet
    if columns[: len(COLUMNS)] == COLUMNS and version >= 1:  # runlog's, maybe newer
        return
    found = f"an events table with columns ({', '.join(columns)})" if columns else "no events table"
    raise ForeignDatabase(
        f"{name!r} is not a runlog database: it has {found} and schema version "
        f"(PRAGMA user_version) {version}; runlog left it unchanged. Point RUNLOG_DB "
        "(or init(db=...)) at another file."
    )


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore", "sqlite_path"]
