"""``runlog tree`` in a few milliseconds: SQLite's C module and text, no rich, no store.

The full command costs about 140 ms before it prints anything: argparse, rich, the
store with its dataclasses and logging.  A tree needs none of that, so for the common
case (an SQLite file, options written plainly) :func:`tree` answers with SQLite's C
module and ``os`` alone (SQLite decodes the payload fields it reads: no ``json``).
Its output is rich's, byte for byte: the same summaries as ``_runs.load_tree`` (the
same queries), the same labels (``_tree`` builds its rich text from
:func:`label_parts`), rich's word wrapping to the same width, and on a terminal the
same escape sequences.

Whenever it cannot be sure of that it returns None before printing anything, and
``main`` runs the full command: ``--json``, a URL, a usage or database error, a text
that would need escaping or is wider than one cell a character.  On a terminal it
writes rich's colours itself (the few standard ones a label uses, ``NO_COLOR`` and a
dumb terminal respected), so that the terminal is as quick as a pipe.

Nothing here is imported at module level but ``os`` and ``sys``: the command's import
cost is the point (``tests/test_import.py`` checks what it leaves out).
"""

from __future__ import annotations

import os
import sys

from .._spend import Cost, usd

TYPE_CHECKING = False  # not typing's: importing typing costs more than this whole path
if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any, Protocol

    Row = tuple[Any, ...]

    class CostLike(Protocol):
        """What a label reads of a cost (``_spend.Cost`` or :class:`Cost`)."""

        usd: float
        calls: int
        unpriced: int
        estimated: int

        @property
        def priced(self) -> int: ...

    class RunLike(Protocol):
        """What a label reads of a run (``_runs.RunSummary`` or :class:`Run`)."""

        run_id: int
        role: Any
        instance_id: Any
        pid: Any
        status: str
        exit: dict[str, Any] | None
        duration_ms: float | None
        events: int
        spans: int
        span_failures: int
        llm_calls: int
        llm_failures: int
        input_tokens: int
        output_tokens: int
        notes: list[str]

        @property
        def exit_failed(self) -> bool: ...
        @property
        def cost(self) -> CostLike: ...
        @property
        def subtree_cost(self) -> CostLike: ...
        @property
        def children(self) -> Sequence[RunLike]: ...


DEFAULT_DB = "runlog.db"
"""``_config.DEFAULT_DB`` (importing ``_config`` costs dataclasses; a test keeps them equal)."""
PIPE_WIDTH = 200
"""The width rich is given when stdout is not a terminal (``_output`` uses this one)."""
_MIN_WIDTH = 20
"""Narrower than this for a label (a deep tree, a tiny COLUMNS): leave it to rich."""
_SEP = " · "
_LLM_TYPES = ("llm_call.completed", "llm_call.failed")
_COMPLETED = "llm_call.completed"
_REPRICED = "llm_call.repriced"
_COST_KEYS = ("cost_usd", "cost_source", "cost_estimated")
_COLUMNS = "id, timestamp, run_id, parent_run_id, event_type"
_CHUNK = 500
_TOKENS = ("input_tokens", "output_tokens")
_STATUS_STYLE = {"running": "green", "unknown": "yellow"}
_NARROW = frozenset("≥…")
"""Outside rich's single-cell ranges, and one cell wide in its table."""
_URI_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-~/")


class Fallback(Exception):
    """This path cannot answer exactly as the full command would: let it answer."""


