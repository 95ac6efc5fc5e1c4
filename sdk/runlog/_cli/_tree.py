"""``runlog tree [RUN_ID]``: the process tree, one line per run, failures in red.

Without RUN_ID it draws every root run (oldest first; ``-n N``: the N most recent),
each with the runs it started below it; with RUN_ID, that run's subtree.
"""

from __future__ import annotations

import argparse

from rich.text import Text
from rich.tree import Tree

from .._store import Reader
from ._args import Command, positive, run_id
from ._output import Output, escape
from ._quick import exit_words, label_parts, status_parts
from ._runs import RunSummary, load_tree


def label(run: RunSummary) -> Text:
    """One run on one line: who, its status and duration, and what it did."""
    return Text.assemble(*label_parts(run))


def status(run: RunSummary) -> Text:
    """``exited normal · 1.2 s``, ``running · 3.0 s``, ``lost · ≥ 4.1 s`` (to its last event)."""
    words, style = status_parts(run)
    return Text(words, style=style)


def _add(tree: Tree, run: RunSummary) -> None:
    branch = tree.add(label(run))
    for child in run.children:
        _add(branch, child)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_id", metavar="RUN_ID", type=run_id, nargs="?", help="the run to start at"
    )
    parser.add_argument(
        "-n", "--last", type=positive, metavar="N", help="only the N most recent root runs"
    )


def _run(reader: Reader, args: argparse.Namespace, out: Output) -> int:
    roots = load_tree(reader, args.run_id, args.last)
    if out.json_mode:
        out.json([root.to_json() for root in roots])
    elif not roots:
        out.note(f"no runs in {reader.store.url}")
    else:
        tree = Tree(Text(escape(reader.store.url), style="dim"), guide_style="dim")
        for root in roots:
            _add(tree, root)
        out.show(tree)
    return 0


COMMAND = Command(
    name="tree",
    help="the process tree: status, duration, spans, LLM calls, tokens and cost per run",
    description=(
        "Draw the process tree: every root run (oldest first) with the runs it started below "
        "it, or the subtree of RUN_ID. Per run: role, instance, pid, status (exited with its "
        "reason, running, lost: no process.exited and the process is gone, or unknown: logged"
        " on another host), duration, events, spans and LLM calls with their tokens and cost,"
        " and the cost summed over each subtree; failures in red."
    ),
    arguments=_arguments,
    run=_run,
)

__all__ = ["COMMAND", "exit_words", "label", "status"]
