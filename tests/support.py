"""Helpers for tests: read the table with plain sqlite3, run real child processes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any


def rows(
    db: Path, sql: str = "SELECT * FROM events ORDER BY id", *params: Any
) -> list[dict[str, Any]]:
    """Read the table with plain sqlite3 (not through runlog); decode payloads."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        out = [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()
    for row in out:
        if isinstance(row.get("payload"), str):
            row["payload"] = json.loads(row["payload"])
    return out


def child_env(db: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment for a child Python process of a test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNLOG_")}
    for name in ("PARENT_RUN_ID", "TRACEPARENT", "PARENT_SPAN_ID"):
        env.pop(name, None)
    env["RUNLOG_RAISE_INTERNAL_ERRORS"] = "1"
    env["RUNLOG_TIKTOKEN_ENCODING"] = os.environ.get("RUNLOG_TIKTOKEN_ENCODING", "")
    env["PYTHONUNBUFFERED"] = "1"
    if db is not None:
        env["RUNLOG_DB"] = str(db)
    env.update(extra)
    return env


def script(code: str) -> str:
    """Write ``code`` (dedented) to a file, so multiprocessing's spawn can re-import it."""
    fd, path = tempfile.mkstemp(suffix=".py", prefix="child_")
    with os.fdopen(fd, "w") as f:
        f.write(textwrap.dedent(code))
    return path


def python(
    code: str, db: Path | None = None, *, check: bool = True, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh Python process and wait for it."""
    proc = subprocess.run(
        [sys.executable, script(code)],
        env=child_env(db, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"child exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


def spawn(code: str, db: Path | None = None, **extra: str) -> subprocess.Popen[str]:
    """Start ``code`` in a Python process with pipes for a line-by-line conversation."""
    proc = subprocess.Popen(
        [sys.executable, script(code)],
        env=child_env(db, **extra),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    spawned.append(proc)
    return proc


spawned: list[subprocess.Popen[str]] = []


def reap() -> None:
    """Kill what a test left running and close every pipe (the conftest calls this)."""
    while spawned:
        proc = spawned.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