# -- the small formats the full command shares (``_output``, ``_tree``, ``_stats``) ------
def duration(ms: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4 m 05 s``, ``2 h 03 m``: short, in the unit that reads best."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.2g} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {sec:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} m"


def exit_failed(exit_payload: Mapping[str, Any]) -> bool:
    """A ``process.exited`` payload that says exception, signal or a non-zero code."""
    if exit_payload.get("reason") in ("exception", "signal"):
        return True
    return exit_payload.get("exit_code") not in (0, None)


def exit_words(exit: Mapping[str, object]) -> str:
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


def cost_text(usd_: float | None, unpriced: int, estimated: int) -> str:
    """``$0.0123``, with ``(2 unpriced)`` / ``(1 estimated)`` when some calls are."""
    notes = [f"{unpriced} unpriced"] * bool(unpriced) + [f"{estimated} estimated"] * bool(estimated)
    return usd(usd_) + (f" ({', '.join(notes)})" if notes else "")


def _cost(cost: CostLike) -> str:
    return cost_text(cost.usd if cost.priced else None, cost.unpriced, cost.estimated)


def status_parts(run: RunLike) -> tuple[str, str]:
    """``exited normal · 1.2 s``, ``lost · ≥ 4.1 s`` (to its last event), and its style."""
    style = "red" if run.exit_failed else _STATUS_STYLE.get(run.status, "")
    words = run.status
    if run.exit is not None:
        words += " " + exit_words(run.exit)
    if run.duration_ms is not None:
        at_least = "≥ " if run.status in ("lost", "unknown") else ""
        words += f"{_SEP}{at_least}{duration(run.duration_ms)}"
    return words, style


def label_parts(run: RunLike) -> list[tuple[str, str]]:
    """One run on one line, as (text, rich style) pieces: who, its status and duration,
    and what it did.  ``_tree.label`` assembles them into rich text; this module joins them."""
    parts = [(f"#{run.run_id} ", "bold"), (run.role or "?", "bold cyan")]
    if run.instance_id:
        parts.append((f" {run.instance_id}", "cyan"))
    if run.pid is not None:
        parts.append((f"{_SEP}pid {run.pid}", ""))
    parts += [(_SEP, ""), status_parts(run)]
    parts.append((f"{_SEP}{run.events:,} event{'s' * (run.events != 1)}", ""))
    if run.spans or run.span_failures:
        parts.append((f"{_SEP}{run.spans:,} span{'s' * (run.spans != 1)}", ""))
        _failures(parts, run.span_failures)
    if run.llm_calls:
        parts.append((f"{_SEP}{run.llm_calls:,} LLM call{'s' * (run.llm_calls != 1)}", ""))
        _failures(parts, run.llm_failures)
        if run.llm_calls > run.llm_failures:
            parts.append((f", {run.input_tokens:,} in / {run.output_tokens:,} out tokens", ""))
            parts.append((f", {_cost(run.cost)}", ""))
    if run.children and run.subtree_cost.calls:
        parts.append((f"{_SEP}subtree {_cost(run.subtree_cost)}", "bold"))
    for note in run.notes:
        parts.append((f"  ({note})", "dim"))
    return parts


def _failures(parts: list[tuple[str, str]], n: int) -> None:
    if n:
        parts.append((f" ({n} failed)", "bold red"))


# -- the runs, as ``_runs.load_tree`` reads them ---------------------------------------
class Run:
    """One run as ``_runs.RunSummary`` has it, for the label alone."""

    def __init__(self, run_id: int, parent_run_id: int | None) -> None:
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self.role: Any = None
        self.instance_id: Any = None
        self.pid: Any = None
        self.host: Any = None
        self.status = "unknown"
        self.exit: dict[str, Any] | None = None
        self.duration_ms: float | None = None
        self.events = self.spans = self.span_failures = 0
        self.llm_calls = self.llm_failures = self.input_tokens = self.output_tokens = 0
        self.cost = Cost()
        self.subtree_cost = Cost()
        self.notes: list[str] = []
        self.children: list[Run] = []

    @property
    def exit_failed(self) -> bool:
        """Exited by an exception, a signal or with a non-zero code; or lost."""
        if self.status == "lost":
            return True
        return self.exit is not None and exit_failed(self.exit)


class _Db:
    """The read-only connection and the queries of ``Reader``, SQLite's SQL written out."""

    def __init__(self, path: str) -> None:
        driver = _driver()
        self.error: type[Exception] = driver.Error
        if not os.path.isfile(path):
            raise Fallback  # the full command explains
        quoted = path if _URI_SAFE.issuperset(path) else _quote(path)
        self.conn: sqlite3.Connection = driver.connect(
            f"file:{quoted}?mode=ro",
            uri=True,
            timeout=1.5,  # open_store's: min(2.0, lock_timeout / 20)
            isolation_level=None,
            check_same_thread=False,
        )

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    def runs_in(self, run_ids: Sequence[int] | None) -> Iterable[tuple[str, list[int]]]:
        if run_ids is None:
            yield "1=1", []
            return
        ids = sorted(run_ids)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            yield f"run_id IN ({', '.join('?' * len(chunk))})", chunk


def _driver() -> Any:
    """``sqlite3``'s C module, which ``sqlite3`` re-exports: the connection and its errors,
    without ``sqlite3.dbapi2``'s adapters for ``datetime`` (never bound here, never
    converted: no ``detect_types``), whose import costs twice the module's own."""
    if "sqlite3" in sys.modules:
        return sys.modules["sqlite3"]
    try:
        import _sqlite3
    except ImportError:
        raise Fallback from None  # a Python without SQLite: the full command says so
    if not (hasattr(_sqlite3, "connect") and hasattr(_sqlite3, "Error")):
        import sqlite3  # a Python whose C module is arranged otherwise

        return sqlite3
    return _sqlite3


def _open(path: str) -> _Db:
    """The database at ``path``, read-only; Fallback if SQLite cannot open it."""
    try:
        return _Db(path)
    except Exception as exc:
        if isinstance(exc, _driver().Error):
            raise Fallback from None
        raise


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path)


