"""The data boundary: what enters the table through log_event's encoder, on both backends.

Each class covers one reproduced defect of the issue; the last one fuzzes hostile values
and reads them back through plain SQL and through ``Event.payload`` alike, on SQLite
and on the suite's real PostgreSQL server.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runlog
from runlog import _payload
from runlog._cli import main
from runlog._payload import MARK, clean_text, encode, encode_span_ids
from runlog._runs import _state
from runlog._store import Event, open_store

from pg_server import fresh_database
from support import rows

CAP = 64 * 1024


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each backend in turn, empty: a fresh SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path / "events.db")
        return
    with fresh_database(request.getfixturevalue("pg_server")) as url:
        yield url


def sql_rows(url: str, event_type: str, *fields: str) -> list[tuple[Any, ...]]:
    """(fields read by the backend's own JSON functions..., Event) for each event of a type.

    The SQL is the backend's: ``json_extract`` on SQLite, ``payload::jsonb ->>`` on
    PostgreSQL, so a payload that either cannot cast fails here.
    """
    store = open_store(url, readonly=True)
    try:
        store.create()
        p = store.placeholder
        columns = ", ".join([*(store.json_text(f) for f in fields), "payload"])
        sql = (
            f"SELECT {columns}, id, timestamp, run_id, parent_run_id, event_type, payload"
            f" FROM events WHERE event_type = {p} ORDER BY id"
        )
        found = store.query(sql, [event_type])
    finally:
        store.close()
    return [(*row[: len(fields)], Event.from_row(row[len(fields) + 1 :])) for row in found]


def logged(payload: Mapping[Any, Any], db: Path, **init: Any) -> dict[str, Any]:
    """Log ``payload`` through a sync run on ``db``; return the payload as stored."""
    runlog.init(db=str(db), sync=True, **init)
    runlog.log_event("x", payload)
    return rows(db, "SELECT * FROM events WHERE event_type = 'x'")[-1]["payload"]  # type: ignore[no-any-return]


# -- hostile objects ------------------------------------------------------------------
class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr")


class BadStr:
    def __str__(self) -> str:
        raise RuntimeError("str")

    def __repr__(self) -> str:
        raise RuntimeError("repr")


class BadDump:
    """A pydantic-like model whose model_dump raises."""

    def model_dump(self, **_: Any) -> dict[str, Any]:
        raise RuntimeError("model_dump")


class BadOrder:
    """Set members whose ordering raises something other than TypeError."""

    def __lt__(self, other: object) -> bool:
        raise ZeroDivisionError("ordering")

    def __hash__(self) -> int:
        return id(self)


class BadMapping(Mapping[str, Any]):
    """A Mapping whose iteration raises."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[str]:
        raise OSError("iteration")


class BadAttribute:
    """Attribute access raises (and so does isinstance's __class__ check)."""

    def __getattribute__(self, name: str) -> Any:
        raise AttributeError(name)


@dataclasses.dataclass
class Unset:
    """A dataclass whose field(init=False) was never set."""

    a: int
    b: int = dataclasses.field(init=False)


def nested(depth: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(depth):
        out = [out]
    return out


HOSTILE: dict[str, Any] = {
    "huge_int": 10**5000,
    "unset_dataclass_field": Unset(1),
    "raising_model_dump": BadDump(),
    "raising_set_order": {BadOrder(), BadOrder()},
    "raising_mapping_iteration": {"inner": BadMapping()},
    "raising_repr": BadRepr(),
    "raising_str_and_repr": BadStr(),
    "raising_attribute_access": BadAttribute(),
}


class TestFastPath:
    """The common payloads go through the C encoder alone: the slow path is not taken."""

    @pytest.mark.parametrize(
        "payload",
        [
            {"task_id": 7, "queue": "default", "attempt": 1, "ok": True, "score": 0.5, "x": None},
            {"model_name": "gpt-4o-mini", "input_tokens": 3, "token_source": "usage"},
            {"span_id": 2, "parent_span_id": 1, "fields": {"task": {"id": 7}}, "tags": [1, "a"]},
            {"text": "héllo wörld \U0001f600", "quote": 'say "hi"\n'},
        ],
    )
    def test_common_payloads_stay_on_the_fast_path(
        self, payload: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No walk, no per-value Python work: the text is the C encoder's."""

        def no_slow_path(*_: Any, **__: Any) -> str:
            raise AssertionError("the slow path was taken")

        monkeypatch.setattr(_payload, "_slow", no_slow_path)
        assert json.loads(encode(payload, CAP)) == payload


class TestNeverRaises:
    """Defect 1: log_event raised for what was inside the payload."""

    @pytest.mark.parametrize("name", list(HOSTILE))
    def test_a_hostile_value_is_replaced_in_place(self, name: str, db_path: Path) -> None:
        """The bad value becomes a marked string at its path; its siblings stay."""
        stored = logged({"before": 1, name: HOSTILE[name], "after": "ok"}, db_path)
        assert stored["before"] == 1 and stored["after"] == "ok"
        assert isinstance(stored[name], str | list | dict)
        marked = stored[MARK]["repr"]
        assert marked and all(path.startswith(name) for path in marked)

    def test_a_mapping_payload_whose_iteration_raises(self, db_path: Path) -> None:
        """Even the payload itself failing to iterate logs an event, marked at path ""."""
        assert logged(BadMapping(), db_path) == {MARK: {"repr": [""]}}


class TestInPlace:
    """Defect 2: one bad value cost the whole payload; truncation mangled."""

    def test_deep_nesting_keeps_the_siblings(self, db_path: Path) -> None:
        """A value nested 3,000 deep is cut at depth 100 in place; the rest stays."""
        stored = logged({"keep": 7, "deep": nested(3000)}, db_path)
        assert stored["keep"] == 7
        assert isinstance(stored["deep"], list)
        (path,) = stored[MARK]["repr"]
        assert path.startswith("deep[0][0]")

    def test_a_cut_string_is_a_prefix_of_the_string(self, db_path: Path) -> None:
        """A cut string is the original's beginning and "…", never a piece of JSON text."""
        stored = logged({"id": 7, "text": "a" * 100_000}, db_path, max_payload_bytes=2000)
        assert stored["id"] == 7
        assert stored["text"].startswith("aaaa") and stored["text"].endswith("…")
        assert stored[MARK]["truncated"] == ["text"]
        assert stored[MARK]["original_bytes"] > 100_000

    def test_a_cut_list_is_a_shorter_list_and_small_fields_stay(self, db_path: Path) -> None:
        """Lists stay lists (a prefix), objects keep their small fields."""
        payload = {"items": list(range(100_000)), "meta": {"a": 1, "big": "x" * 100_000}}
        stored = logged(payload, db_path, max_payload_bytes=20_000)
        assert stored["items"] == list(range(len(stored["items"])))
        assert len(stored["items"]) > 100
        assert stored["meta"]["a"] == 1 and stored["meta"]["big"].startswith("xxx")
        assert set(stored[MARK]["truncated"]) == {f"items[{len(stored['items'])}:]", "meta.big"}

    def test_the_cap_is_shared_no_key_vanishes(self, db_path: Path) -> None:
        """20 fields of 10 KB under a 64 KB cap: all 20 keys stay, each cut alike."""
        payload = {f"field{i}": str(i) * 10_240 for i in range(20)}
        stored = logged(payload, db_path)
        assert [k for k in stored if k != MARK] == list(payload)
        sizes = {len(v) for k, v in stored.items() if k != MARK}
        assert max(sizes) - min(sizes) <= 1 and min(sizes) > 2_500
        assert len(json.dumps(stored, separators=(",", ":"))) <= CAP

    def test_one_huge_field_gets_most_of_the_cap(self, db_path: Path) -> None:
        """One 1 MB field under a 64 KB cap keeps about 64 KB, not 1 KB."""
        stored = logged({"small": 1, "big": "y" * 1_000_000}, db_path)
        assert stored["small"] == 1
        assert 60_000 < len(stored["big"]) < CAP

    def test_a_payloads_own_marker_is_runlogs_object(self) -> None:
        """_runlog in a payload is kept as runlog's object: a dict is extended, else wrapped."""
        assert json.loads(encode({MARK: 5, "a": 1}, CAP)) == {"a": 1, MARK: {"user_value": 5}}
        assert json.loads(encode({MARK: {"hook_error": ["e"]}, "x": math.nan}, CAP)) == {
            "x": "NaN",
            MARK: {"hook_error": ["e"], "repr": ["x"]},
        }

    def test_the_marker_is_never_cut(self, db_path: Path) -> None:
        """runlog's _runlog object survives truncation whole, with what the payload put there."""
        payload = {MARK: {"hook_error": ["e" * 5_000]}, "a": "y" * 5_000, "n": 1}
        stored = logged(payload, db_path, max_payload_bytes=2000)
        marker = stored[MARK]
        assert isinstance(marker, dict) and marker["original_bytes"] > 10_000
        assert "a" in marker["truncated"] and stored["n"] == 1
        assert marker["hook_error"][0].startswith("eee")

    def test_every_payload_fits_the_cap(self) -> None:
        """Whatever the shape, the text is at most the cap."""
        for payload in (
            {f"k{i}": i for i in range(50_000)},
            {"a" * 5_000: 1, "b" * 5_000: 2},
            {"l": [[["z" * 3000] * 10] * 10]},
            {MARK: "u" * 100_000},
        ):
            text = encode(payload, 1000)
            assert len(text) <= 1000 and isinstance(json.loads(text)[MARK], dict)

    def test_colliding_keys_are_made_unique(self, db_path: Path) -> None:
        """{1: a, "1": b}: the string key keeps its name, the int one is renamed and marked."""
        payload = {1: "int", "1": "str", "n": {2: "x", "2": "y"}}
        runlog.init(db=str(db_path), sync=True)
        runlog.log_event("x", payload)
        conn = sqlite3.connect(db_path)
        (text, one) = conn.execute(
            "SELECT payload, json_extract(payload, '$.\"1\"') FROM events WHERE event_type = 'x'"
        ).fetchone()
        conn.close()

        def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            assert len({k for k, _ in pairs}) == len(pairs), pairs
            return dict(pairs)

        stored = json.loads(text, object_pairs_hook=no_duplicates)
        assert stored["1"] == one == "str" and stored["1~2"] == "int"
        assert stored["n"] == {"2": "y", "2~2": "x"}
        assert stored[MARK]["keys"] == ["1~2", "n.2~2"]

    def test_converted_keys_are_marked(self, db_path: Path) -> None:
        """True, None, NaN and tuple keys become their JSON text or repr, listed under keys."""
        payload = {True: 1, None: 2, math.nan: 3, (1, 2): 4}
        stored = logged(payload, db_path)
        assert stored == {
            "true": 1,
            "null": 2,
            "NaN": 3,
            "(1, 2)": 4,
            MARK: {"keys": ["true", "null", "NaN", "(1, 2)"]},
        }

    def test_bytes_are_told_apart_from_strings(self, db_path: Path) -> None:
        """Bytes are base64 and marked; a string that looks like base64 is left alone."""
        stored = logged({"raw": b"\xff\xfe", "text": "base64://4="}, db_path)
        assert stored == {"raw": "//4=", "text": "base64://4=", MARK: {"base64": ["raw"]}}


class TestTextBothBackendsStore:
    """Defect 3: one NUL broke reads on PostgreSQL for good."""

    @pytest.mark.parametrize("text", ["a\x00b", "lone \udc80 low", "lone \ud800 high", "\x00"])
    def test_nul_and_lone_surrogates_read_and_filter_alike(
        self, text: str, db_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Stored as U+FFFD and marked; tree, SQL casts and filters on the original work."""
        runlog.init(db=db_url, sync=True, instance_id=text)
        runlog.log_event("x", {"text": text, "status": "error", "k" + text: 1})
        ((sql_text, event),) = sql_rows(db_url, "x", "text")
        assert sql_text == event.payload["text"] == clean_text(text)
        assert "\x00" not in sql_text and "\ufffd" in sql_text
        assert event.payload[MARK] == {"keys": ["k" + clean_text(text)], "text": ["text"]}
        assert runlog.state.count_events("x", text=text) == 1
        assert runlog.state.count_events("x", status="error") == 1
        run_id = runlog.current_run_id()
        assert runlog.state.count_events("process.started", instance_id=text) == 1
        runlog.flush()
        capsys.readouterr()
        assert main(["tree", "--db", db_url]) == 0
        assert main(["show", str(run_id), "--db", db_url]) == 0
        out = capsys.readouterr().out
        assert clean_text(text) in out

    def test_a_surrogate_pair_is_one_character(self, db_url: str) -> None:
        """Two surrogates that form a pair are the character they encode, unmarked."""
        runlog.init(db=db_url, sync=True)
        runlog.log_event("x", {"text": "\ud83d\ude00", "plain": "\U0001f600"})
        ((a, b, event),) = sql_rows(db_url, "x", "text", "plain")
        assert a == b == "\U0001f600" and event.payload == {"text": a, "plain": b}


# -- fuzzing ----------------------------------------------------------------------
hostile_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(4300, 6000).map(lambda digits: 10**digits),  # past the int digit limit
    st.sampled_from([2**64, 2**63 - 1, -(2**63)]),
    st.floats(),
    st.text(),
    st.binary(max_size=20),
    st.builds(BadRepr),
    st.builds(BadStr),
    st.builds(BadDump),
    st.builds(BadMapping),
    st.builds(BadAttribute),
    st.builds(Unset, st.integers()),
    st.builds(lambda: {BadOrder(), BadOrder()}),
    st.integers(1, 400).map(nested),
    st.frozensets(st.integers(), max_size=3),
)
hostile_key = st.one_of(
    st.text(max_size=8),
    st.integers(-3, 3),
    st.booleans(),
    st.none(),
    st.floats(),
    st.sampled_from(["1", "true", "null", "NaN", MARK, "a\x00", "\udc80", "password"]),
    st.tuples(st.integers()),
)
hostile_value = st.recursive(
    hostile_leaf,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(hostile_key, children, max_size=4)
    ),
    max_leaves=12,
)
hostile_payload = st.dictionaries(hostile_key, hostile_value, max_size=6)


def strings(data: Any) -> list[str]:
    """Every string in decoded JSON, keys included."""
    if isinstance(data, dict):
        return [*data, *(s for v in data.values() for s in strings(v))]
    if isinstance(data, list):
        return [s for v in data for s in strings(v)]
    return [data] if isinstance(data, str) else []


def strict(text: str) -> Any:
    """JSON without NaN/Infinity and without duplicate keys."""

    def reject(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        assert len({k for k, _ in pairs}) == len(pairs), f"duplicate keys in {pairs}"
        return dict(pairs)

    return json.loads(text, parse_constant=reject, object_pairs_hook=unique)


class TestFuzz:
    """Hostile payloads: log_event never raises; every other field survives, everywhere."""

    @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
    @given(hostile_payload)
    def test_encoder_properties(self, payload: dict[Any, Any]) -> None:
        """Strict JSON with unique keys, one key out per key in, no NUL, within the cap."""
        fields = {f"h{i}": value for i, value in enumerate(payload.values())}
        text = encode({"anchor": 1, **fields, "nested": payload}, CAP)
        stored = strict(text)
        assert stored["anchor"] == 1
        assert set(stored) - {MARK} == {"anchor", "nested", *fields}
        assert len(stored["nested"]) == len(payload)
        assert all(clean_text(t) == t for t in strings(stored)) and len(text) <= CAP

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(payload=hostile_payload, text=st.text(max_size=20))
    def test_read_back_through_sql_and_event_payload(
        self, db_url: str, payload: dict[Any, Any], text: str
    ) -> None:
        """On both backends: SQL's JSON functions and Event.payload agree; filters find it."""
        if _state.runtime is None:
            runlog.init(db=db_url, sync=True)
        seq = next(SEQ)
        runlog.log_event("fuzz", {**payload, "anchor": seq, "text": text, "tag": f"t{seq}"})
        tag, stored_text, event = sql_rows(db_url, "fuzz", "tag", "text")[-1]
        assert event.payload["anchor"] == seq and tag == event.payload["tag"] == f"t{seq}"
        assert stored_text == event.payload["text"] == clean_text(text)
        assert runlog.state.count_events("fuzz", tag=f"t{seq}", text=text) == 1
        keys = [k for k in event.payload if k not in ("anchor", "text", "tag", MARK)]
        assert len(keys) == len([k for k in payload if k not in ("anchor", "text", "tag", MARK)])


SEQ = itertools.count(1)


@settings(max_examples=500, deadline=None)
@given(
    span_id=st.integers(min_value=1, max_value=2**63 - 1),
    parent=st.none() | st.integers(min_value=1, max_value=2**63 - 1),
    duration=st.none() | st.integers(min_value=0, max_value=10**12).map(lambda us: us / 1000),
)
def test_span_ids_text_is_the_encoders(
    span_id: int, parent: int | None, duration: float | None
) -> None:
    """A span's own events, written directly, are exactly what encode() writes."""
    payload: dict[str, object] = {"span_id": span_id, "parent_span_id": parent}
    if duration is not None:
        payload.update(duration_ms=duration, status="ok")
    assert encode_span_ids(span_id, parent, duration) == encode(payload, 1 << 20)
