"""A throwaway PostgreSQL server for the tests (and the PostgreSQL benchmark).

pytest-postgresql's ``PostgreSQLExecutor`` does the work: ``pg_ctl initdb`` (trust
auth), ``start -w`` on a free port and ``stop -m fast``.  We use the executor rather
than the plugin's ``postgresql_proc`` fixture for two reasons:

* PostgreSQL refuses to run as root, and CI runs as root.  The executor runs whatever
  ``pg_ctl`` it is given, so as root it is given a two-line wrapper that runs the real
  one as the ``postgres`` system user (``runuser``); the server's folder (data, socket,
  log, wrapper) is a fresh temporary directory owned by that user.  The fixture would
  put the data directory under pytest's root-only (0700) temporary tree instead.
* The restart tests need to stop and start the same cluster in the middle of a test;
  the executor can, and keeps its data directory across a restart.

The server listens on 127.0.0.1 only.  Each test gets a database of its own
(:meth:`PgServer.create_database`), so schema tests see an empty database.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg
    from pytest_postgresql.executors import PostgreSQLExecutor

SERVER_USER = "postgres"
"""The unprivileged account the server runs as when the tests run as root."""

REQUIRE_ENV = "TEST_REQUIRE_POSTGRES"
"""Set to 1 (CI) to make missing server binaries a failure instead of a skip."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_pg_ctl() -> Path | None:
    """Where ``pg_ctl`` is: ``pg_config --bindir``, Debian's versioned folders, then PATH."""
    candidates: list[Path] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
        candidates.append(Path(bindir) / "pg_ctl")
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=_version_key, reverse=True
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path))
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


