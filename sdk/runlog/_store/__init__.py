"""The store: the ``events`` table and the backends that hold it.

``open_store(db)`` picks the backend from the database setting: a path or
``sqlite:///path`` is SQLite; ``postgresql://`` or ``postgres://`` is PostgreSQL, whose
driver (psycopg 3, the ``runlog[postgres]`` extra) is imported only then, so that
``import runlog`` never imports it.
"""

from __future__ import annotations

import re

from .._errors import ConfigurationError
from ._base import Event, Row, Store, StoreBusy, StoreFault, StoreUnreachable
from ._reader import Reader
from ._sqlite import SQLiteStore

_POSTGRES = ("postgresql", "postgres")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def _split(url: str) -> tuple[str, str, str]:
    """``scheme://`` + authority (``user:password@hosts``) + the rest of the URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", url
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0], default=len(rest))
    return scheme + sep, rest[:end], rest[end:]


def url_password(url: str) -> str | None:
    """The password written in ``url`` (user info or ``password=`` parameter), if any."""
    _, authority, tail = _split(url)
    userinfo, at, _ = authority.rpartition("@")
    if at and ":" in userinfo:
        return userinfo.split(":", 1)[1]
    found = re.search(r"[?&]password=([^&#]*)", tail, re.IGNORECASE)
    return found.group(1) if found else None


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: the form used in every message."""
    head, authority, tail = _split(url)
    userinfo, at, hosts = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    return head + authority + _QUERY_PASSWORD.sub(r"\1***", tail)


def open_store(db: str, *, readonly: bool = False, lock_timeout: float = 30.0) -> Store:
    """Return the store ``db`` names (nothing is opened yet; call ``create()``).

    ``readonly``: for readers such as the ``runlog`` command, which must neither
    create a database nor change its schema.  ``lock_timeout``: the writer's bound on
    waiting out a lock; one attempt waits at most a twentieth of it, so the whole
    wait ends within 10% of the bound.
    """
    scheme = db.split(":", 1)[0].lower() if "://" in db else ""
    if scheme in ("", "sqlite", "file"):
        path = db[len("file://") :] if scheme == "file" else db
        return SQLiteStore(path, readonly=readonly, busy_timeout=min(2.0, lock_timeout / 20))
    if scheme in _POSTGRES:
        return _postgres_store(db, readonly)
    raise ConfigurationError(
        f"unsupported database URL {redact_url(db)!r}: use a file path, sqlite:///path "
        "or postgresql://user@host/dbname"
    )


def _postgres_store(db: str, readonly: bool) -> Store:
    try:
        from ._postgres import PostgresStore
    except ImportError as exc:
        raise ConfigurationError(
            f"runlog cannot use the PostgreSQL database {redact_url(db)!r}: its driver, "
            f"psycopg 3, is not importable ({exc}). Install it with: "
            "pip install 'runlog[postgres]'"
        ) from None
    return PostgresStore(db, readonly=readonly)


__all__ = [
    "Event",
    "Reader",
    "Row",
    "Store",
    "StoreBusy",
    "StoreFault",
    "StoreUnreachable",
    "open_store",
    "redact_url",
    "url_password",
]
