"""``runlog tree [RUN_ID]``: the process tree, one line per run, failures in red.

Without RUN_ID it draws every root run (oldest first; ``-n N``: the N most recent),
each with the runs it started below it; with RUN_ID, that run's subtree.
"""

from __future__ import annotations

import argparse

from rich.text import Text
from rich.tree import Tree

from .. import _spend
from .._store import Reader
from ._args import Command, positive, run_id
from ._output import Output, duration, escape
from ._runs import RunSummary, load_tree
from ._stats import cost_text

_SEP = " · "
_STATUS_STYLE = {"running": "green", "unknown": "yellow"}


def label(run: RunSummary) -> Text:
    """One run on one line: who, its status and duration, and what it did."""
    text = Text.assemble((f"#{run.run_id} ", "bold"), (run.role or "?", "bold cyan"))
    if run.instance_id:
        text.append(f" {run.instance_id}", style="cyan")
    if run.pid is not None:
        text.append(f"{_SEP}pid {run.pid}")
    text.append(_SEP)
    text.append_text(status(run))
    text.append(f"{_SEP}{run.events:,} event{'s' * (run.events != 1)}")
    if run.spans or run.span_failures:
        text.append(f"{_SEP}{run.spans:,} span{'s' * (run.spans != 1)}")
        _failures(text, run.span_failures)
    if run.llm_calls:
        text.append(f"{_SEP}{run.llm_calls:,} LLM call{'s' * (run.llm_calls != 1)}")
        _failures(text, run.llm_failures)
        if run.llm_calls > run.llm_failures:
            text.append(f", {run.input_tokens:,} in / {run.output_tokens:,} out tokens")
            text.append(f", {_cost(run.cost)}")
    if run.children and run.subtree_cost.calls:
        text.append(f"{_SEP}subtree {_cost(run.subtree_cost)}", style="bold")
    for note in run.notes:
        text.append(f"  ({note})", style="dim")
    return text


def _cost(cost: _spend.Cost) -> str:
    """``$0.0123``, noting calls that were not priced or only estimated."""
    return cost_text(cost.usd if cost.priced else None, cost.unpriced, cost.estimated)


def status(run: RunSummary) -> Text:
    """``exited normal · 1.2 s``, ``running · 3.0 s``, ``lost · ≥ 4.1 s`` (to its last event)."""
    style = "red" if run.exit_failed else _STATUS_STYLE.get(run.status, "")
    words = run.status
    if run.exit is not None:
        words += " " + exit_words(run.exit)
    if run.duration_ms is not None:
        at_least = "≥ " if run.status in ("lost", "unknown") else ""
        words += f"{_SEP}{at_least}{duration(run.duration_ms)}"
    return Text(words, style=style)


def exit_words(exit: dict[str, object]) -> str:
    """How a run ended in a few words: ``normal``, ``exception ValueError: …``, ``signal …``."""
    reason = str(exit.get("reason", "?"))
    if exit.get("signal"):
        return f"{reason} {exit['signal']}"
    if exit.get("error_type"):
        error = str(exit.get("error") or "")
        error = error if len(error) <= 60 else error[:59] + "…"
        return f"{reason} {exit['error_type']}" + (f": {error}" if error else "")
    code = exit.get("exit_code")
    return reason if code in (0, None) else f"{reason}, code {code}"


def _failures(text: Text, n: int) -> None:
    if n:
        text.append(f" ({n} failed)", style="bold red")


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
