"""`import runlog` stays light and exposes exactly its public API."""

from __future__ import annotations

import json

import runlog

from support import python

HEAVY = ["openai", "tiktoken", "psycopg", "rich", "httpx", "opentelemetry"]


class TestImport:
    def test_import_pulls_in_no_optional_dependency(self) -> None:
        """Importing runlog (and logging an event) imports none of the optional libraries."""
        out = python(
            f"""
            import json, sys, runlog
            runlog.log_event("x", run_id=1)
            print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
            """,
            None,
            RUNLOG_DB="events.db",
        ).stdout
        assert json.loads(out) == []

    def test_public_names_are_listed(self) -> None:
        """Every name in __all__ exists, and nothing private is in it."""
        for name in runlog.__all__:
            assert hasattr(runlog, name), name
            assert not name.startswith("_") or name == "__version__"
