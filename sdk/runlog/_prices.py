"""Cost: what a call's tokens cost, from the price table ``genai-prices`` ships.

``cost_usd`` is computed when a call ends, from the numbers the call logs, with the
prices the installed ``genai-prices`` gives for the model at that moment;
``cost_source`` says so (``"genai-prices 0.2.3"``).  A model the table does not know,
or a call whose token numbers are unknown, is ``"unpriced"`` with ``cost_usd`` null:
never a guessed zero.  A cost the provider reported itself (``record(cost_usd=...)``)
is kept as it is, ``"provider"``.  Token numbers counted with tiktoken give a cost
marked ``cost_estimated``.

The table is the data bundled in the package: no network, and its background updater
is never started (it would run a thread in a process that may fork).  It is imported
the first time a cost is needed (or when an integration is instrumented, so the first
call does not pay for it), never by ``import runlog``.

Cheap on the hot path.  The library's own ``calc_price`` takes about 100 us a call, so
runlog looks a model up once per (provider, model), turns its prices into floats once
per price set, and prices a call with a handful of multiplications (about 1 us).  The
arithmetic is the library's: tokens of a priced sub-unit (cache reads, cache writes,
reasoning) are taken out of their parent (input, output) and priced at their own rate;
tiered prices take the tier of the call's total input; per-request prices count one
request.  Models whose prices depend on the time (conditional prices) get their price
set for the moment of the call.  Price variants (service tiers, batch) are not applied:
the standard price is used.

How providers count input.  OpenAI's ``input_tokens`` include the cached ones; the
table's ``input_tokens`` too.  Anthropic's ``input_tokens`` exclude cache reads and
writes, which come in addition, so for ``provider="anthropic"`` the total input priced
is their sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

from . import _forksafe

INPUT_EXCLUDES_CACHE = frozenset({"anthropic"})
"""Providers whose ``input_tokens`` leave out cache reads and writes."""
UNPRICED = "unpriced"
PROVIDER = "provider"

_lock = _forksafe.lock()
_IMPORT = _forksafe.Section("genai-prices")
"""The table's import may run on runlog's background thread: a fork waits for it."""
_table: Any = None
"""The ``genai_prices`` snapshot once imported; False if the package is not importable."""
_source = UNPRICED
_models: dict[tuple[str | None, str], tuple[Any, Any] | None] = {}
"""(provider, model name) -> (table provider, table model), None for a model it lacks."""
_rates: dict[int, tuple[Any, _Rates]] = {}
"""id(price set) -> (the price set, kept alive so the id stays its own; its rates)."""


class Tokens(NamedTuple):
    """A call's token numbers, as runlog logs them (see ``LLMCall.record``)."""

    input: int
    output: int
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0


@dataclass(frozen=True)
class _Rates:
    """One price set as floats: USD per token, or tiers of (above this input, USD)."""

    input: _Rate
    output: _Rate
    cache_read: _Rate | None
    cache_write: _Rate | None
    reasoning: _Rate | None
    per_request: float


_Rate = tuple[float, tuple[tuple[int, float], ...]]
"""(base USD per token, ((total input above which, USD per token), ... highest first))."""


def load() -> bool:
    """Import the price table now (idempotent); False if ``genai-prices`` is missing."""
    global _table, _source
    if _table is None:
        with _IMPORT, _lock:
            if _table is None and _forksafe.tainted(_IMPORT.library):
                _table = False  # forked mid-import: the module's import lock is not ours
            if _table is None:
                try:
                    import genai_prices
                    from genai_prices import data_snapshot

                    snapshot = data_snapshot.get_snapshot()
                    _source = f"genai-prices {genai_prices.__version__}"
                    _table = snapshot
                except ImportError:
                    _table = False
    return _table is not False


def source() -> str:
    """``cost_source`` for costs computed with the installed table (``unpriced`` without)."""
    load()
    return _source


def cost(
    provider: str | None, models: tuple[str | None, ...], tokens: Tokens, when: datetime | None
) -> float | None:
    """USD for ``tokens`` of the first of ``models`` the table knows; None if none is known.

    ``when`` is the time of the call (None: now), which conditional prices depend on.
    """
    if not load():
        return None
    for name in models:
        if name:
            found = _lookup(provider, name)
            if found is not None:
                return _price(found, provider, tokens, when)
    return None


