"""Cost: hand-computed figures from the price table's published prices, to 1e-9 USD.

The prices used here are those ``genai-prices`` publishes for each model (USD per
million tokens): gpt-4o-mini 0.15 input / 0.075 cached input / 0.6 output; o3-mini
1.1 / 0.55 / 4.4; claude-haiku-4-5 1 input / 0.1 cache read / 1.25 cache write / 5
output; claude-sonnet-4-5 3 / 0.3 / 3.75 / 15, and 6 / 0.6 / 7.5 / 22.5 above 200,000
input tokens.  Every test works on real SQLite files, through the public API, the
``runlog`` command, and child processes for the trees.
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import genai_prices
import pytest

import runlog
from runlog import _prices, state
from runlog._cli import main
from runlog.testing import capture

from support import python, rows

SOURCE = f"genai-prices {genai_prices.__version__}"
M = 1e-6  # USD per token, for a price of 1 USD per million tokens


def completed(**record: Any) -> dict[str, Any]:
    """The payload of one ``llm_call`` recorded with ``record`` (model and provider first)."""
    model = record.pop("model")
    provider = record.pop("provider", None)
    messages = record.pop("messages", None)
    with capture() as captured, runlog.llm_call(model, provider=provider, messages=messages) as c:
        c.record(**record)
    (event,) = captured.of_type("llm_call.completed")
    return event.payload


HAND_COMPUTED = {
    "openai cached input (part of input)": (
        {"model": "gpt-4o-mini", "provider": "openai", "input_tokens": 1000},
        {"output_tokens": 500, "cached_input_tokens": 200},
        (800 * 0.15 + 200 * 0.075 + 500 * 0.6) * M,
    ),
    "openai reasoning (part of output)": (
        {"model": "o3-mini", "provider": "openai", "input_tokens": 2000},
        {"output_tokens": 3000, "cached_input_tokens": 1500, "reasoning_tokens": 2500},
        (500 * 1.1 + 1500 * 0.55 + 3000 * 4.4) * M,
    ),
    "anthropic cache reads and writes (in addition to input)": (
        {"model": "claude-haiku-4-5", "provider": "anthropic", "input_tokens": 1000},
        {"output_tokens": 500, "cached_input_tokens": 200, "cache_write_input_tokens": 100},
        (1000 * 1 + 200 * 0.1 + 100 * 1.25 + 500 * 5) * M,
    ),
    "anthropic below the 200k tier": (
        {"model": "claude-sonnet-4-5", "provider": "anthropic", "input_tokens": 1000},
        {"output_tokens": 1000},
        (1000 * 3 + 1000 * 15) * M,
    ),
    "anthropic above the 200k tier (cache reads count toward it)": (
        {"model": "claude-sonnet-4-5", "provider": "anthropic", "input_tokens": 150_000},
        {"output_tokens": 1000, "cached_input_tokens": 60_000},
        (150_000 * 6 + 60_000 * 0.6 + 1000 * 22.5) * M,
    ),
    "no provider: the table finds it by model": (
        {"model": "gpt-4o-mini", "input_tokens": 1_000_000},
        {"output_tokens": 0},
        0.15,
    ),
}


class TestCostOfACall:
    @pytest.mark.parametrize("case", HAND_COMPUTED.values(), ids=HAND_COMPUTED.keys())
    def test_hand_computed(self, case: tuple[dict[str, Any], dict[str, Any], float]) -> None:
        """cost_usd equals the figure computed by hand from the published prices."""
        first, rest, expected = case
        logged = completed(**first, **rest)
        assert logged["cost_usd"] == pytest.approx(expected, abs=1e-9)
        assert logged["cost_source"] == SOURCE
        assert "cost_estimated" not in logged
        for key, value in rest.items():
            assert logged[key] == value

    def test_unknown_model_is_unpriced_not_zero(self) -> None:
        """A model the table does not know: cost_usd null, cost_source unpriced."""
        logged = completed(model="no-such-model-7", input_tokens=10, output_tokens=5)
        assert (logged["cost_usd"], logged["cost_source"]) == (None, "unpriced")

    def test_response_model_priced_first(self) -> None:
        """The model the reply names is priced; the requested one if the table lacks it."""
        logged = completed(
            model="my-alias", provider="openai", input_tokens=10**6, output_tokens=0,
            response_model="gpt-4o-mini",
        )  # fmt: skip
        assert logged["cost_usd"] == pytest.approx(0.15, abs=1e-9)

    def test_tiktoken_counts_give_an_estimated_cost(self) -> None:
        """Counted tokens are priced, and the cost says it is an estimate."""
        messages = [{"role": "user", "content": "How much is this?"}]
        logged = completed(model="gpt-4o-mini", provider="openai", messages=messages, text="Hi")
        assert logged["token_source"] == "tiktoken"
        expected = (logged["input_tokens"] * 0.15 + logged["output_tokens"] * 0.6) * M
        assert logged["cost_usd"] == pytest.approx(expected, abs=1e-9)
        assert logged["cost_estimated"] is True

    def test_a_price_from_the_provider_is_kept(self) -> None:
        """record(cost_usd=...) is the provider's figure: kept, cost_source provider."""
        logged = completed(model="gpt-4o-mini", input_tokens=1, output_tokens=1, cost_usd=0.25)
        assert (logged["cost_usd"], logged["cost_source"]) == (0.25, "provider")

    def test_unknown_output_is_unpriced(self) -> None:
        """Without both token numbers the call cannot be priced: unpriced, not a part-cost."""
        logged = completed(model="gpt-4o-mini", input_tokens=10)
        assert (logged["cost_usd"], logged["cost_source"]) == (None, "unpriced")

    def test_failed_calls_carry_no_cost(self) -> None:
        """A failed call logs no cost fields."""
        with (
            capture() as captured,
            pytest.raises(RuntimeError),
            runlog.llm_call("gpt-4o-mini", provider="openai"),
        ):
            raise RuntimeError("boom")
        (failed,) = captured.of_type("llm_call.failed")
        assert "cost_usd" not in failed.payload

    @pytest.mark.parametrize("bad", [-1, "1", True, float("nan")])
    def test_bad_numbers_raise_at_the_call_site(self, bad: Any) -> None:
        """A negative or non-numeric breakdown or cost is a programming error."""
        with runlog.llm_call("m") as call:
            with pytest.raises(TypeError):
                call.record(cost_usd=bad)
            if bad != float("nan") and not isinstance(bad, float):
                with pytest.raises(TypeError):
                    call.record(cached_input_tokens=bad)

    def test_same_as_the_librarys_own_calculation(self) -> None:
        """runlog's fast path gives the library's calc_price for every model it ships."""
        snapshot = genai_prices.data_snapshot.get_snapshot()
        chance = random.Random(14)
        compared = 0
        for provider in snapshot.providers:
            for model in provider.models:
                total = chance.randint(0, 400_000)
                cached = chance.randint(0, total // 2)
                written = chance.randint(0, (total - cached) // 2)
                out = chance.randint(0, 50_000)
                reasoning = chance.randint(0, out)
                usage = genai_prices.Usage(
                    input_tokens=total, cache_read_tokens=cached, cache_write_tokens=written,
                    output_tokens=out, output_reasoning_tokens=reasoning,
                )  # fmt: skip
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    theirs = float(model.calc_price(usage, provider).total_price)
                tokens = _prices.Tokens(total, out, cached, written, reasoning)
                # total input as the table counts it: give it as OpenAI's convention
                ours = _prices._price((provider, model), "openai", tokens, None)
                assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-12), model.id
                compared += 1
        assert compared > 1000

    def test_import_runlog_loads_no_price_table(self) -> None:
        """The table is imported at the first cost, not by ``import runlog``."""
        out = python(
            """
            import json, sys, runlog
            before = "genai_prices" in sys.modules
            with runlog.llm_call("gpt-4o-mini") as call:
                call.record(input_tokens=1, output_tokens=1)
            print(json.dumps([before, "genai_prices" in sys.modules]))
            """,
            None,
            RUNLOG_DB="events.db",
        ).stdout
        assert json.loads(out) == [False, True]


# -- a small system: a supervisor with two workers, one of which has a child ------------
SYSTEM = """
import os, subprocess, sys
import runlog

def call(model, provider, inp, out, **extra):
    with runlog.llm_call(model, provider=provider) as c:
        c.record(input_tokens=inp, output_tokens=out, **extra)

role = os.environ.get("ROLE", "supervisor")
runlog.init(role=role, instance_id=os.environ.get("INSTANCE"))
if role == "supervisor":
    call("gpt-4o-mini", "openai", 1_000_000, 0)                  # 0.15
    for name in ("w1", "w2"):
        runlog.flush()
        subprocess.run([sys.executable, __file__], env={**os.environ, "ROLE": "worker",
                       "INSTANCE": name}, check=True)
elif os.environ["INSTANCE"] == "w1":
    call("claude-haiku-4-5", "anthropic", 1000, 500, cached_input_tokens=200,
         cache_write_input_tokens=100)                             # 0.003645
    call("no-such-model-7", None, 10, 10)                          # unpriced
    runlog.flush()
    subprocess.run([sys.executable, __file__], env={**os.environ, "ROLE": "helper",
                   "INSTANCE": "h1"}, check=True)
elif os.environ["INSTANCE"] == "w2":
    call("gpt-4o-mini", "openai", 0, 1_000_000)                  # 0.6
else:
    call("claude-haiku-4-5", "anthropic", 0, 1_000_000)          # 5.0
"""
HAIKU = (1000 * 1 + 200 * 0.1 + 100 * 1.25 + 500 * 5) * M


@pytest.fixture
def system(db_path: Path) -> dict[str, int]:
    """Run the system; its run ids by instance (the supervisor's as ``sup``)."""
    python(SYSTEM, db_path)
    starts = rows(db_path, "SELECT * FROM events WHERE event_type = 'process.started'")
    return {r["payload"].get("instance_id") or "sup": r["run_id"] for r in starts}


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """``main(args)`` in this process: (exit status, stdout, stderr), 200 columns wide."""
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


class TestCostQueries:
    def test_per_run_subtree_model_and_time(self, db_path: Path, system: dict[str, int]) -> None:
        """runlog.state.cost sums per run, per subtree, per model and over a time range."""
        runlog.init(role="reader", db=str(db_path))
        w1 = state.cost(system["w1"])
        assert (w1.usd, w1.calls, w1.unpriced) == (pytest.approx(HAIKU, abs=1e-9), 2, 1)
        assert state.cost(system["w1"], subtree=True).usd == pytest.approx(HAIKU + 5, abs=1e-9)
        everything = state.cost(system["sup"], subtree=True)
        assert everything.usd == pytest.approx(0.15 + HAIKU + 0.6 + 5, abs=1e-9)
        assert (everything.calls, everything.priced, everything.unpriced) == (5, 4, 1)
        assert state.cost().usd == everything.usd
        assert state.cost(model="gpt-4o-mini").usd == pytest.approx(0.75, abs=1e-9)
        per_model = state.cost_by_model(system["sup"], subtree=True)
        assert per_model["claude-haiku-4-5"].usd == pytest.approx(HAIKU + 5, abs=1e-9)
        assert per_model["no-such-model-7"].unpriced == 1
        calls = rows(db_path, "SELECT * FROM events WHERE event_type = 'llm_call.completed'")
        between = (calls[1]["timestamp"] + calls[2]["timestamp"]) / 2e9  # Unix seconds
        assert state.cost(since=between).calls == 3
        assert state.cost(until=between).calls == 2
        with pytest.raises(TypeError):
            state.cost(since="yesterday")  # type: ignore[arg-type]


class TestCommand:
    def test_stats_cost_per_model_and_total(self, cli: Run, db_path: Path, system: Any) -> None:
        """runlog stats shows each model's cost, the unpriced apart, and the total."""
        code, out, _ = cli("stats", "--db", db_path)
        assert code == 0
        lines = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line}
        assert "$5.00" in lines["claude-haiku-4-5"]
        assert "$0.75" in lines["gpt-4o-mini"]
        assert "- (1 unpriced)" in lines["no-such-model-7"]
        assert "$5.75 (1 unpriced)" in lines["total"]
        code, out, _ = cli("stats", "--db", db_path, "--json")
        by_model = {row["model"]: row for row in json.loads(out)}
        assert by_model["claude-haiku-4-5"]["cost_usd"] == pytest.approx(HAIKU + 5, abs=1e-9)
        assert by_model["claude-haiku-4-5"]["cached_input_tokens"] == 200
        assert by_model["claude-haiku-4-5"]["cache_write_input_tokens"] == 100
        assert by_model["no-such-model-7"]["cost_usd"] is None

    def test_tree_cost_per_run_and_subtree(self, cli: Run, db_path: Path, system: Any) -> None:
        """runlog tree shows each run's cost and the sum over its subtree."""
        code, out, _ = cli("tree", "--db", db_path)
        assert code == 0
        (sup,) = [line for line in out.splitlines() if "supervisor" in line]
        assert "$0.15" in sup and "subtree $5.75 (1 unpriced)" in sup
        (w1,) = [line for line in out.splitlines() if " w1" in line]
        assert "(1 unpriced)" in w1 and "subtree $5.00" in w1
        code, out, _ = cli("tree", "--db", db_path, "--json")
        (root,) = json.loads(out)
        assert root["cost"]["usd"] == pytest.approx(0.15, abs=1e-9)
        assert root["subtree_cost"]["usd"] == pytest.approx(0.15 + HAIKU + 5.6, abs=1e-9)


