"""`import runlog` stays light and exposes exactly its public API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import runlog

from support import python, rows

OPTIONAL = [
    "openai",
    "anthropic",
    "tiktoken",
    "psycopg",
    "rich",
    "httpx",
    "opentelemetry",
    "genai_prices",
    "pydantic",
]
"""Never imported by runlog itself: not by the import, not by the first event."""
HEAVY = [*OPTIONAL, "wrapt", "logging", "concurrent.futures", "asyncio", "sqlite3", "runlog._runs"]
"""Not imported by ``import runlog`` alone: each part loads when first used."""


class TestImport:
    def test_import_runlog_imports_nothing_heavy(self) -> None:
        """A fresh ``import runlog`` imports none of the heavy modules."""
        code = f"""
        import json, sys
        import runlog
        print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
        """
        assert json.loads(python(code).stdout) == []

    def test_first_event_pulls_in_no_optional_dependency(self) -> None:
        """Logging an event imports none of the optional libraries."""
        out = python(
            f"""
            import json, sys, runlog
            runlog.log_event("x", run_id=1)
            print(json.dumps([m for m in {OPTIONAL!r} if m in sys.modules]))
            """,
            None,
            RUNLOG_DB="events.db",
        ).stdout
        assert json.loads(out) == []

    def test_public_names_are_listed(self) -> None:
        """Every name in __all__ exists (loaded on first use), nothing private is in it,
        and dir() lists them."""
        for name in runlog.__all__:
            assert getattr(runlog, name) is not None, name
            assert not name.startswith("_") or name == "__version__"
        assert set(runlog.__all__) <= set(dir(runlog))

    def test_star_import_and_from_import(self) -> None:
        """``from runlog import *`` and ``from runlog import state`` work in a fresh process."""
        code = """
        from runlog import *
        from runlog import state, testing
        print(callable(log_event), callable(state.count_events), callable(testing.capture))
        """
        assert python(code).stdout.split() == ["True", "True", "True"]

    def test_unknown_name_is_an_attribute_error(self) -> None:
        """A misspelt name raises AttributeError naming it."""
        try:
            runlog.log_evnt  # type: ignore[attr-defined]  # noqa: B018
        except AttributeError as exc:
            assert "log_evnt" in str(exc)
        else:
            raise AssertionError("no AttributeError")

    def test_first_event_still_loads_the_core(self, db_path: Path) -> None:
        """Logging after a light import writes as before (and the exit hook still runs)."""
        code = """
        import runlog
        runlog.log_event("first", {"n": 1})
        """
        python(code, db_path)
        assert [r["event_type"] for r in rows(db_path)] == [
            "process.started",
            "first",
            "process.exited",
        ]


TREE_NEVER = [
    "rich",
    "argparse",
    "json",
    "typing",
    "dataclasses",
    "logging",
    "socket",
    "sqlite3",
    "datetime",
    "psycopg",
    "runlog._store",
    "runlog._payload",
    "runlog._lifecycle",
    "runlog._log",
    "runlog._config",
    "runlog._errors",
    "runlog._cli._args",
    "runlog._cli._output",
    "runlog._cli._runs",
]
"""What ``runlog tree`` does without: the writer and the encoder, rich, argparse, even
``sqlite3``'s Python part (its C module is enough) and ``json`` (SQLite decodes)."""


class TestTreeImports:
    @pytest.mark.parametrize("colour", ["", "1"])
    def test_tree_imports_sqlite3_and_little_else(self, colour: str, db_path: Path) -> None:
        """``runlog tree`` draws the tree from sqlite3 alone, in colour for a terminal."""
        python("import runlog; runlog.init(role='worker'); runlog.log_event('x')", db_path)
        code = f"""
        import json, sys
        before = set(sys.modules)
        sys.stdout = open("tree.txt", "w", encoding="utf-8")
        from runlog._cli import main
        status = main(["tree", "--db", {str(db_path)!r}])
        sys.stdout.close()
        sys.stdout = sys.__stdout__
        loaded = [m for m in {TREE_NEVER!r} if m in set(sys.modules) - before]
        print(json.dumps([status, open("tree.txt").read(), loaded]))
        """
        out = python(code, None, COLUMNS="200", FORCE_COLOR=colour, TERM="xterm").stdout
        status, drawn, loaded = json.loads(out)
        assert (status, loaded) == (0, [])
        if colour:
            assert drawn.startswith(f"\x1b[2msqlite:///{db_path}\x1b[0m\n\x1b[2m└── \x1b[0m")
        else:
            assert drawn.startswith(f"sqlite:///{db_path}\n└── #1 worker · pid ")