_STARTED_KEYS = ("role", "instance_id", "pid", "host")
_RUN_KEYS = (*_STARTED_KEYS, "reason", "signal", "error_type", "error", "exit_code")
"""What the labels read of ``process.started`` and ``process.exited`` payloads."""
_COST_READ = ("cost_usd", "cost_source", "cost_estimated", "call_id", *_TOKENS)
"""What ``_spend.total`` reads of ``llm_call.completed`` and ``llm_call.repriced``, and the
tokens ``Reader.sums`` adds up."""
_VALUES = {"null": None, "true": True, "false": False}


def _fields(keys: Sequence[str]) -> str:
    """SQL for the columns :func:`_payload` reads back: SQLite decodes the JSON, so that
    this path does not import ``json`` (about as much as ``sqlite3`` costs)."""
    return ", ".join(
        ["json_type(payload)"]
        + [f"json_type(payload, '$.{k}'), json_extract(payload, '$.{k}')" for k in keys]
    )


def _payload(row: Row, start: int, keys: Sequence[str]) -> dict[str, Any]:
    """The fields ``keys`` of the payload as ``json.loads`` gives them (absent: left out)."""
    kind = row[start]
    if kind is None:
        return {}  # a NULL payload, as Event.from_row reads it
    if kind != "object":
        raise Fallback  # Event.from_row keeps a list or a number; the full path knows
    out: dict[str, Any] = {}
    for i, key in enumerate(keys):
        kind, value = row[start + 1 + 2 * i], row[start + 2 + 2 * i]
        if kind is None:
            continue
        if kind in _VALUES:
            out[key] = _VALUES[kind]
        elif kind in ("text", "integer", "real"):
            out[key] = value
        else:
            raise Fallback  # an object or an array: a rendering this path does not copy
    return out


