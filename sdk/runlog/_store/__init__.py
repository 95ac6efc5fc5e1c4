"""The store: the ``events`` table and the backends that hold it.

``open_store(db)`` picks the backend from the database setting: a path or
``sqlite:///path`` is SQLite.
"""

from __future__ import annotations

from .._errors import ConfigurationError
from ._base import Event, Row, Store, StoreBusy, StoreFault
from ._sqlite import SQLiteStore


def open_store(db: str) -> Store:
    """Return the store ``db`` names (nothing is opened yet; call ``create()``)."""
    scheme = db.split(":", 1)[0].lower() if "://" in db else ""
    if scheme in ("", "sqlite", "file"):
        return SQLiteStore(db[len("file://") :] if scheme == "file" else db)
    raise ConfigurationError(f"unsupported database URL {db!r}: use a file path or sqlite:///path")


__all__ = ["Event", "Row", "Store", "StoreBusy", "StoreFault", "open_store"]
