"""The pure parts of the OpenTelemetry bridge: ids, TRACEPARENT, attributes, endpoints."""

from __future__ import annotations

import pytest

from runlog._cli._export import parse_since
from runlog._errors import ConfigurationError
from runlog._otlp._export import parse_headers, resolve_endpoint, service_name
from runlog._otlp._mapping import flatten
from runlog._propagation import format_traceparent, parse_traceparent, root_trace_id, span_id


class TestIds:
    def test_ids_are_deterministic_and_distinct(self) -> None:
        """The same inputs give the same ids; another run, span or start gives others."""
        trace = root_trace_id(1, 1_795_000_000_000_000_000)
        assert trace == root_trace_id(1, 1_795_000_000_000_000_000)
        assert trace != root_trace_id(1, 1_795_000_000_000_000_001)
        assert trace != root_trace_id(2, 1_795_000_000_000_000_000)
        assert 0 < trace < 2**128
        ids = {span_id(trace, run, span) for run in (1, 2) for span in range(50)}
        assert len(ids) == 100 and all(0 < i < 2**64 for i in ids)

    @pytest.mark.parametrize(
        "header",
        [
            "",
            "garbage",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ],
    )
    def test_invalid_traceparent(self, header: str) -> None:
        """Headers the W3C format rejects are None (never an exception)."""
        assert parse_traceparent(header) is None

    def test_traceparent_round_trip(self) -> None:
        """A formatted header parses back; a future version's extra fields are allowed."""
        header = format_traceparent(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)
        assert header == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        assert parse_traceparent(header) == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)
        assert parse_traceparent(header.replace("00-", "01-", 1) + "-future") is not None


class TestAttributes:
    def test_flatten_keeps_what_otlp_can_hold(self) -> None:
        """Nested objects dotted; homogeneous scalar lists kept; the rest JSON; null dropped."""
        out = flatten(
            {
                "s": "x",
                "b": True,
                "i": 3,
                "f": 1.5,
                "none": None,
                "nested": {"a": {"b": 1}},
                "ints": [1, 2],
                "mixed": [1, "a"],
                "objs": [{"a": 1}],
                "huge": 2**70,
                "empty": [],
            },
            {},
        )
        assert out == {
            "s": "x",
            "b": True,
            "i": 3,
            "f": 1.5,
            "nested.a.b": 1,
            "ints": [1, 2],
            "mixed": '[1,"a"]',
            "objs": '[{"a":1}]',
            "huge": str(2**70),
            "empty": [],
        }


class TestSettings:
    def test_endpoint_resolution(self) -> None:
        """--endpoint is a base; the traces variable is used as is; the base gets /v1/traces."""
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://x.example/api/public/otel/",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://t.example/custom",
        }
        assert resolve_endpoint("http://h:4318", env) == "http://h:4318/v1/traces"
        assert resolve_endpoint("http://h:4318/v1/traces", env) == "http://h:4318/v1/traces"
        assert resolve_endpoint(None, env) == "https://t.example/custom"
        del env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        assert resolve_endpoint(None, env) == "https://x.example/api/public/otel/v1/traces"
        assert resolve_endpoint(None, {}) == "http://localhost:4318/v1/traces"

    def test_headers_and_service_name(self) -> None:
        """--headers as OTEL_EXPORTER_OTLP_HEADERS (values URL-decoded); bad pairs raise."""
        assert parse_headers("Authorization=Basic%20abc, X-Team = 7") == {
            "authorization": "Basic abc",
            "x-team": "7",
        }
        with pytest.raises(ConfigurationError, match="key=value"):
            parse_headers("oops")
        assert service_name(None, {"OTEL_SERVICE_NAME": "svc"}) == "svc"
        assert service_name("mine", {"OTEL_SERVICE_NAME": "svc"}) == "mine"
        assert service_name(None, {}) == "runlog"

    def test_since(self) -> None:
        """Durations count back from now; ISO times are absolute."""
        now = 10_000 * 10**9
        assert parse_since("90s", now) == now - 90 * 10**9
        assert parse_since("2h", now) == now - 7200 * 10**9
        assert parse_since("1970-01-01T00:00:10+00:00", now) == 10 * 10**9
        with pytest.raises(Exception, match="duration"):
            parse_since("soon", now)