def _load(db: _Db, root: int | None, last: int | None) -> list[Run]:
    """``_runs.load_tree(reader, root, last)`` with the labels' fields only."""
    starts: dict[int, Row] = {}
    exits: dict[int, Row] = {}
    for row in db.query(
        f"SELECT {_COLUMNS}, {_fields(_RUN_KEYS)} FROM events"
        " WHERE event_type IN (?, ?) ORDER BY id",
        ("process.started", "process.exited"),
    ):
        if row[4] == "process.started":
            starts.setdefault(int(row[2]), row)
        else:
            exits[int(row[2])] = row
    parents: dict[int, int | None] = {}
    for rid in sorted(int(r[0]) for r in db.query("SELECT DISTINCT run_id FROM events")):
        if rid in starts:
            parents[rid] = starts[rid][3]
        else:
            first = db.query(
                "SELECT parent_run_id FROM events WHERE run_id = ? ORDER BY id LIMIT 1", (rid,)
            )
            parents[rid] = first[0][0] if first else None
    kids: dict[int, list[int]] = {}
    for rid in sorted(parents):
        up = parents[rid]
        if up is not None:
            kids.setdefault(up, []).append(rid)
    if root is not None and root not in parents:
        raise Fallback  # "no run N": the full command says so
    roots = [rid for rid in sorted(parents) if parents[rid] not in parents]
    tops = [root] if root is not None else roots[-last:] if last else roots + sorted(parents)
    walk = _walk(tops, kids)
    shown = None if len(walk) == len(parents) else [rid for rid, _ in walk]
    counts = _tally(db, shown, "1=1", [])
    judged = sorted({t for types in counts.values() for t in types if _judged_by_payload(t)})
    errors: dict[int, dict[str, int]] = {}
    if judged:
        path = "payload, '$.status'"
        status = (
            f"CASE json_type({path}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'"
            f" ELSE CAST(json_extract({path}) AS TEXT) END"
        )
        where = f"event_type IN ({', '.join('?' * len(judged))}) AND {status} = ?"
        errors = _tally(db, shown, where, [*judged, "error"])
    llm: dict[int, list[Row]] = {}
    found: list[Row] = []
    for runs, params in db.runs_in(shown):
        found += db.query(
            f"SELECT {_COLUMNS}, {_fields(_COST_READ)} FROM events"
            f" WHERE event_type IN (?, ?) AND {runs} ORDER BY id",
            [_COMPLETED, _REPRICED, *params],
        )
    for row in sorted(found, key=lambda r: int(r[0])) if shown else found:
        llm.setdefault(int(row[2]), []).append(row)
    nodes: dict[int, Run] = {}
    for rid, _ in walk:
        nodes[rid] = _summary(db, rid, parents[rid], starts, exits, counts, errors, llm)
    for rid, up in walk:
        parent = parents[rid]
        if up is not None:
            nodes[up].children.append(nodes[rid])
        elif parent is not None and parent not in parents:
            nodes[rid].notes.append(f"parent run {parent} is not in this database")
    tops_drawn = [nodes[rid] for rid, up in walk if up is None]
    for top in tops_drawn:
        _sum_subtree(top)
    return tops_drawn


def _tally(
    db: _Db, shown: Sequence[int] | None, where: str, params: list[Any]
) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    for runs, run_params in db.runs_in(shown):
        for rid, event_type, n in db.query(
            f"SELECT run_id, event_type, COUNT(*) FROM events WHERE {where} AND {runs}"
            " GROUP BY run_id, event_type",
            [*params, *run_params],
        ):
            out.setdefault(int(rid), {})[str(event_type)] = int(n)
    return out


def _judged_by_payload(event_type: str) -> bool:
    if event_type in _LLM_TYPES or event_type.startswith("process."):
        return False
    return not event_type.endswith((".started", ".completed", ".failed"))


def _walk(tops: list[int], kids: dict[int, list[int]]) -> list[tuple[int, int | None]]:
    seen: set[int] = set()
    out: list[tuple[int, int | None]] = []
    stack: list[tuple[int, int | None]] = [(top, None) for top in reversed(tops)]
    while stack:
        rid, up = stack.pop()
        if rid in seen:
            continue
        seen.add(rid)
        out.append((rid, up))
        stack.extend((kid, rid) for kid in reversed(kids.get(rid, [])))
    return out


