"""The PostgreSQL backend: one ``events`` table on a server that processes on many hosts share.

It behaves like the SQLite backend; the choices that differ, and why:

* ``payload`` is ``TEXT``, not ``JSONB``: the column holds exactly the JSON text runlog
  wrote (key order, number formatting), as on SQLite, so ``Event.payload`` and raw
  readers see the same thing on both backends; JSONB would also refuse some text that
  SQLite keeps (``\\u0000`` escapes) and so drop a whole batch, and would cost a parse
  per row on the hot write path.  Queries still use JSON operators via ``payload::jsonb``.
* Schema: numbered migrations applied under a transaction-level advisory lock, the
  version kept in the one-row table ``runlog_meta``.  ``CREATE TABLE IF NOT EXISTS``
  alone races when many processes start at once (a unique violation in the catalog).
* A run is adopted in one statement: ``nextval`` of the identity's sequence feeds both
  ``id`` and ``run_id`` (``OVERRIDING SYSTEM VALUE``).
* A batch takes its ids from the sequence first (one round trip), then goes in as one
  ``COPY`` (a statement in autocommit mode: one transaction, two round trips).  Knowing
  the ids makes a retry exact when the connection drops while the commit is in flight
  (outcome unknown): the retry looks for the batch's first id and re-sends the batch,
  with the same ids, only if it is absent.  Should the first attempt still be
  committing (a server waiting on a synchronous standby), the primary key makes the
  re-send wait for it and fail with a unique violation, which means "written".
* Errors: a lost or refused connection, or a server shutting down, is
  :class:`StoreUnreachable`; lock and serialization failures are :class:`StoreBusy`;
  the rest is :class:`StoreFault`.  A broken connection is dropped and a new one opened
  on the next call (at once, once, when an idle connection turns out to be dead).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import conninfo, pq

from .. import _forksafe
from .._errors import ConfigurationError
from . import redact_url, url_password
from ._base import COLUMNS, ForeignDatabase, Row, StoreBusy, StoreFault, StoreUnreachable
from ._schema import migrations

T = TypeVar("T")


# Numbered migrations (see _schema), applied under the advisory lock; the number
# applied is runlog_meta.schema_version.
MIGRATIONS = migrations(
    id_column="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", integer="BIGINT"
)
SCHEMA_VERSION = len(MIGRATIONS)

_LOCK_KEY = 0x72756E6C6F67  # "runlog": serialises schema changes across all clients
_META = """CREATE TABLE IF NOT EXISTS runlog_meta (
    id             SMALLINT PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL
)"""
_SET_VERSION = (
    "INSERT INTO runlog_meta (id, schema_version) VALUES (1, %s)"
    " ON CONFLICT (id) DO UPDATE SET schema_version = EXCLUDED.schema_version"
)
# A recorded version counts only while the table exists (someone may drop it to reset).
_VERSION = "SELECT schema_version, to_regclass('events') IS NOT NULL FROM runlog_meta"
_READY = "SELECT schema_version, pg_get_serial_sequence('events', 'id') FROM runlog_meta"
_COLUMNS = "id, timestamp, run_id, parent_run_id, event_type, payload"
_START_RUN = (
    f"INSERT INTO events ({_COLUMNS}) OVERRIDING SYSTEM VALUE"
    " SELECT n.id, %s::bigint, n.id, %s::bigint, 'process.started', %s::text"
    " FROM (SELECT nextval(%s::regclass) AS id) AS n RETURNING id"
)
_FIND_RUN = (
    "SELECT id FROM events WHERE timestamp = %s::bigint AND event_type = 'process.started'"
    " AND id = run_id AND parent_run_id IS NOT DISTINCT FROM %s::bigint"
    " AND payload = %s::text ORDER BY id LIMIT 1"
)
_TABLE_COLUMNS = (
    "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = to_regclass('events')"
    " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)
_TAKE_ID = "SELECT nextval(%s::regclass)"
_TAKE_IDS = "SELECT array_agg(nextval(%s::regclass)) FROM generate_series(1, %s)"
_PRESENT = "SELECT EXISTS (SELECT 1 FROM events WHERE id = %s)"
_INSERT_ONE = (
    f"INSERT INTO events ({_COLUMNS}) OVERRIDING SYSTEM VALUE VALUES (%s, %s, %s, %s, %s, %s)"
)
_COPY = f"COPY events ({_COLUMNS}) FROM STDIN"

# Connection settings used unless the URL sets them: fail a connection attempt in
# bounded time, and notice a silently dead peer (network cut, NAT) within a minute.
_DEFAULTS = {
    "connect_timeout": "10",
    "application_name": "runlog",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
if pq.version() >= 120000:  # older libpq refuses the option
    _DEFAULTS["tcp_user_timeout"] = "60000"

_BUSY_STATES = frozenset({"40001", "40P01", "55P03", "57014", "53300"})
_GONE_STATES = frozenset({"57P01", "57P02", "57P03", "57P05", "25P03"})
# Refusals that waiting will not fix, recognised in libpq's connection-failure text
# (which carries no SQLSTATE); anything else failing to connect is treated as transient.
_REFUSED = re.compile(
    r"does not exist|authentication failed|no pg_hba\.conf entry|no password supplied"
    r"|not permitted to log in|permission denied",
    re.IGNORECASE,
)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _message(exc: psycopg.Error) -> str:
    """The error's main text, without the server's CONTEXT (which may quote event data)."""
    primary = exc.diag.message_primary if exc.sqlstate is not None else None
    return _one_line(primary or str(exc))


@dataclass(frozen=True)
class _Unsure:
    """A write whose COMMIT may or may not have happened, and the ids it used."""

    rows: Sequence[Row]
    ids: list[int]

    def matches(self, rows: Sequence[Row]) -> bool:
        return self.rows is rows or tuple(self.rows) == tuple(rows)


class PostgresStore:
    """The ``events`` table on a PostgreSQL server, shared by any number of processes."""

    placeholder = "%s"

    def __init__(self, db: str, *, readonly: bool = False) -> None:
        scheme, sep, rest = db.partition("://")
        db = scheme.lower() + sep + rest  # libpq knows the schemes in lower case only
        self.url = redact_url(db)
        raw = url_password(db)
        self._secrets = {raw, urllib.parse.unquote(raw)} - {""} if raw else set()
        try:
            given = conninfo.conninfo_to_dict(db)
        except psycopg.Error as exc:
            raise ConfigurationError(
                f"invalid PostgreSQL URL {self.url!r}: {self._scrub(_one_line(str(exc)))}"
            ) from None
        self._conninfo = conninfo.make_conninfo(
            db, **{k: v for k, v in _DEFAULTS.items() if k not in given}
        )
        self._conn: psycopg.Connection[Any] | None = None
        self.readonly = readonly
        self.lost = 0  # a server keeps what it committed
        self._sequence = ""
        self._lock = _forksafe.lock()
        self._unsure: _Unsure | None = None
        self._unsure_start: tuple[int, int | None, str] | None = None

    # -- connection -----------------------------------------------------------------
    def create(self) -> None:
        """Connect and create the schema now, so that init() reports an unusable server."""
        try:
            self._run(lambda conn: None)
        except ForeignDatabase as exc:
            raise ConfigurationError(f"{self.url!r} {exc}") from None
        if self.readonly:
            ((found,),) = self.query("SELECT to_regclass('events') IS NOT NULL")
            if not found:
                raise ConfigurationError(f"{self.url!r} is not a runlog database (no events table)")

    def json_text(self, key: str) -> str:
        return f"(payload::jsonb ->> '{key}')"

    def json_number(self, key: str) -> str:
        return (
            f"CASE WHEN jsonb_typeof(payload::jsonb -> '{key}') = 'number'"
            f" THEN (payload::jsonb ->> '{key}')::float8 END"
        )

    def _open(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._conninfo, autocommit=True)
        try:
            # READ COMMITTED: after waiting for the advisory lock, the next statement
            # sees what the previous holder committed, whatever the server's default.
            conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
            if not self.readonly:
                self._sequence = self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    @staticmethod
    def _migrate(conn: psycopg.Connection[Any]) -> str:
        """Bring the schema up to date; return the name of the ``id`` sequence."""
        with suppress(psycopg.errors.UndefinedTable):
            row = conn.execute(_READY).fetchone()
            if row is not None and row[0] >= SCHEMA_VERSION:
                return str(row[1])
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute(_META)
            row = conn.execute(_VERSION).fetchone()
            version = int(row[0]) if row is not None and row[1] else 0
            if version == 0:
                _check_ours(conn)  # raising rolls the transaction back: nothing changes
            for statements in MIGRATIONS[version:]:
                for sql in statements:
                    conn.execute(sql)
            conn.execute(_SET_VERSION, (max(version, SCHEMA_VERSION),))
            seq = conn.execute("SELECT pg_get_serial_sequence('events', 'id')").fetchone()
        assert seq is not None
        return str(seq[0])

    def _run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``work`` on the connection, mapping errors to StoreBusy/StoreFault.

        Every ``work`` here is safe to repeat, so when a connection that sat idle turns
        out to be dead (the server restarted meanwhile) it is run once more at once, on
        a new connection, rather than failing the call.
        """
        with self._lock:
            reused = self._conn is not None
            while True:
                conn = self._conn
                try:
                    return work(conn or self._open())
                except psycopg.Error as exc:
                    error = self._failed(exc)
                    if not (reused and isinstance(error, StoreUnreachable)):
                        raise error from exc
                    reused = False
                except BaseException:
                    self._forget_if_unusable()
                    raise

    def _failed(self, exc: psycopg.Error) -> Exception:
        """Translate ``exc``.  After a fault, reconnect next time (and so migrate again:
        the table may have been dropped); otherwise keep a connection still usable."""
        error = self._translate(exc)
        self._forget_if_unusable(force=isinstance(error, StoreFault))
        return error

    def _translate(self, exc: psycopg.Error) -> Exception:
        text = self._scrub(_message(exc))
        state = exc.sqlstate
        if state is None:
            refused = not isinstance(exc, psycopg.OperationalError) or _REFUSED.search(text)
            return StoreFault(text) if refused else StoreUnreachable(text)
        if state in _GONE_STATES or state.startswith("08"):
            return StoreUnreachable(text)
        if state in _BUSY_STATES:
            return StoreBusy(text)
        return StoreFault(text)

    def _forget_if_unusable(self, *, force: bool = False) -> None:
        conn = self._conn
        if conn is None:
            return
        idle = pq.TransactionStatus.IDLE
        if force or conn.closed or conn.broken or conn.info.transaction_status != idle:
            self._conn = None
            with suppress(Exception):
                conn.close()

    def _scrub(self, text: str) -> str:
        """Never let the URL's password into a message."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # -- the Store protocol -----------------------------------------------------------
    def start_run(self, timestamp: int, parent_run_id: int | None, payload: str) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            key = (timestamp, parent_run_id, payload)
            if self._unsure_start == key:  # the last attempt may have committed
                found = conn.execute(_FIND_RUN, key).fetchone()
                if found is not None:
                    self._unsure_start = None
                    return int(found[0])
            self._unsure_start = key
            run_id = _adopt(conn, key, self._sequence)
            self._unsure_start = None
            return run_id

        return self._run(work)

    def write(self, rows: Sequence[Row]) -> None:
        if rows:
            self._run(lambda conn: self._write(conn, rows))

    def _write(self, conn: psycopg.Connection[Any], rows: Sequence[Row]) -> None:
        unsure = self._unsure
        retry = unsure is not None and unsure.matches(rows)
        if unsure is not None and retry:
            if _present(conn, unsure.ids[0]):
                self._unsure = None
                return
            ids = unsure.ids
        else:
            ids = _take_ids(conn, self._sequence, len(rows))
            self._unsure = _Unsure(rows, ids)
        try:
            _insert(conn, ids, rows)
        except psycopg.errors.UniqueViolation:
            if not retry:
                raise
            # The earlier attempt was still committing when we looked; our ids made this
            # insert wait for it, and it committed: the rows are there, once.
        except UnicodeError as exc:  # text the server's encoding cannot hold
            self._unsure = None
            raise StoreFault(f"an event cannot be encoded: {exc}") from exc
        self._unsure = None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query (``%s`` placeholders) and return all rows."""
        return self._run(lambda conn: conn.execute(sql, params).fetchall())

    def verify(self) -> None:
        """Nothing to check: a committed row stays on the server."""

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with suppress(Exception):
                    conn.close()

    def abandon(self) -> None:
        # The connection's socket is shared with the parent: close() here would end the
        # parent's session.  Forget it without closing (psycopg's finaliser leaves a
        # connection of another process alone); kept referenced, so as not to warn.
        _abandoned.append(self._conn)
        self._conn = None
        self._lock = _forksafe.lock()
        self._unsure = None
        self._unsure_start = None


