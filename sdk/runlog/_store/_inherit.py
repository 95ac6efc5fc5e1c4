"""Where a child process writes: the database setting runlog puts in its environment.

One process tree writes one table.  A child inherits ``RUNLOG_DB`` as its parent
resolved it: an SQLite database as an absolute path (a child started in another
working directory must not open its own ``./runlog.db``), a PostgreSQL URL as given —
except its password, which never goes into the environment: it is written to an
owner-only ``passfile`` (libpq's own password file format) that the URL names instead.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.parse
from pathlib import Path

from .._errors import warn_once
from . import Store, redact_url, url_password
from ._sqlite import SQLiteStore

_VAR = "RUNLOG_DB"


def child_db(db: str, store: Store) -> str | None:
    """The ``RUNLOG_DB`` value for this process's children (None: leave it as it is)."""
    if isinstance(store, SQLiteStore):
        return str(store.path.absolute())
    if os.environ.get(_VAR) == db:
        return None  # the user's own variable: children inherit it unchanged
    password = url_password(db)
    if password is None:
        return db
    try:
        passfile = _write_passfile(password)
    except OSError as exc:
        warn_once(
            "passfile",
            "runlog could not write a password file for child processes (%s); they will "
            "connect to %s without a password",
            exc,
            redact_url(db),
        )
        return _without_password(db)
    return _with_param(_without_password(db), "passfile", str(passfile))


def _write_passfile(password: str) -> Path:
    """An owner-only pgpass file matching any server, holding ``password``."""
    folder = Path(tempfile.gettempdir()) / f"runlog-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    digest = hashlib.sha256(password.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    path = folder / f"pgpass-{digest}"
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"*:*:*:*:{escaped}\n")
    return path


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}@{hosts}"
    query = [
        (k, v)
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() != "password"
    ]
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path, urllib.parse.urlencode(query), parts.fragment)
    )


def _with_param(url: str, name: str, value: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in query if k != name] + [(name, value)]
    return urllib.parse.urlunsplit(
        (parts.scheme, parts.netloc, parts.path, urllib.parse.urlencode(query), parts.fragment)
    )


__all__ = ["child_db"]
