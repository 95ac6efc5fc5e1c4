"""The command line: one sub-command per :class:`Command`, each with ``--db`` and ``--json``."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .._store import Reader
from ._output import Output

PROG = "runlog"


@dataclass(frozen=True)
class Command:
    """A sub-command: its name, its help, its own options, and what it does.

    ``run(reader, args, out)`` returns the exit status; errors the user can fix are
    raised as ``CLIError`` and reported by ``main``.
    """

    name: str
    help: str
    description: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Reader, argparse.Namespace, Output], int]


def positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text}")
    return value


def count(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        metavar="DB",
        help="a path, sqlite:///path or postgresql://... (default: $RUNLOG_DB, else runlog.db)",
    )
    common.add_argument("--json", action="store_true", help="print JSON, for scripts")
    return common


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    """The ``runlog`` parser: usage errors exit with status 2, as argparse does."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Read what runlog recorded: the process tree, events, LLM statistics.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common()
    for command in commands:
        one = sub.add_parser(
            command.name,
            parents=[common],
            help=command.help,
            description=command.description,
        )
        command.arguments(one)
    return parser


__all__ = ["PROG", "Command", "build_parser", "count", "positive"]
