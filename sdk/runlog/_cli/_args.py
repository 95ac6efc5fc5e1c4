"""The command line: one sub-command per :class:`Command`, each with ``--db`` and ``--json``."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from .._store import Reader
from ._output import Output, escape

PROG = "runlog"
MAX_ID = 2**63 - 1


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


def _integer(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"expected {what} from {low} to {MAX_ID}, got {text!r}")
    return value


def positive(text: str) -> int:
    """An argparse type: an integer >= 1 (and one a database can take)."""
    return _integer(text, 1, "a number")


def count(text: str) -> int:
    """An argparse type: an integer >= 0 (and one a database can take)."""
    return _integer(text, 0, "a number")


def run_id(text: str) -> int:
    """An argparse type: a run id, a positive 64-bit integer."""
    return _integer(text, 1, "a run id")


def plain_text(text: str) -> str:
    """An argparse type: text without control characters or undecodable bytes."""
    if text != escape(text):
        raise argparse.ArgumentTypeError(f"control characters or undecodable bytes in {text!r}")
    return text


class Parser(argparse.ArgumentParser):
    """argparse, with every usage error on one line (escaped: it may quote the argument)."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see {self.prog} --help)"
        self.exit(2, f"{self.prog}: error: {escape(message)}{hint}\n")


def _common() -> Parser:
    common = Parser(add_help=False)
    common.add_argument(
        "--db",
        metavar="DB",
        type=plain_text,
        help="a path, sqlite:///path or postgresql://... (default: $RUNLOG_DB, else runlog.db)",
    )
    common.add_argument("--json", action="store_true", help="print JSON, for scripts")
    return common


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    """The ``runlog`` parser: usage errors exit with status 2, as argparse does."""
    parser = Parser(
        prog=PROG,
        description="Read what runlog recorded: the process tree, events, LLM statistics.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = [_common()]
    for command in commands:
        one = sub.add_parser(
            command.name,
            parents=common,
            help=command.help,
            description=command.description,
        )
        command.arguments(one)
    return parser


__all__ = [
    "MAX_ID",
    "PROG",
    "Command",
    "Parser",
    "build_parser",
    "count",
    "plain_text",
    "positive",
    "run_id",
]