# -- reprice -------------------------------------------------------------------------------
OLD_TABLE = """
import runlog
runlog.init(role="worker")
def old(model, provider, cost, source, **tokens):
    runlog.log_event("llm_call.completed", {"model_name": model, "provider": provider,
        "token_source": "usage", "cost_usd": cost, "cost_source": source, **tokens})
old("gpt-4o-mini", "openai", None, "unpriced", input_tokens=10**6, output_tokens=0)
old("claude-haiku-4-5", "anthropic", 9.99, "genai-prices 0.0.1", input_tokens=1000,
    output_tokens=500, cached_input_tokens=200, cache_write_input_tokens=100)
old("gpt-4o-mini", "openai", 0.6, "genai-prices 0.0.1", input_tokens=0, output_tokens=10**6)
old("gpt-4o-mini", "openai", 1.0, "provider", input_tokens=1, output_tokens=1)
old("no-such-model-7", None, None, "unpriced", input_tokens=1, output_tokens=1)
"""


class TestReprice:
    def test_a_repriced_run(self, cli: Run, db_path: Path) -> None:
        """Changed costs get one llm_call.repriced each, in the call's run; readers use it."""
        python(OLD_TABLE, db_path)
        before = rows(db_path)
        code, out, _ = cli("reprice", "--db", db_path, "--dry-run")
        assert code == 0 and "2 call(s) would change" in out
        assert rows(db_path) == before
        code, out, _ = cli("reprice", "--db", db_path, "--json")
        assert code == 0
        after = rows(db_path)
        assert after[: len(before)] == before  # nothing rewritten
        repriced = [r for r in after if r["event_type"] == "llm_call.repriced"]
        calls = {
            r["payload"]["model_name"] + str(r["id"]): r
            for r in before
            if "model_name" in r["payload"]
        }
        first, haiku = (
            calls[f"gpt-4o-mini{before[1]['id']}"],
            calls[f"claude-haiku-4-5{before[2]['id']}"],
        )
        assert [r["payload"]["call_id"] for r in repriced] == [first["id"], haiku["id"]]
        assert all(r["run_id"] == first["run_id"] for r in repriced)
        one, two = (r["payload"] for r in repriced)
        assert one["cost_usd"] == pytest.approx(0.15, abs=1e-9) and one["cost_source"] == SOURCE
        assert (one["previous_cost_usd"], one["previous_cost_source"]) == (None, "unpriced")
        assert two["cost_usd"] == pytest.approx(HAIKU, abs=1e-9)
        assert (two["previous_cost_usd"], two["previous_cost_source"]) == (
            9.99,
            "genai-prices 0.0.1",
        )
        code, out, _ = cli("reprice", "--db", db_path)
        assert code == 0 and len(rows(db_path)) == len(after)  # twice: nothing more
        runlog.init(role="reader", db=str(db_path))
        total = state.cost(first["run_id"])
        assert total.usd == pytest.approx(0.15 + HAIKU + 0.6 + 1.0, abs=1e-9)
        assert (total.calls, total.unpriced) == (5, 1)
        code, out, _ = cli("stats", "--db", db_path, "--json")
        haiku_row = next(r for r in json.loads(out) if r["model"] == "claude-haiku-4-5")
        assert haiku_row["cost_usd"] == pytest.approx(HAIKU, abs=1e-9)
        assert haiku_row["calls"] == 1

    def test_reprice_on_postgresql(self, cli: Run, pg_url: str) -> None:
        """The same on PostgreSQL: two repriced calls, then nothing; stats use the new cost."""
        python(OLD_TABLE, None, RUNLOG_DB=pg_url)
        code, out, err = cli("reprice", "--db", pg_url, "--json")
        assert code == 0, err
        assert [p["model_name"] for p in json.loads(out)] == ["gpt-4o-mini", "claude-haiku-4-5"]
        assert json.loads(cli("reprice", "--db", pg_url, "--json")[1]) == []
        code, out, _ = cli("stats", "--db", pg_url, "--json")
        by_model = {row["model"]: row for row in json.loads(out)}
        assert by_model["claude-haiku-4-5"]["cost_usd"] == pytest.approx(HAIKU, abs=1e-9)
        assert by_model["gpt-4o-mini"]["cost_usd"] == pytest.approx(0.15 + 0.6 + 1.0, abs=1e-9)
