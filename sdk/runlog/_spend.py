"""What calls cost, read back from the table: each call's current cost, and sums of them.

A completed call's cost is the ``cost_usd`` / ``cost_source`` it was logged with,
unless ``runlog reprice`` later appended ``llm_call.repriced`` events naming it
(``call_id``): then the newest of those holds its cost.  Nothing is rewritten in place;
the table stays append-only, and the history of a call's prices stays readable.

Sums keep the unknown apart: :class:`Cost` counts the calls that were priced, those
that were not (``unpriced``: a model the price table does not know), and those whose
tokens were estimated, so "$0.42" never hides that three calls could not be priced.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: ``runlog tree``'s quick path imports this module
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

    from ._store import Event

COMPLETED = "llm_call.completed"
REPRICED = "llm_call.repriced"
COST_KEYS = ("cost_usd", "cost_source", "cost_estimated")


class Cost:
    """The cost of some completed calls (a plain class: no dataclasses import)."""

    __slots__ = ("calls", "estimated", "unpriced", "usd")

    def __init__(
        self, usd: float = 0.0, calls: int = 0, unpriced: int = 0, estimated: int = 0
    ) -> None:
        self.usd = usd
        """USD summed over the priced calls."""
        self.calls = calls
        """Completed calls counted."""
        self.unpriced = unpriced
        """Calls without a cost (``cost_source: "unpriced"``, or logged before costs existed)."""
        self.estimated = estimated
        """Priced calls whose tokens were counted with tiktoken (``cost_estimated``)."""

    def as_dict(self) -> dict[str, Any]:
        """The four numbers, for JSON output."""
        return {
            "usd": self.usd,
            "calls": self.calls,
            "unpriced": self.unpriced,
            "estimated": self.estimated,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cost):
            return NotImplemented
        return (self.usd, self.calls, self.unpriced, self.estimated) == (
            other.usd,
            other.calls,
            other.unpriced,
            other.estimated,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __repr__(self) -> str:
        return (
            f"Cost(usd={self.usd!r}, calls={self.calls!r}, "
            f"unpriced={self.unpriced!r}, estimated={self.estimated!r})"
        )

    def add(self, payload: Mapping[str, Any]) -> None:
        """Count one completed call's (current) cost fields."""
        self.calls += 1
        usd = payload.get("cost_usd")
        if isinstance(usd, (int, float)) and not isinstance(usd, bool):
            self.usd += float(usd)
            self.estimated += bool(payload.get("cost_estimated"))
        else:
            self.unpriced += 1

    def __iadd__(self, other: Cost) -> Cost:
        self.usd += other.usd
        self.calls += other.calls
        self.unpriced += other.unpriced
        self.estimated += other.estimated
        return self

    @property
    def priced(self) -> int:
        """Calls that have a cost."""
        return self.calls - self.unpriced


def current(events: Iterable[Event]) -> list[tuple[Event, dict[str, Any]]]:
    """Each ``llm_call.completed`` of ``events`` with its current payload.

    The payload's cost fields are those of the newest ``llm_call.repriced`` among
    ``events`` that names the call; other event types are left out.
    """
    completed: list[Event] = []
    newest: dict[int, Event] = {}
    for event in events:
        if event.event_type == COMPLETED:
            completed.append(event)
        elif event.event_type == REPRICED:
            call_id = event.payload.get("call_id")
            if isinstance(call_id, int) and (
                call_id not in newest or newest[call_id].id < event.id
            ):
                newest[call_id] = event
    out = []
    for event in completed:
        payload = event.payload
        repriced = newest.get(event.id)
        if repriced is not None:
            payload = {k: v for k, v in payload.items() if k not in COST_KEYS}
            payload.update({k: repriced.payload[k] for k in COST_KEYS if k in repriced.payload})
        out.append((event, payload))
    return out


def total(events: Iterable[Event]) -> Cost:
    """The :class:`Cost` of the completed calls among ``events``."""
    cost = Cost()
    for _, payload in current(events):
        cost.add(payload)
    return cost


def by_model(events: Iterable[Event]) -> dict[str, Cost]:
    """The :class:`Cost` of the completed calls among ``events``, per ``model_name``."""
    out: dict[str, Cost] = {}
    for _, payload in current(events):
        out.setdefault(str(payload.get("model_name") or "?"), Cost()).add(payload)
    return out


def usd(amount: float | None) -> str:
    """A cost for people: ``$0.0123``, ``$12.34``, ``$0.000004``; ``-`` for none."""
    if amount is None:
        return "-"
    if amount == 0 or amount >= 1:
        return f"${amount:,.2f}"
    digits = 4
    while amount < 10 ** -(digits - 2) and digits < 9:
        digits += 1
    return f"${amount:.{digits}f}"


__all__ = ["COMPLETED", "COST_KEYS", "REPRICED", "Cost", "by_model", "current", "total", "usd"]