_abandoned: list[Any] = []


def _check_ours(conn: psycopg.Connection[Any]) -> None:
    """Raise ForeignDatabase if an ``events`` table exists that is not runlog's."""
    found = conn.execute(_TABLE_COLUMNS).fetchall()
    columns = tuple(str(name) for (name,) in found)
    if columns and columns != COLUMNS:
        raise ForeignDatabase(
            f"is not a runlog database: its events table has columns ({', '.join(columns)}) "
            "and no runlog schema version; runlog left it unchanged. Use another database "
            "or schema."
        )


def _take_ids(conn: psycopg.Connection[Any], sequence: str, count: int) -> list[int]:
    """``count`` new ids from the table's sequence, ascending, in one round trip."""
    if count == 1:
        row = conn.execute(_TAKE_ID, (sequence,)).fetchone()
        assert row is not None
        return [int(row[0])]
    row = conn.cursor(binary=True).execute(_TAKE_IDS, (sequence, count)).fetchone()
    assert row is not None
    return sorted(row[0])


def _present(conn: psycopg.Connection[Any], first_id: int) -> bool:
    """Whether the batch whose first id is ``first_id`` is committed (batches are atomic)."""
    row = conn.execute(_PRESENT, (first_id,)).fetchone()
    return bool(row and row[0])


def _adopt(conn: psycopg.Connection[Any], key: tuple[int, int | None, str], sequence: str) -> int:
    """Insert ``process.started`` with ``run_id = id`` in one statement; return the id."""
    row = conn.execute(_START_RUN, (*key, sequence)).fetchone()
    assert row is not None
    return int(row[0])


def _insert(conn: psycopg.Connection[Any], ids: list[int], rows: Sequence[Row]) -> None:
    """Insert ``rows`` with the given ids, atomically: one INSERT, or one COPY (autocommit)."""
    if len(rows) == 1:
        conn.execute(_INSERT_ONE, (ids[0], *rows[0]))
        return
    with conn.cursor().copy(_COPY) as copy:
        for id_, row in zip(ids, rows, strict=True):
            copy.write_row((id_, *row))


__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresStore", "StoreUnreachable"]