def _lookup(provider: str | None, name: str) -> tuple[Any, Any] | None:
    key = (provider, name)
    try:
        return _models[key]
    except KeyError:
        pass
    found: tuple[Any, Any] | None
    try:
        found = _table.find_provider_model(name, None, provider, None)
    except LookupError:
        found = None
    _models[key] = found
    return found


def _price(found: tuple[Any, Any], provider: str | None, tokens: Tokens, when: Any) -> float:
    table_provider, model = found
    prices = model.prices
    if isinstance(prices, list):  # conditional prices: the set in force at the call's time
        prices = model.get_prices(when or datetime.now(timezone.utc))
    entry = _rates.get(id(prices))
    if entry is None or entry[0] is not prices:
        entry = _rates[id(prices)] = (prices, _rates_of(prices))
    rates = entry[1]
    total_in = tokens.input
    if (provider or table_provider.id) in INPUT_EXCLUDES_CACHE:
        total_in += tokens.cached + tokens.cache_write
    plain_in, plain_out = total_in, tokens.output
    usd = rates.per_request
    if rates.cache_read is not None:
        plain_in -= tokens.cached
        usd += tokens.cached * _at(rates.cache_read, total_in)
    if rates.cache_write is not None:
        plain_in -= tokens.cache_write
        usd += tokens.cache_write * _at(rates.cache_write, total_in)
    if rates.reasoning is not None:
        plain_out -= tokens.reasoning
        usd += tokens.reasoning * _at(rates.reasoning, total_in)
    usd += plain_in * _at(rates.input, total_in) + plain_out * _at(rates.output, total_in)
    return usd


def _at(rate: _Rate, total_in: int) -> float:
    base, tiers = rate
    for start, price in tiers:
        if total_in > start:
            return price
    return base


def _rates_of(prices: Any) -> _Rates:
    def rate(key: str) -> _Rate | None:
        value = getattr(prices, key, None)
        if value is None:
            return None
        tiers = getattr(value, "tiers", None)
        if tiers is None:
            return float(value) / 1e6, ()
        steps = tuple((int(t.start), float(t.price) / 1e6) for t in reversed(tiers))
        return float(value.base) / 1e6, steps

    requests = getattr(prices, "requests_kcount", None)
    return _Rates(
        input=rate("input_mtok") or (0.0, ()),
        output=rate("output_mtok") or (0.0, ()),
        cache_read=rate("cache_read_mtok"),
        cache_write=rate("cache_write_mtok"),
        reasoning=rate("output_reasoning_mtok"),
        per_request=float(requests) / 1000 if requests is not None else 0.0,
    )


def cost_fields(
    provider: str | None,
    models: tuple[str | None, ...],
    counts: dict[str, Any],
    estimated: bool,
    when: datetime | None = None,
) -> dict[str, Any]:
    """``cost_usd``, ``cost_source`` (and ``cost_estimated``) for a completed call's fields.

    ``cost_usd`` is rounded to 1e-12 USD, far below any price, to drop float noise.
    """
    given_in, given_out = counts.get("input_tokens"), counts.get("output_tokens")
    usd: float | None = None
    if isinstance(given_in, int) and isinstance(given_out, int):
        tokens = Tokens(
            given_in,
            given_out,
            counts.get("cached_input_tokens") or 0,
            counts.get("cache_write_input_tokens") or 0,
            counts.get("reasoning_tokens") or 0,
        )
        usd = cost(provider, models, tokens, when)
    if usd is None:
        return {"cost_usd": None, "cost_source": UNPRICED}
    fields: dict[str, Any] = {"cost_usd": round(usd, 12), "cost_source": _source}
    if estimated:
        fields["cost_estimated"] = True
    return fields


def forget() -> None:
    """Drop the lookups (tests that swap the table)."""
    _models.clear()
    _rates.clear()


__all__ = ["INPUT_EXCLUDES_CACHE", "PROVIDER", "UNPRICED", "Tokens", "cost", "cost_fields", "load"]
