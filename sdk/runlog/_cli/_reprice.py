"""``runlog reprice``: recompute stored costs with the installed price table.

Prices change, and the table learns models it did not know: a call logged as
``unpriced`` last month may have a price now.  ``reprice`` prices every completed call
again from what it logged (tokens and their breakdown, provider, model, and the time
of the call, for prices that depend on it) with the ``genai-prices`` installed here.

The table stays append-only.  A call whose cost changes gets one new event,
``llm_call.repriced``, in the call's own run (same ``run_id`` and ``parent_run_id``),
never an edit of the original row::

    {"call_id": 812, "model_name": "gpt-4o-mini",
     "cost_usd": 0.000435, "cost_source": "genai-prices 0.2.4",
     "previous_cost_usd": null, "previous_cost_source": "unpriced"}

Every reader of cost (``runlog stats``, ``runlog tree``, ``runlog.state.cost``) takes a
call's newest ``llm_call.repriced``, else its own fields.  Calls whose cost is the
same (whatever the table's version) get nothing, so running ``reprice`` twice changes
nothing the second time; costs the provider reported (``cost_source: "provider"``) are
left as they are.  ``--dry-run`` shows what would change and writes nothing.  This is
the one command that writes: events only, never a run of its own.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from typing import Any

from rich.table import Table

from .. import _prices, _spend
from .._config import Config
from .._payload import encode
from .._store import Event, Reader, Row, open_store
from ._args import Command
from ._db import require_run, resolve_db
from ._output import Output

_BATCH = 500


def changes(events: list[Event]) -> list[tuple[Event, dict[str, Any]]]:
    """For each completed call whose cost the installed table changes: the call and the
    payload of its ``llm_call.repriced``."""
    out = []
    for event, payload in _spend.current(events):
        if payload.get("cost_source") == _prices.PROVIDER:
            continue
        when = datetime.fromtimestamp(event.timestamp / 1e9, timezone.utc)
        provider = payload.get("provider")
        models = (_text(payload.get("response_model")), _text(payload.get("model_name")))
        fresh = _prices.cost_fields(
            provider if isinstance(provider, str) else None,
            models,
            payload,
            payload.get("token_source") == "tiktoken",
            when,
        )
        if _same(fresh.get("cost_usd"), payload.get("cost_usd")):
            continue
        out.append((event, _repriced(event, payload, fresh)))
    return out


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _same(new: Any, old: Any) -> bool:
    if new is None or not isinstance(old, (int, float)) or isinstance(old, bool):
        return new is None and not isinstance(old, (int, float))
    return abs(float(new) - float(old)) < 1e-12


def _repriced(event: Event, payload: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    return {
        "call_id": event.id,
        "model_name": payload.get("model_name"),
        **fresh,
        "previous_cost_usd": payload.get("cost_usd"),
        "previous_cost_source": payload.get("cost_source"),
    }


def write(db: str, planned: list[tuple[Event, dict[str, Any]]]) -> None:
    """Append one ``llm_call.repriced`` per planned change, in batches."""
    store = open_store(db)
    cap = Config().max_payload_bytes
    try:
        store.create()
        for start in range(0, len(planned), _BATCH):
            rows: list[Row] = [
                (
                    time.time_ns(),
                    event.run_id,
                    event.parent_run_id,
                    _spend.REPRICED,
                    encode(payload, cap),
                )
                for event, payload in planned[start : start + _BATCH]
            ]
            store.write(rows)
    finally:
        store.close()


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=int, metavar="RUN_ID", help="only this run's calls")
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would change; write nothing"
    )


def _run(reader: Reader, args: argparse.Namespace, out: Output) -> int:
    if args.run is not None:
        require_run(reader, args.run)
    events = reader.events(event_type=(_spend.COMPLETED, _spend.REPRICED), run_id=args.run)
    planned = changes(events)
    if planned and not args.dry_run:
        write(resolve_db(args.db)[0], planned)
    if out.json_mode:
        out.json([{"run_id": e.run_id, **payload} for e, payload in planned])
    elif not planned:
        out.note(f"no cost changed ({_prices.source()}, {len(events)} events read)")
    else:
        out.show(_table(planned, args.dry_run))
    return 0


def _table(planned: list[tuple[Event, dict[str, Any]]], dry_run: bool) -> Table:
    verb = "would change" if dry_run else "repriced"
    table = Table(title=f"{len(planned)} call(s) {verb} ({_prices.source()})", header_style="bold")
    for name in ("call", "run", "model", "was", "now"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for event, payload in planned:
        table.add_row(
            str(event.id),
            str(event.run_id),
            str(payload.get("model_name") or "?"),
            _spend.usd(payload["previous_cost_usd"]),
            _spend.usd(payload["cost_usd"]),
        )
    return table


COMMAND = Command(
    name="reprice",
    help="recompute stored costs with the installed price table (appends llm_call.repriced)",
    description=(
        "Price every completed LLM call again with the installed genai-prices, from its "
        "logged tokens, provider, model and time. A call whose cost changes gets one new "
        "llm_call.repriced event in its own run (call_id, cost_usd, cost_source, previous_*); "
        "nothing is rewritten. Costs the provider reported are kept. Run it twice: the "
        "second run changes nothing."
    ),
    arguments=_arguments,
    run=_run,
)

__all__ = ["COMMAND", "changes", "write"]