def why_unavailable() -> str | None:
    """Why no server can be started here (a skip reason), or None if one can."""
    try:
        import psycopg  # noqa: F401
        import pytest_postgresql  # noqa: F401
    except ImportError as exc:
        return f"PostgreSQL tests need psycopg and pytest-postgresql ({exc})"
    if find_pg_ctl() is None:
        return (
            "PostgreSQL server binaries not found (no pg_ctl via `pg_config --bindir`, "
            "/usr/lib/postgresql/*/bin or PATH); install the server package "
            "(Debian: postgresql) to run the PostgreSQL tests"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and `runuser` is missing to start PostgreSQL as postgres"
    return None


def _prepare_folder() -> Path:
    """A fresh folder for data, socket and log, owned by the user the server runs as."""
    folder = Path(tempfile.mkdtemp(prefix="runlog-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam(SERVER_USER)
        os.chown(folder, account.pw_uid, account.pw_gid)
    return folder


def _wrapper(folder: Path, pg_ctl: Path) -> Path:
    """As root: a script that runs ``pg_ctl`` as the server user (from a folder it may enter)."""
    if os.geteuid() != 0:
        return pg_ctl
    script = folder / "pg_ctl-as-postgres"
    command = f"cd {shlex.quote(str(folder))} && exec runuser -u {SERVER_USER} --"
    script.write_text(f'#!/bin/sh\n{command} {shlex.quote(str(pg_ctl))} "$@"\n')
    script.chmod(0o755)
    return script


class PgServer:
    """One running PostgreSQL cluster, with helpers to restart it and make databases."""

    def __init__(self, executor: PostgreSQLExecutor, folder: Path) -> None:
        self.executor = executor
        self.folder = folder
        self.host: str = executor.host
        self.port: int = executor.port
        self.user: str = executor.user
        self._count = 0

    @classmethod
    def launch(cls) -> PgServer:
        """initdb and start a new cluster on a free port of 127.0.0.1."""
        import port_for
        from pytest_postgresql.executors import PostgreSQLExecutor

        pg_ctl = find_pg_ctl()
        if pg_ctl is None:
            raise RuntimeError(why_unavailable())
        folder = _prepare_folder()
        executor = PostgreSQLExecutor(
            executable=str(_wrapper(folder, pg_ctl)),
            host="127.0.0.1",
            port=port_for.select_random(),
            datadir=str(folder / "data"),
            unixsocketdir=str(folder),
            logfile=str(folder / "server.log"),
            startparams="-w",
            dbname="postgres",
            user=SERVER_USER,
            postgres_options="-c listen_addresses=127.0.0.1 -c max_connections=200",
        )
        server = cls(executor, folder)
        try:
            executor.start()
            server.wait_until_ready()
        except BaseException as exc:
            log = server.log_tail()
            server.close()
            raise RuntimeError(f"PostgreSQL did not start ({exc!r}); its log:\n{log}") from exc
        return server

    # -- lifecycle ----------------------------------------------------------------
    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``: open sessions are terminated)."""
        self.executor.stop()

    def start(self) -> None:
        """Start the stopped server again, on the same port with the same data.

        Returns once the server accepts a session: ``pg_ctl start -w`` can return while
        a restarted server still answers "the database system is starting up".
        """
        self.executor.start()
        self.wait_until_ready()

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Poll (bounded) until a new session can run a query."""
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Keep the server stopped for the block; it is running again afterwards."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def close(self) -> None:
        """Stop the server if it runs and delete its folder."""
        with contextlib.suppress(Exception):
            if self.executor.running():
                self.executor.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for failure messages."""
        with contextlib.suppress(OSError):
            return "\n".join((self.folder / "server.log").read_text().splitlines()[-lines:])
        return ""

    # -- databases ------------------------------------------------------------------
    def url(self, dbname: str = "postgres", password: str | None = None) -> str:
        """A ``postgresql://`` URL for ``dbname`` (any password works: trust auth)."""
        secret = f":{password}" if password is not None else ""
        return f"postgresql://{self.user}{secret}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """A plain psycopg connection in autocommit mode (not through runlog)."""
        import psycopg

        return psycopg.connect(self.url(dbname), autocommit=True, **kwargs)

    def create_database(self) -> str:
        """Create a new empty database and return its name."""
        self._count += 1
        name = f"test_{os.getpid()}_{self._count}"
        self._janitor(name).init()
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, terminating any sessions still connected to it."""
        self._janitor(name).drop()

    def _janitor(self, name: str) -> Any:
        from pytest_postgresql.janitor import DatabaseJanitor

        return DatabaseJanitor(
            user=self.user, host=self.host, port=self.port, dbname=name, connection_timeout=30
        )


_shared: PgServer | None = None
_launch_error: str | None = None


def shared_server(config: Any) -> PgServer:
    """The session's one server, started on first use and stopped when pytest ends.

    The fixture may be collected once per test module that defines it; the server is
    kept here so that every module gets the same one, stopped once through ``config``.
    A failed start is remembered, so later tests fail at once with the same message.
    """
    global _shared, _launch_error
    if _launch_error is not None:
        raise RuntimeError(_launch_error)
    if _shared is None:
        try:
            _shared = PgServer.launch()
        except Exception as exc:
            _launch_error = f"the test PostgreSQL server did not start: {exc!r}"
            raise
        config.add_cleanup(_close_shared)
    return _shared


def _close_shared() -> None:
    global _shared
    server, _shared = _shared, None
    if server is not None:
        server.close()


def server_for_tests(config: Any) -> PgServer:
    """The shared server; skip the test (fail it under TEST_REQUIRE_POSTGRES=1) if impossible."""
    import pytest

    reason = why_unavailable()
    if reason is not None:
        if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
            pytest.fail(f"{REQUIRE_ENV} is set but {reason}")
        pytest.skip(reason)
    return shared_server(config)


@contextlib.contextmanager
def fresh_database(server: PgServer) -> Iterator[str]:
    """A new empty database for one test; its URL.  Dropped afterwards."""
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        from runlog import _runs

        _runs.reset_for_tests()  # close runlog's own connection before the drop
        server.drop_database(name)


__all__ = [
    "REQUIRE_ENV",
    "SERVER_USER",
    "PgServer",
    "find_pg_ctl",
    "fresh_database",
    "server_for_tests",
    "shared_server",
    "why_unavailable",
]
