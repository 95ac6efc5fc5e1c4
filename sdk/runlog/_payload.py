"""The data boundary: any payload mapping becomes the JSON text of the ``payload`` column.

``encode`` never raises for what is inside a payload, whatever the user's objects do.

* **Fast path** (the common payload, a small dict of str/int/float/bool/None): one call
  of CPython's C JSON encoder, whose ``default`` converts the known types that need no
  mark (datetime, Decimal, UUID, paths, enums, sets, dataclasses, pydantic models).
  The only Python work per event is a cached look-up per top-level key (is it a
  secret?) and a few substring searches over the text the C encoder made.
* **Slow path** (anything else, or any exception at all on the fast path): a Python
  walk that rebuilds the payload from plain JSON values and replaces each bad value
  *in place*, listing its path under the reserved key ``_runlog``:

  ==============  ==============================================================
  ``repr``        stored as its ``repr`` (or a ``<...>`` placeholder if even that
                  fails): unknown objects, NaN/infinity, cycles, raising
                  converters, ints too long to print, nesting deeper than 100
  ``keys``        a key that was converted: not a string (``1`` → ``"1"``), the
                  reserved ``_runlog``, or clashing with another (``"1~2"``)
  ``text``        NUL or lone surrogates replaced by U+FFFD, so both backends can
                  store, cast and filter the text
  ``base64``      bytes, stored as standard base64 text
  ``scrubbed``    a secret (see ``_scrub``), stored as ``"[scrubbed]"``
  ``truncated``   cut to fit the cap, with ``original_bytes``
  ==============  ==============================================================

* **The cap** applies to the whole payload: when the JSON is larger, the largest
  values are cut first (water-filling: small fields stay whole, big ones share what is
  left) and keep their type: a cut string is a shorter string ending in "…", a cut list
  a shorter list, a cut object keeps its keys.  The ``_runlog`` marker is never cut.
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
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from . import _scrub

MARK = "_runlog"
MAX_DEPTH = 100
_SEPARATORS = (",", ":")
_EMPTY = "{}"
UNBUILDABLE = '{"_runlog":{"repr":[""]}}'
"""The payload of an event whose payload could not be made at all: the whole of it
(path ``""``) marked ``repr``, as :func:`encode` writes for a mapping it cannot read."""
_CATEGORIES = ("repr", "keys", "text", "base64", "scrubbed", "truncated")
_REPLACEMENT = "\ufffd"
_ELLIPSIS = "…"
_MIN_SHARE = 32  # below this many bytes per value, a container is shortened instead
_MARK_PATHS = 20  # paths listed per category before "… N more"
_PATH_CHARS = 200
_KEY_CACHE_LIMIT = 10_000

# In text written by encode_basestring_ascii: a NUL, or a surrogate escape not in a pair.
_BAD_TEXT = re.compile(
    r"\\u0000|\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f]"
)
# Any "key": in JSON text (values containing '":' give extra candidates: harmless).
_KEY_IN_TEXT = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)":')
# What json writes for a key that was not a string: 1, 1.5, true, false, null, NaN...
_CONVERTED_KEY = re.compile(r"-?[0-9].*|true|false|null|NaN|-?Infinity", re.S)


class _NeedsSlowPath(Exception):
    """Raised inside the C encoder to leave the fast path."""


def _convert(value: Any) -> Any:
    """A known non-JSON type as a JSON-able value needing no mark, else ``_NeedsSlowPath``."""
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID | pathlib.PurePath):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except Exception:  # unorderable, or an ordering that raises
            return list(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    dump = getattr(type(value), "model_dump", None)  # pydantic v2 models
    if callable(dump):
        return dump(value, mode="json")
    raise _NeedsSlowPath


def _make_chunks() -> Callable[[Any, int], Any]:
    """One encoder, built once: ``json.dumps`` builds a new one per call given options.

    It returns the chunks of the JSON text (``"".join`` them).  CPython's C encoder is
    used directly without its cycle check: a cycle overflows the stack instead, and
    ``RecursionError`` sends the payload to the slow path, which marks the cycle.  Other
    Pythons get the standard encoder.
    """
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover - not CPython
        encoder = json.JSONEncoder(separators=_SEPARATORS, allow_nan=False, default=_convert)
        return lambda payload, _: encoder.iterencode(payload)
    chunks: Callable[[Any, int], Any] = c_make_encoder(
        None, _convert, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    return chunks


_chunks = _make_chunks()
_concat = "".join
_dumps = json.JSONEncoder(separators=_SEPARATORS, allow_nan=False).encode
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain_key(key: object, scrubber: _scrub.Scrubber) -> bool:
    """Whether ``key`` (not yet in the cache) may be written as it is; cache it if so.

    ``_runlog`` never is: the slow path makes the payload's own marker runlog's object.
    """
    if type(key) is not str or key == MARK or scrubber.secret_key(key):
        return False
    known = scrubber.plain_keys
    if len(known) >= _KEY_CACHE_LIMIT:  # keys made of data: keep memory bounded
        known.clear()
    known.add(key)
    return True


def _nested_keys_plain(values: Any, scrubber: _scrub.Scrubber) -> bool | None:
    """Whether every key inside ``values`` is plain; None if an object hides its keys."""
    for value in values:
        kind = type(value)
        if kind is dict:
            for key in value:
                if key not in scrubber.plain_keys and not _plain_key(key, scrubber):
                    return False
            found = _nested_keys_plain(value.values(), scrubber)
        elif kind is list or kind is tuple:
            found = _nested_keys_plain(value, scrubber)
        elif kind in _SCALARS:
            continue
        else:  # a dataclass, a model: the C encoder made its keys
            return None
        if not found:
            return found
    return True


def _text_keys_plain(text: str, scrubber: _scrub.Scrubber) -> bool:
    """Whether no key written in ``text`` may be a secret or a converted non-string key."""
    for raw in _KEY_IN_TEXT.findall(text):
        if raw in scrubber.plain_keys:
            continue
        key = json.loads(f'"{raw}"') if "\\" in raw else raw
        if _CONVERTED_KEY.fullmatch(key) or not _plain_key(key, scrubber):
            return False
    return True


def _suspect(text: str) -> bool:
    """Whether JSON text may hold a NUL or a lone surrogate (cheap: two substring searches)."""
    return "\\ud" in text or "\\u0000" in text


def _nested_plain(payload: dict[str, Any], text: str, scrubber: _scrub.Scrubber) -> bool:
    """For a payload holding objects: whether no key inside needs the slow path."""
    try:
        plain = _nested_keys_plain(payload.values(), scrubber)
    except RecursionError:
        return False
    return _text_keys_plain(text, scrubber) if plain is None else plain


# -- the slow path ------------------------------------------------------------------
def clean_text(text: str) -> str:
    """``text`` as both backends store it: NUL and lone surrogates become U+FFFD.

    Readers apply the same rule to filter values, so a filter on the original text
    finds the stored one.
    """
    if "\x00" not in text:
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            pass
    fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return fixed.replace("\x00", _REPLACEMENT)


def _text_changed(text: str) -> tuple[str, bool]:
    """``clean_text(text)`` and whether it changed more than pairing surrogates."""
    if "\x00" not in text:
        try:
            text.encode("utf-8")
            return text, False
        except UnicodeEncodeError:
            pass
    fixed = clean_text(text)
    return fixed, "\x00" in text or fixed.count(_REPLACEMENT) > text.count(_REPLACEMENT)


def _placeholder(value: Any) -> str:
    try:
        return f"<unrepresentable {type(value).__qualname__}>"
    except Exception:  # pragma: no cover - a type whose name raises
        return "<unrepresentable>"


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
        if type(text) is not str:
            text = str.__str__(text)
    except Exception:  # a broken __repr__ must not lose the event
        return _placeholder(value)
    return clean_text(text)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _key_name(key: Any) -> str | None:
    """What json would write for a non-string key (None: no JSON form)."""
    if key is None or key is True or key is False:
        return json.dumps(key)
    if type(key) is int:
        return int.__repr__(key)
    if type(key) is float:
        return float.__repr__(key) if math.isfinite(key) else json.dumps(key)
    return None


class _Walker:
    """The slow path: rebuild the payload as plain JSON values, marking every change."""

    def __init__(self, scrubber: _scrub.Scrubber) -> None:
        self.scrubber = scrubber
        self.marks: dict[str, list[str]] = {c: [] for c in _CATEGORIES}
        self._active: set[int] = set()

    def mark(self, category: str, path: str) -> None:
        self.marks[category].append(path)

    def value(self, value: Any, path: str, depth: int) -> Any:
        try:
            return self._value(value, path, depth)
        except Exception:  # whatever a user's object does (RecursionError included)
            self.mark("repr", path)
            return _placeholder(value)

    def _value(self, value: Any, path: str, depth: int) -> Any:
        kind = type(value)
        if value is None or kind is bool:
            return value
        if kind is str or isinstance(value, str):
            text, changed = _text_changed(str.__str__(value))
            if changed:
                self.mark("text", path)
            return text
        if kind is int or isinstance(value, int):
            return self._int(int.__int__(value), path)
        if kind is float or isinstance(value, float):
            number = float.__float__(value)
            if math.isfinite(number):
                return number
            self.mark("repr", path)
            return "NaN" if math.isnan(number) else repr(number)
        if depth >= MAX_DEPTH:
            self.mark("repr", path)
            return f"<nested deeper than {MAX_DEPTH}: {kind.__qualname__}>"
        if isinstance(value, Mapping | list | tuple):
            return self._container(value, path, depth)
        if isinstance(value, bytes | bytearray | memoryview):
            self.mark("base64", path)
            return base64.b64encode(bytes(value)).decode("ascii")
        try:
            converted = _convert(value)
        except _NeedsSlowPath:
            self.mark("repr", path)
            return _safe_repr(value)
        except Exception:  # a converter that raised (a broken model_dump, say)
            self.mark("repr", path)
            return _safe_repr(value)
        return self.value(converted, path, depth + 1)

    def _int(self, number: int, path: str) -> Any:
        if number.bit_length() > 64:
            try:
                int.__repr__(number)  # past the interpreter's digit limit it raises
            except ValueError:
                self.mark("repr", path)
                return f"<int of about {int(number.bit_length() * 0.30103) + 1} digits>"
        return number

    def _container(self, value: Any, path: str, depth: int) -> Any:
        if id(value) in self._active:
            self.mark("repr", path)
            return "<cycle>"
        self._active.add(id(value))
        try:
            if isinstance(value, Mapping):
                return self._mapping(list(value.items()), path, depth)
            return [self.value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
        finally:
            self._active.discard(id(value))

    def _mapping(self, items: list[tuple[Any, Any]], path: str, depth: int) -> dict[str, Any]:
        """Keys made unique: clean string keys keep their names, converted ones yield."""
        taken = {k for k, _ in items if type(k) is str and self._clean_key(k)}
        out: dict[str, Any] = {}
        for key, item in items:
            if type(key) is str and key in taken:
                name = key
            else:
                name = self._unique(self._convert_key(key), taken, out)
                self.mark("keys", _join(path, name))
            where = _join(path, name)
            keeps_nothing = item is None or item is True or item is False
            if not keeps_nothing and self.scrubber.secret_key(name):
                self.mark("scrubbed", where)
                out[name] = _scrub.SCRUBBED
                continue
            out[name] = self.value(item, where, depth + 1)
        return out

    @staticmethod
    def _clean_key(key: str) -> bool:
        return not _text_changed(key)[1]

    def _convert_key(self, key: Any) -> str:
        if isinstance(key, str):
            return _text_changed(str.__str__(key))[0]
        try:
            name = _key_name(key)
        except Exception:  # an int subclass whose repr raises, say
            name = None
        return name if name is not None else _safe_repr(key)

    @staticmethod
    def _unique(name: str, taken: set[str], out: dict[str, Any]) -> str:
        candidate, n = name, 1
        while candidate in taken or candidate in out or candidate == MARK:
            n += 1
            candidate = f"{name}~{n}"
        taken.add(candidate)
        return candidate


# -- the cap ------------------------------------------------------------------------
class _Drop:
    """A value that cannot be made to fit: its entry is left out."""


_DROP = _Drop()


def _size(value: Any) -> int:
    return len(_dumps(value))


def _cut_text(text: str, budget: int) -> Any:
    """The longest prefix of ``text`` (plus "…" when there is room) within ``budget``."""
    if budget < 2:
        return _DROP
    tail = _ELLIPSIS if budget >= 10 else ""
    lo, hi = 0, min(len(text), budget)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _size(text[:mid] + tail) <= budget:
            lo = mid
        else:
            hi = mid - 1
    if lo and "\ud800" <= text[lo - 1] <= "\udbff":  # never split a surrogate pair
        lo -= 1
    cut = text[:lo] + tail
    return cut if _size(cut) <= budget else ""


def _share(sizes: list[int], room: int) -> int:
    """The largest per-value share ``c`` with ``sum(min(size, c)) <= room``."""
    left, n = room, len(sizes)
    for i, size in enumerate(sorted(sizes)):
        if size * (n - i) > left:
            return left // (n - i)
        left -= size
    return max(sizes, default=0)


class _Fitter:
    """Cuts a plain JSON value to a byte budget, largest values first, keeping types."""

    def __init__(self) -> None:
        self.cut: list[str] = []

    def fit(self, value: Any, budget: int, path: str) -> Any:
        if _size(value) <= budget:
            return value
        if isinstance(value, str):
            self.cut.append(path)
            return _cut_text(value, budget)
        if isinstance(value, list):
            return self._entries(value, [0] * len(value), budget, path, is_list=True)
        if isinstance(value, dict):
            fixed = [len(_dumps(k)) + 1 for k in value]
            return self._entries(value, fixed, budget, path, is_list=False)
        self.cut.append(path)
        return _DROP

    def _entries(
        self, value: Any, fixed: list[int], budget: int, path: str, *, is_list: bool
    ) -> Any:
        values = list(value) if is_list else list(value.values())
        keys = [f"{path}[{i}]" for i in range(len(values))] if is_list else list(value)
        sizes = [_size(v) for v in values]

        def share(m: int) -> int:
            room = budget - 2 - max(m - 1, 0) - sum(fixed[:m])
            return _share(sizes[:m], room) if room >= 0 else -1

        def enough(m: int) -> bool:
            return m == 0 or share(m) >= min(_MIN_SHARE, max(sizes[:m]))

        lo, hi = 0, len(values)  # the most entries that each get a useful share
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if enough(mid):
                lo = mid
            else:
                hi = mid - 1
        if budget < 2:
            self.cut.append(path)
            return _DROP
        each = share(lo)
        kept: list[tuple[str, Any]] = []
        for i in range(lo):
            where = keys[i] if is_list else _join(path, keys[i])
            fitted = values[i] if sizes[i] <= each else self.fit(values[i], each, where)
            if fitted is _DROP:
                continue
            kept.append((keys[i], fitted))
        if lo < len(values):
            if is_list:
                self.cut.append(f"{path}[{lo}:]")
            else:
                self.cut += [_join(path, k) for k in keys[lo:]]
        if is_list:
            return [v for _, v in kept]
        return dict(kept)


def _marker(
    given: Any, marks: Mapping[str, list[str]], extra: Mapping[str, Any], limit: int
) -> dict[str, Any]:
    """runlog's ``_runlog`` object: what the payload brought, then every category marked.

    A payload's own ``_runlog`` (runlog's tracing puts ``hook_error`` there) is kept and
    extended; anything but an object is kept as ``user_value``.
    """
    out = dict(given) if isinstance(given, dict) else {}
    if given is not None and not isinstance(given, dict):
        out["user_value"] = given
    for category in _CATEGORIES:
        paths = marks.get(category)
        if not paths:
            continue
        shown = [p if len(p) <= _PATH_CHARS else p[: _PATH_CHARS - 1] + _ELLIPSIS for p in paths]
        if len(shown) > limit:
            shown = [*shown[:limit], f"{_ELLIPSIS} {len(paths) - limit} more"]
        before = out.get(category)
        out[category] = [*before, *shown] if isinstance(before, list) else shown
    out.update(extra)
    return out


def _with_marker(plain: dict[str, Any], given: Any, marks: Mapping[str, list[str]]) -> str:
    if any(marks.values()) or given is not None:
        plain[MARK] = _marker(given, marks, {}, _MARK_PATHS)
    return _dumps(plain)


def _truncate(plain: dict[str, Any], marks: dict[str, list[str]], size: int, cap: int) -> str:
    """Fit ``plain`` into ``cap`` bytes: cut the largest values, never runlog's marker."""
    given = plain.pop(MARK, None)
    if given is not None and _size(given) > cap // 4:
        given = _Fitter().fit(given, cap // 4, MARK)
        given = None if given is _DROP else given
        marks["truncated"].append(MARK)
    extra = {"original_bytes": size}
    overhead = len(f',"{MARK}":')
    for limit in (_MARK_PATHS, 5, 1, 0):
        room = [*marks["truncated"], "?" * 60]  # room for a path the cut will add
        probe = _marker(given, {**marks, "truncated": room}, extra, limit)
        budget = cap - _size(probe) - overhead
        for _ in range(4):
            fitter = _Fitter()
            fitted = fitter.fit(plain, budget, "") if budget >= 2 else _DROP
            body = fitted if isinstance(fitted, dict) else {}
            cut = [*marks["truncated"], *fitter.cut]
            body[MARK] = _marker(given, {**marks, "truncated": cut}, extra, limit)
            text = _dumps(body)
            if len(text) <= cap:
                return text
            budget -= len(text) - cap
    return _dumps({MARK: {"truncated": [""], "original_bytes": size}})  # "": all of it


def encode(payload: Mapping[str, Any] | None, cap: int) -> str:
    """Return the JSON text for ``payload``; never raises for any value inside it.

    The fast path, inline because it runs for every event: a set look-up of the
    top-level keys (cached: a str, not a secret's name), the C encoder, then substring
    searches in C for nested objects (their keys are checked too) and for NUL or lone
    surrogates.  Anything else, or any exception at all, takes the slow path.
    """
    if not payload:
        return _EMPTY
    if type(payload) is dict:
        scrubber = _scrub._active
        if scrubber.plain_keys.issuperset(payload) or all(
            key in scrubber.plain_keys or _plain_key(key, scrubber) for key in payload
        ):
            try:
                text = _concat(_chunks(payload, 0))
            except Exception:  # anything a user's object does: the slow path handles it
                return _slow(payload, cap)
            if (text.find("{", 1) < 0 or _nested_plain(payload, text, scrubber)) and (
                "\\" not in text or not _suspect(text) or not _BAD_TEXT.search(text)
            ):
                return text if len(text) <= cap else _slow(payload, cap, size=len(text))
    return _slow(payload, cap)


def _slow(payload: Mapping[str, Any], cap: int, size: int | None = None) -> str:
    walker = _Walker(_scrub._active)
    try:
        items = list(payload.items())
    except Exception:  # a mapping whose iteration raises: the path "" is the payload
        walker.mark("repr", "")
        return _with_marker({}, None, walker.marks)
    plain = walker._mapping(items, "", 0)
    given = plain.pop(MARK, None)
    text = _with_marker(dict(plain), given, walker.marks)
    if len(text) <= cap:
        return text
    if given is not None:
        plain[MARK] = given
    return _truncate(plain, walker.marks, size or len(text), cap)


def encode_span_ids(
    span_id: int, parent_span_id: int | None, duration_ms: float | None = None
) -> str:
    """``encode()``'s text for a span event of runlog's own making and nothing else.

    ``{"span_id": .., "parent_span_id": ..}``, and for the end of a span that returned
    normally ``"duration_ms"`` and ``"status": "ok"`` after them: ints, ``None`` and a
    finite float, so there is nothing to convert, scrub or cut.  Written directly (a
    few hundred nanoseconds; the C encoder costs microseconds a call on Python 3.11),
    because an empty span logs two of these; a test checks it against ``encode``.
    """
    parent = "null" if parent_span_id is None else int(parent_span_id)
    if duration_ms is None:
        return f'{{"span_id":{int(span_id)},"parent_span_id":{parent}}}'
    return (
        f'{{"span_id":{int(span_id)},"parent_span_id":{parent},'
        f'"duration_ms":{float(duration_ms)!r},"status":"ok"}}'
    )


__all__ = ["MARK", "UNBUILDABLE", "clean_text", "encode", "encode_span_ids"]
