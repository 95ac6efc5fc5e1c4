"""Turning any payload mapping into the JSON text of the ``payload`` column, never raising.

The fast path is one ``json.dumps`` call (C speed) whose ``default`` converts the
common non-JSON types losslessly enough (datetime, Decimal, UUID, sets, dataclasses,
enums, bytes, paths).  Anything it cannot convert — an arbitrary object, NaN, a
cycle, a key that is not a string — sends the payload down the slow path, a Python
walk that stores such values as their ``repr`` and records where it did so under the
reserved key ``_runlog``:

    {"when": "...", "obj": "<Foo object at 0x...>", "_runlog": {"repr": ["obj"]}}

Payloads whose JSON is larger than the configured cap keep their small fields and get
their large ones cut, again marked under ``_runlog``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import json
import json.encoder
import math
import pathlib
import uuid
from collections.abc import Callable, Mapping
from typing import Any

MARK = "_runlog"
_SEPARATORS = (",", ":")
_EMPTY = "{}"


class _NeedsSlowPath(Exception):
    """Raised inside ``json.dumps`` to leave the fast path."""


def _convert(value: Any) -> Any:
    """Convert a known non-JSON type to a JSON-able value, or raise ``_NeedsSlowPath``."""
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID | pathlib.PurePath):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    dump = getattr(type(value), "model_dump", None)  # pydantic v2 models
    if callable(dump):
        return dump(value, mode="json")
    raise _NeedsSlowPath


def _default(value: Any) -> Any:
    return _convert(value)


def _make_fast_encode() -> Callable[[Mapping[str, Any]], str]:
    """One encoder, built once: ``json.dumps`` builds a new one per call given options.

    CPython's C encoder is used directly without its cycle check: a cycle overflows
    the stack instead, and ``RecursionError`` sends the payload to the slow path,
    which marks the cycle.  That saves a dictionary operation per container on every
    event; other Pythons get the standard encoder.
    """
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover - not CPython
        return json.JSONEncoder(separators=_SEPARATORS, allow_nan=False, default=_default).encode
    chunks = c_make_encoder(
        None, _default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    join = "".join

    def fast_encode(payload: Mapping[str, Any]) -> str:
        return join(chunks(payload, 0))

    return fast_encode


_fast_encode = _make_fast_encode()


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not lose the event
        return f"<unrepresentable {type(value).__qualname__}>"


class _Walker:
    """The slow path: rebuild the payload as plain JSON values, noting every repr."""

    def __init__(self) -> None:
        self.marked: list[str] = []
        self._active: set[int] = set()

    def value(self, value: Any, path: str) -> Any:
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            return self._mark(path, "NaN" if math.isnan(value) else repr(value))
        if isinstance(value, Mapping | list | tuple):
            return self._container(value, path)
        try:
            converted = _convert(value)
        except _NeedsSlowPath:
            return self._mark(path, _safe_repr(value))
        except Exception:  # a converter that raised (a broken model_dump, say)
            return self._mark(path, _safe_repr(value))
        return self.value(converted, path)

    def _container(self, value: Any, path: str) -> Any:
        if id(value) in self._active:
            return self._mark(path, "<cycle>")
        self._active.add(id(value))
        try:
            if isinstance(value, Mapping):
                out: dict[str, Any] = {}
                for key, item in value.items():
                    name = key if isinstance(key, str) else self._key(key, path)
                    out[name] = self.value(item, f"{path}.{name}" if path else name)
                return out
            return [self.value(item, f"{path}[{i}]") for i, item in enumerate(value)]
        finally:
            self._active.discard(id(value))

    def _key(self, key: Any, path: str) -> str:
        if key is None or isinstance(key, bool | int | float):
            return json.dumps(key)
        return self._mark(f"{path}.<key>" if path else "<key>", _safe_repr(key))

    def _mark(self, path: str, text: str) -> str:
        self.marked.append(path)
        return text


def _merge_mark(payload: dict[str, Any], key: str, value: Any) -> None:
    mark = payload.get(MARK)
    if not isinstance(mark, dict):
        mark = {} if mark is None else {"user_value": mark}
        payload[MARK] = mark
    mark[key] = value


def _truncate(payload: dict[str, Any], size: int, cap: int) -> str:
    """Keep the smallest fields whole and cut the largest until the JSON fits ``cap``."""
    parts = {k: json.dumps(v, separators=_SEPARATORS) for k, v in payload.items()}
    out: dict[str, Any] = {}
    cut: list[str] = []
    budget = cap - 200  # room for the marker
    for key in sorted(parts, key=lambda k: len(parts[k]) + len(k)):
        cost = len(parts[key]) + len(key) + 6
        if cost <= budget:
            out[key] = payload[key]
            budget -= cost
        else:
            keep = max(0, min(budget - len(key) - 10, 1024))
            if keep > 0:
                out[key] = parts[key][:keep] + "…"
                budget -= keep + len(key) + 10
            cut.append(key)
    _merge_mark(out, "truncated", cut)
    _merge_mark(out, "original_bytes", size)
    text = json.dumps(out, separators=_SEPARATORS)
    if len(text.encode("utf-8")) > cap:  # pathological: many keys; keep only the marker
        text = json.dumps(
            {MARK: {"truncated": sorted(payload), "original_bytes": size}},
            separators=_SEPARATORS,
        )
        if len(text) > cap:
            text = json.dumps({MARK: {"truncated": True, "original_bytes": size}})
    return text


def _slow_path(payload: Mapping[str, Any]) -> dict[str, Any]:
    walker = _Walker()
    try:
        plain: dict[str, Any] = walker.value(payload, "")
    except RecursionError:  # nested deeper than Python can walk: keep what we can
        return {MARK: {"unencodable": _safe_repr(payload)[:4096]}}
    if walker.marked:
        _merge_mark(plain, "repr", walker.marked)
    return plain


def encode(payload: Mapping[str, Any] | None, cap: int) -> str:
    """Return the JSON text for ``payload``; never raises for any value inside it."""
    if not payload:
        return _EMPTY
    try:
        text = _fast_encode(payload)
        plain: dict[str, Any] | None = None
    except (_NeedsSlowPath, ValueError, TypeError, RecursionError):
        plain = _slow_path(payload)
        text = json.dumps(plain, separators=_SEPARATORS)
    if len(text) > cap // 4 and (size := len(text.encode("utf-8"))) > cap:
        return _truncate(plain if plain is not None else json.loads(text), size, cap)
    return text


__all__ = ["MARK", "encode"]
