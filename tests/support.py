"""Helpers for tests: read the table with plain sqlite3, run real child processes."""

from __future__ import annotations

import asyncio
import gc
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


async def collect_garbage() -> None:
    """``gc.collect()`` in a running event loop, then let the loop finish closing the
    async generators that the collection finalized.

    The HTTP clients' streams are nested async generators (httpx's byte stream around
    httpcore's).  Collected together, the inner one is closed twice (its own finalizer's
    ``aclose()`` and the outer one's ``aclosing``), and when the two interleave the loop
    reports "aclose(): asynchronous generator is already running".  That is the HTTP
    stack's clean-up racing itself, not the code under test, so those closings are
    awaited here (bounded) and that one error of theirs is not reported.
    """
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _closing_race(context.get("exception")):
            return
        if previous is None:
            loop.default_exception_handler(context)
        else:
            previous(loop, context)

    loop.set_exception_handler(handler)
    try:
        gc.collect()
        await asyncio.sleep(0)  # the finalizers' aclose() tasks are created on this turn
        closing = [
            t
            for t in asyncio.all_tasks()
            if type(t.get_coro()).__name__ == "async_generator_athrow" and not t.done()
        ]
        if closing:
            await asyncio.wait(closing, timeout=10)
        for task in closing:
            if task.done() and not task.cancelled():
                error = task.exception()  # retrieved: never reported as unretrieved
                if error is not None and not _closing_race(error):
                    loop.call_exception_handler({"message": "aclose() failed", "exception": error})
    finally:
        loop.set_exception_handler(previous)


def _closing_race(exc: object) -> bool:
    return isinstance(exc, RuntimeError) and "asynchronous generator is already running" in str(exc)