def _summary(
    db: _Db,
    rid: int,
    parent: int | None,
    starts: dict[int, Row],
    exits: dict[int, Row],
    counts: dict[int, dict[str, int]],
    errors: dict[int, dict[str, int]],
    llm: dict[int, list[Row]],
) -> Run:
    run = Run(rid, parent)
    started = starts.get(rid)
    identity = _payload(started, 5, _RUN_KEYS) if started else {}
    run.role = identity.get("role")
    if not isinstance(run.role, (str, type(None))):
        raise Fallback  # rich refuses to append it: the full command's error
    run.instance_id = identity.get("instance_id")
    run.pid = identity.get("pid")
    run.host = identity.get("host")
    exited = exits.get(rid)
    if exited is not None:
        run.status = "exited"
        run.exit = _payload(exited, 5, _RUN_KEYS)
    types = counts.get(rid, {})
    failed = errors.get(rid, {})
    run.events = sum(types.values())
    run.spans = sum(
        n for t, n in types.items() if t.endswith(".started") and t != "process.started"
    )
    run.span_failures = sum(
        n if t.endswith(".failed") else failed.get(t, 0)
        for t, n in types.items()
        if t not in _LLM_TYPES and not t.startswith("process.")
    )
    run.llm_calls = sum(types.get(t, 0) for t in _LLM_TYPES)
    run.llm_failures = types.get("llm_call.failed", 0)
    _add_costs(run, llm.get(rid, []))
    if started is None:
        run.notes.append("no process.started: written with an explicit run_id")
    else:
        _set_end(db, run, int(started[1]), exited)
    return run


def _add_costs(run: Run, rows: list[Row]) -> None:
    """The tokens of the completed calls (``Reader.sums``: the JSON numbers, which SQLite
    adds exactly while they are integers) and ``_spend.total`` of them: each at the cost
    its newest reprice gives it."""
    completed: list[tuple[int, dict[str, Any]]] = []
    newest: dict[int, tuple[int, dict[str, Any]]] = {}
    sums = [0, 0]
    for row in rows:
        payload = _payload(row, 5, _COST_READ)
        if row[4] == _COMPLETED:
            completed.append((int(row[0]), payload))
            for i, key in enumerate(_TOKENS):
                value = payload.get(key)
                if isinstance(value, float):
                    raise Fallback  # SQLite's float summation: not copied here
                if isinstance(value, int) and not isinstance(value, bool):
                    sums[i] += value
        else:
            call_id = payload.get("call_id")
            if isinstance(call_id, int) and (call_id not in newest or newest[call_id][0] < row[0]):
                newest[call_id] = (int(row[0]), payload)
    run.input_tokens, run.output_tokens = (int(float(n)) for n in sums)
    cost = run.cost
    for event_id, payload in completed:
        repriced = newest.get(event_id)
        if repriced is not None:
            payload = {k: v for k, v in payload.items() if k not in _COST_KEYS}
            payload.update({k: repriced[1][k] for k in _COST_KEYS if k in repriced[1]})
        cost.add(payload)


def _set_end(db: _Db, run: Run, started: int, exited: Row | None) -> None:
    if exited is not None:
        end = int(exited[1])
    else:
        from ._liveness import liveness  # socket: only for a run without process.exited

        run.status, note = liveness(run.host, run.pid, started)
        run.notes += [note] if note else []
        if run.status == "running":
            import time

            end = time.time_ns()
        else:
            (end,) = db.query(
                "SELECT timestamp FROM events WHERE run_id = ? ORDER BY id DESC LIMIT 1",
                (run.run_id,),
            )[0]
    run.duration_ms = round((end - started) / 1e6, 3)


def _sum_subtree(run: Run) -> None:
    order: list[Run] = []
    stack = [run]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    for node in reversed(order):
        node.subtree_cost = Cost()
        node.subtree_cost += node.cost
        for child in node.children:
            node.subtree_cost += child.subtree_cost


# -- rich's plain rendering of the tree ----------------------------------------------
def _plain(text: object) -> str:
    """``text`` if rich would print it one cell a character and ``escape`` leave it alone."""
    # Every character escape() changes is unprintable.
    if not isinstance(text, str) or not text.isprintable():
        raise Fallback
    for char in text:
        code = ord(char)
        if not (
            0x20 <= code <= 0x7E
            or 0xA0 <= code <= 0xAC
            or 0xAE <= code <= 0x2FF
            or 0x370 <= code <= 0x482
            or 0x2500 <= code <= 0x25FC
            or char in _NARROW
        ):
            raise Fallback
    return text


def wrap(text: str, width: int) -> list[str]:
    """``text`` word-wrapped (long words folded) as rich's ``Text.wrap`` does, for text
    of single-cell characters whose only whitespace is the space."""
    return [text[start:end] for start, end in _wrap(text, width)]


