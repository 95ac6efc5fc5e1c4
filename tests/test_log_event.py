"""log_event: the explicit form, call-site errors, and payloads of every shape."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runlog
from runlog._payload import MARK, encode
from runlog._scrub import Scrubber

from support import rows


@pytest.fixture
def sync_db(db_path: Path) -> Path:
    runlog.init(db=str(db_path), sync=True)
    return db_path


def last_payload(db: Path) -> dict[str, Any]:
    return rows(db)[-1]["payload"]  # type: ignore[no-any-return]


class TestExplicitForm:
    def test_writes_exactly_the_given_ids(self, sync_db: Path) -> None:
        """With run_id= and parent_run_id= the row carries exactly those ids."""
        runlog.log_event("task.claimed", {"task_id": 7}, run_id=12, parent_run_id=3)
        row = rows(sync_db)[-1]
        assert (row["run_id"], row["parent_run_id"], row["event_type"]) == (12, 3, "task.claimed")

    def test_run_id_without_parent_writes_null_parent(self, sync_db: Path) -> None:
        """run_id= alone writes a NULL parent: the explicit form never guesses."""
        runlog.log_event("x", run_id=5)
        assert rows(sync_db)[-1]["parent_run_id"] is None

    def test_explicit_form_does_not_start_a_run(self, db_path: Path) -> None:
        """Logging with an explicit run_id before init() logs no process.started."""
        from support import python

        python("import runlog; runlog.log_event('x', run_id=40, parent_run_id=2)", db_path)
        assert [(r["event_type"], r["run_id"]) for r in rows(db_path)] == [("x", 40)]

    def test_parent_without_run_id_is_an_error(self, sync_db: Path) -> None:
        """parent_run_id= without run_id= raises ValueError."""
        with pytest.raises(ValueError, match="needs run_id"):
            runlog.log_event("x", parent_run_id=3)

    @pytest.mark.parametrize("bad", [0, -1, 2**63, True, "12", 1.0])
    def test_bad_ids(self, sync_db: Path, bad: object) -> None:
        """Ids must be positive 64-bit ints."""
        with pytest.raises((TypeError, ValueError), match="run_id"):
            runlog.log_event("x", run_id=bad)  # type: ignore[arg-type]


class TestCallSiteErrors:
    @pytest.mark.parametrize("bad", [None, 3, b"x", ["a"]])
    def test_event_type_must_be_a_string(self, sync_db: Path, bad: object) -> None:
        """A non-string event type raises TypeError with an example of a good one."""
        with pytest.raises(TypeError, match=r"task\.claimed"):
            runlog.log_event(bad)  # type: ignore[arg-type]

    @pytest.mark.parametrize("bad", ["a\x00b", "task.\ud800"])
    def test_event_type_must_be_storable(self, sync_db: Path, bad: str) -> None:
        """NUL and lone surrogates, which databases cannot store, raise ValueError at once."""
        with pytest.raises(ValueError, match="event type"):
            runlog.log_event(bad)

    def test_non_ascii_event_type_is_fine(self, sync_db: Path) -> None:
        """Any other Unicode name is stored as given."""
        runlog.log_event("tâche.réclamée")
        assert rows(sync_db)[-1]["event_type"] == "tâche.réclamée"

    def test_event_type_must_not_be_empty(self, sync_db: Path) -> None:
        """An empty event type raises ValueError."""
        with pytest.raises(ValueError, match="non-empty"):
            runlog.log_event("")

    @pytest.mark.parametrize("bad", [[("a", 1)], "text", 5, {"a", "b"}])
    def test_payload_must_be_a_mapping(self, sync_db: Path, bad: object) -> None:
        """A payload that is not a mapping raises TypeError."""
        with pytest.raises(TypeError, match="mapping"):
            runlog.log_event("x", bad)  # type: ignore[arg-type]

    def test_nothing_is_written_for_a_bad_call(self, sync_db: Path) -> None:
        """A call that raised wrote nothing."""
        before = len(rows(sync_db))
        with pytest.raises(TypeError):
            runlog.log_event(None)  # type: ignore[arg-type]
        assert len(rows(sync_db)) == before


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class TestPayloadConversion:
    def test_none_and_empty_payload(self, sync_db: Path) -> None:
        """No payload is stored as an empty JSON object."""
        runlog.log_event("a")
        runlog.log_event("b", {})
        assert [r["payload"] for r in rows(sync_db)[-2:]] == [{}, {}]

    def test_any_mapping_type(self, sync_db: Path) -> None:
        """OrderedDict and other mappings are accepted."""
        runlog.log_event("x", OrderedDict(a=1))
        assert last_payload(sync_db) == {"a": 1}

    def test_known_types_convert_without_marks(self, sync_db: Path) -> None:
        """datetime, Decimal, UUID, sets, enums, dataclasses, paths become JSON values."""
        when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        ident = uuid.UUID(int=1)
        runlog.log_event(
            "x",
            {
                "when": when,
                "day": when.date(),
                "price": decimal.Decimal("1.10"),
                "id": ident,
                "tags": {"b", "a"},
                "color": Color.RED,
                "point": Point(1, 2),
                "path": Path("/tmp/x"),
                "wait": datetime.timedelta(seconds=1.5),
                "tuple": (1, 2),
            },
        )
        assert last_payload(sync_db) == {
            "when": "2026-01-02T03:04:05+00:00",
            "day": "2026-01-02",
            "price": "1.10",
            "id": str(ident),
            "tags": ["a", "b"],
            "color": "red",
            "point": {"x": 1, "y": 2},
            "path": "/tmp/x",
            "wait": 1.5,
            "tuple": [1, 2],
        }

    def test_bytes_are_base64_and_marked(self, sync_db: Path) -> None:
        """Bytes of any content are stored one way: base64 text, listed under _runlog.base64."""
        runlog.log_event("x", {"raw": b"hi", "blob": bytearray(b"\xff\x00")})
        assert last_payload(sync_db) == {
            "raw": "aGk=",
            "blob": "/wA=",
            MARK: {"base64": ["raw", "blob"]},
        }

    def test_unknown_objects_become_marked_reprs(self, sync_db: Path) -> None:
        """Arbitrary objects are stored as their repr and listed under _runlog.repr."""
        runlog.log_event("x", {"ok": 1, "obj": Opaque(), "nested": {"deep": [Opaque()]}})
        assert last_payload(sync_db) == {
            "ok": 1,
            "obj": "<Opaque>",
            "nested": {"deep": ["<Opaque>"]},
            MARK: {"repr": ["obj", "nested.deep[0]"]},
        }

    def test_broken_repr_is_absorbed(self, sync_db: Path) -> None:
        """An object whose __repr__ raises still leaves a marked placeholder."""
        runlog.log_event("x", {"bad": BadRepr()})
        assert last_payload(sync_db)["bad"] == "<unrepresentable BadRepr>"

    def test_nan_and_infinity(self, sync_db: Path) -> None:
        """NaN and infinities, which JSON cannot hold, become marked strings."""
        runlog.log_event("x", {"a": math.nan, "b": math.inf, "c": -math.inf, "d": 1.5})
        payload = last_payload(sync_db)
        assert (payload["a"], payload["b"], payload["c"], payload["d"]) == (
            "NaN",
            "inf",
            "-inf",
            1.5,
        )
        assert payload[MARK]["repr"] == ["a", "b", "c"]

    def test_cycles(self, sync_db: Path) -> None:
        """A self-referencing payload is cut at the cycle with a marker."""
        loop: dict[str, Any] = {"name": "loop"}
        loop["self"] = loop
        runlog.log_event("x", {"loop": loop})
        assert last_payload(sync_db)["loop"] == {"name": "loop", "self": "<cycle>"}

    def test_non_string_keys(self, sync_db: Path) -> None:
        """Int keys become strings as in json; other keys become marked reprs."""
        runlog.log_event("x", {1: "one", (1, 2): "pair"})  # type: ignore[dict-item]
        payload = last_payload(sync_db)
        assert payload["1"] == "one"
        assert payload["(1, 2)"] == "pair"

    def test_payload_is_captured_at_call_time(self, db_path: Path) -> None:
        """Mutating the payload after log_event returns does not change the event."""
        runlog.init(db=str(db_path))
        data = {"n": 1}
        runlog.log_event("x", data)
        data["n"] = 2
        runlog.flush()
        assert last_payload(db_path) == {"n": 1}


class TestSizeCap:
    def test_huge_payload_is_truncated_with_marker(self, db_path: Path) -> None:
        """A payload over the cap keeps small fields, cuts big ones and says so."""
        runlog.init(db=str(db_path), sync=True, max_payload_bytes=2000)
        runlog.log_event("x", {"id": 7, "text": "a" * 100_000})
        row = rows(db_path)[-1]
        payload = row["payload"]
        assert payload["id"] == 7
        assert payload[MARK]["truncated"] == ["text"]
        assert payload[MARK]["original_bytes"] > 100_000
        assert len(json.dumps(payload)) <= 2000 + 100

    def test_cap_from_environment(self, monkeypatch: pytest.MonkeyPatch, db_path: Path) -> None:
        """RUNLOG_MAX_PAYLOAD_BYTES sets the cap."""
        monkeypatch.setenv("RUNLOG_MAX_PAYLOAD_BYTES", "500")
        runlog.init(db=str(db_path), sync=True)
        runlog.log_event("x", {"text": "b" * 5000})
        assert MARK in last_payload(db_path)

    def test_many_keys_still_fit(self) -> None:
        """A payload of very many small keys still encodes to at most the cap."""
        text = encode({f"k{i}": i for i in range(50_000)}, 1000)
        assert len(text) <= 1000
        assert json.loads(text)[MARK]["original_bytes"] > 1000

    def test_payload_under_cap_is_untouched(self) -> None:
        """Payloads under the cap are stored exactly."""
        assert json.loads(encode({"t": "x" * 900}, 1000)) == {"t": "x" * 900}


# Text both backends store as it is: no NUL, no lone surrogates (those are normalised).
storable_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
)
# Keys stored as they are: storable, and not a secret's name (those are scrubbed).
plain_keys = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=10,
).filter(lambda key: key != MARK and not Scrubber().secret_key(key))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | storable_text,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(plain_keys, children, max_size=5)
    ),
    max_leaves=25,
)
anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary()
    | st.datetimes()
    | st.decimals()
    | st.uuids()
    | st.builds(Opaque)
    | st.builds(BadRepr)
    | st.frozensets(st.integers(), max_size=3),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=4)
    ),
    max_leaves=20,
)


class TestPayloadProperties:
    @given(st.dictionaries(plain_keys, json_values, max_size=8))
    def test_json_payloads_round_trip_exactly(self, payload: dict[str, Any]) -> None:
        """Any JSON-serialisable payload under the cap is stored exactly."""
        assert json.loads(encode(payload, 10**9)) == payload

    @given(st.dictionaries(st.text(max_size=10) | st.integers(), anything, max_size=6))
    def test_any_payload_encodes_to_strict_json(self, payload: dict[Any, Any]) -> None:
        """Whatever the values, encoding never raises and yields strict JSON (no NaN)."""
        text = encode(payload, 10**9)

        def reject(name: str) -> None:
            raise AssertionError(f"non-standard JSON constant {name}")

        assert isinstance(json.loads(text, parse_constant=reject), dict)

    @settings(suppress_health_check=[HealthCheck.too_slow], max_examples=50)
    @given(st.dictionaries(st.text(max_size=10), st.text(), max_size=20), st.integers(200, 4000))
    def test_cap_is_respected(self, payload: dict[str, str], cap: int) -> None:
        """The encoded payload never exceeds the cap by more than the marker's room."""
        assert len(encode(payload, cap).encode()) <= max(cap, 200)
