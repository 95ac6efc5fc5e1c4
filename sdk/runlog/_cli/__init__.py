"""The ``runlog`` command: read what runlog recorded.

::

    runlog tree [RUN_ID] [-n N]                      the process tree, with cost
    runlog tail [-f] [-n N] [--type T] [--run R]     events, one per line; -f follows
    runlog stats                                     LLM calls per model, with cost
    runlog show RUN_ID                               one run's events in order
    runlog ui [--host H] [--port P] [--no-browser]   a local web page over it all
    runlog reprice [--run R] [--dry-run]             recompute costs (appends events)
    runlog export otlp [--endpoint URL] [-f]         the table as OpenTelemetry traces

Every command takes ``--db`` (default: ``RUNLOG_DB``, else ``runlog.db``, as the SDK)
and ``--json``.  The database is opened read-only: the command never creates or
migrates one, and never starts a run of its own; ``reprice`` alone appends
``llm_call.repriced`` events (see its module).  Exit status: 0 done, 1 an error the
user can fix (no such database, not a runlog database, unknown run, a database that
cannot be read), 2 a usage error; a pipe closed early (``runlog tail | head``) ends
quietly with 1, rich's convention.  Private: the interface is the command line.
"""

from __future__ import annotations

import sys
from importlib import import_module

TYPE_CHECKING = False  # not typing's: `runlog tree` must stay a few milliseconds
if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._args import Command

MODULES = {
    "tree": "._tree",
    "tail": "._tail",
    "stats": "._stats",
    "show": "._show",
    "ui": "runlog._ui._command",
    "reprice": "._reprice",
    "export": "._export",
}
"""Each command's module, in the order ``--help`` lists them; imported only when needed."""


def commands(argv: Sequence[str]) -> dict[str, Command]:
    """The commands the parser needs for ``argv``: only the one named, when one is.

    A command's module imports what that command uses (rich tables, the UI's server,
    OpenTelemetry's exporter), so ``runlog tree`` does not pay for ``runlog ui``.
    """
    named = next((a for a in argv if not a.startswith("-")), None)
    names = [named] if named in MODULES else list(MODULES)
    loaded = (import_module(MODULES[name], __name__).COMMAND for name in names)
    return {command.name: command for command in loaded}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    ``runlog tree`` to a pipe or a file is answered by ``_quick`` when it can (sqlite3
    and plain text, no argparse, rich or store); everything else by the full command.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["tree"]:
        from ._quick import tree

        code = tree(argv[1:])
        if code is not None:
            return code
    return _full(argv)


def _full(argv: list[str]) -> int:
    """The command with argparse, rich and the store's :class:`Reader`."""
    from .._errors import RunlogError
    from .._store import Reader, StoreBusy, StoreFault, redact_url
    from ._args import build_parser
    from ._db import CLIError, open_reader, resolve_db
    from ._output import EscapingReader, Output

    available = commands(argv)
    parser = build_parser(list(available.values()))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 0
    out = Output(json_mode=args.json)
    db, source = resolve_db(args.db)
    reader: Reader | None = None
    try:
        reader = open_reader(db, source)
        if not args.json:  # everything people read from the table comes escaped
            reader = EscapingReader(reader.store)
        return available[args.command].run(reader, args, out)
    except (CLIError, RunlogError) as exc:
        return out.error(str(exc))
    except (StoreBusy, StoreFault) as exc:  # unreachable, or failing in the middle
        return out.error(f"cannot read {redact_url(db)}: {exc}")
    except KeyboardInterrupt:
        return 130
    finally:
        if reader is not None:
            reader.store.close()


__all__ = ["MODULES", "commands", "main"]