def _wrap(text: str, width: int) -> list[tuple[int, int]]:
    """Where :func:`wrap`'s lines start and end in ``text`` (rich's ``divide_line``, then
    ``rstrip_end`` and ``truncate`` of each line)."""
    breaks: list[int] = []
    offset = 0
    position = 0
    size = len(text)
    while position < size:
        start = position
        while position < size and text[position] == " ":
            position += 1
        while position < size and text[position] != " ":
            position += 1
        while position < size and text[position] == " ":
            position += 1
        word = text[start:position]
        length = len(word.rstrip())
        if width - offset >= length:
            offset += len(word)
        elif length > width:
            pieces = [word[i : i + width] for i in range(0, len(word), width)]
            for i, piece in enumerate(pieces):
                if start:
                    breaks.append(start)
                if i == len(pieces) - 1:
                    offset = len(piece)
                else:
                    start += len(piece)
        elif offset and start:
            breaks.append(start)
            offset = len(word)
    out = []
    for start, end in zip([0, *breaks], [*breaks, size], strict=True):
        if end - start > width:  # Text.rstrip_end: trailing spaces beyond the width go
            spaces = (end - start) - len(text[start:end].rstrip(" "))
            end -= min(spaces, end - start - width)
        out.append((start, min(end, start + width)))
    return out


_CODES = {
    "bold": "1",
    "dim": "2",
    "bold cyan": "1;36",
    "cyan": "36",
    "red": "31",
    "bold red": "1;31",
    "green": "32",
    "yellow": "33",
}
"""rich's SGR codes for the styles of a label (standard colours: the same in every
colour system rich detects)."""
_NO_COLOR = {style: "1" if style.startswith("bold") else "" for style in _CODES} | {"dim": "2"}
"""The same under ``NO_COLOR``: rich keeps bold and dim."""


def _lines(
    parts: Sequence[tuple[str, str]], width: int, guides: list[str]
) -> Iterable[tuple[list[str], list[tuple[str, str]]]]:
    """The lines of one label wrapped to ``width``: their guides and (text, style) pieces."""
    text = "".join(_plain(part) for part, _ in parts)
    below = [*guides[:-1], _CONTINUED[guides[-1]]] if guides else []
    for i, (start, end) in enumerate(_wrap(text, width)):
        pieces = []
        at = 0
        for part, style in parts:
            low, high = max(at, start), min(at + len(part), end)
            if low < high:
                pieces.append((text[low:high], style))
            at += len(part)
        yield below if i else guides, pieces


_CONTINUED = {"├── ": "│   ", "└── ": "    "}


def render(url: str, roots: Sequence[RunLike], width: int, codes: Mapping[str, str] | None) -> str:
    """The tree as rich prints it: guides, wrapped labels, and ``codes`` for the styles
    (None: no terminal, no styles)."""
    lines = list(_lines([(url, "dim")], width, []))
    stack: list[tuple[list[str], Sequence[RunLike], int]] = [([], roots, 0)]
    while stack:
        above, siblings, index = stack.pop()
        if index >= len(siblings):
            continue
        run = siblings[index]
        last = index == len(siblings) - 1
        stack.append((above, siblings, index + 1))
        available = width - 4 * len(above) - 4
        if available < _MIN_WIDTH:
            raise Fallback
        lines += _lines(label_parts(run), available, [*above, "└── " if last else "├── "])
        if run.children:
            stack.append(([*above, "    " if last else "│   "], run.children, 0))
    out = []
    for guides, pieces in lines:
        if codes is None:
            out.append("".join(guides) + "".join(text for text, _ in pieces))
            continue
        segments = [(guide, "dim") for guide in guides] + pieces
        out.append("".join(_styled(text, codes.get(style, "")) for text, style in segments))
    return "\n".join(out) + "\n"


def _styled(text: str, code: str) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if code else text


# -- the command line ------------------------------------------------------------------
def _number(text: str, low: int) -> int:
    if not (text.isascii() and text.isdigit()):
        raise Fallback  # argparse's int() takes more; and the error is argparse's
    value = int(text)
    if not low <= value <= 2**63 - 1:
        raise Fallback
    return value


def _parse(argv: Sequence[str]) -> tuple[str | None, int | None, int | None]:
    """``--db``, RUN_ID and ``-n`` of ``tree`` options written plainly; else Fallback."""
    db: str | None = None
    root: int | None = None
    last: int | None = None
    seen: set[str] = set()
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name in ("--db", "-n", "--last"):
            key = "-n" if name == "--last" else name
            if key in seen:
                raise Fallback
            seen.add(key)
            if not eq:
                if not args or args[0].startswith("-"):
                    raise Fallback
                value = args.pop(0)
            if key == "--db":
                db = value
            else:
                last = _number(value, 1)
        elif arg.startswith("-") or root is not None:
            raise Fallback  # --json, --help, -n5, abbreviations, a second positional...
        else:
            root = _number(arg, 1)
    return db, root, last


def _terminal() -> bool:
    """Whether rich's ``Console.is_terminal`` would say stdout is a terminal."""
    env = os.environ
    compatible = env.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "1"
    if "FORCE_COLOR" in env:
        return env["FORCE_COLOR"] != ""
    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError, OSError):
        raise Fallback from None


def _output() -> tuple[int, Mapping[str, str] | None]:
    """The width rich would wrap to and the codes of its styles (None: plain text)."""
    env = os.environ
    encoding = getattr(sys.stdout, "encoding", None)
    if not isinstance(encoding, str) or not encoding.lower().startswith("utf"):
        raise Fallback  # rich's ASCII guides
    terminal = _terminal()
    dumb = terminal and env.get("TERM", "").lower() in ("dumb", "unknown")
    codes = None
    if terminal and not dumb:
        codes = _NO_COLOR if env.get("NO_COLOR", "") != "" else _CODES
    columns, rows = env.get("COLUMNS"), env.get("LINES")
    if columns is None and not terminal:
        return PIPE_WIDTH, codes  # as Output sets it
    if dumb and not (columns and columns.isdigit() and rows and rows.isdigit()):
        return 80, codes  # rich's Console.size for a dumb terminal
    if columns is not None and columns.isdigit():
        return int(columns), codes
    width = 0
    for fd in (0, 1, 2):  # as rich's Console.size
        try:
            width = os.get_terminal_size(fd)[0]
        except (AttributeError, ValueError, OSError):
            continue
        break
    return width or 80, codes


def _path(db: str) -> str:
    """``SQLiteStore``'s absolute path of a plain file name (a URL: Fallback)."""
    if "://" in db or db.startswith("sqlite:"):
        raise Fallback
    if db.startswith("~") or "//" in db or "/." in db or db.startswith(".") or db.endswith("/"):
        from pathlib import Path  # its normalisation, for the names that need it

        return str(Path(db).expanduser().absolute())
    return db if db.startswith("/") else os.path.join(os.getcwd(), db)


def tree(argv: Sequence[str]) -> int | None:
    """``runlog tree ARGV`` as the full command prints it, or None: then ``main`` runs it."""
    try:
        db, root, last = _parse(argv)
        width, codes = _output()
        db = db or os.environ.get("RUNLOG_DB") or DEFAULT_DB
        _plain(db)  # plain_text()'s check, and the header is printed as is
        path = _path(db)
        store = _open(path)
        try:
            found = store.query(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'events'"
            )
            roots = _load(store, root, last) if found else []
        except store.error:
            raise Fallback from None
        finally:
            store.conn.close()
        if not roots:
            raise Fallback  # not a runlog database, or "no runs": the full command says so
        text = render(f"sqlite:///{path}", roots, width, codes)
    except (Fallback, OSError, ValueError):
        return None
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # as rich's Console.on_broken_pipe: quietly, status 1
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0


__all__ = [
    "DEFAULT_DB",
    "Cost",
    "Run",
    "cost_text",
    "duration",
    "exit_failed",
    "exit_words",
    "label_parts",
    "render",
    "status_parts",
    "tree",
    "usd",
    "wrap",
]
