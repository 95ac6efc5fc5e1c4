"""Secrets scrubbed by default (defect 4): payload keys, argv, URLs, record_args; opt-out."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

import runlog
from runlog._payload import MARK, encode
from runlog._scrub import SCRUBBED, Scrubber

from support import python, rows

ARGV = [
    "--password",
    "hunter2",
    "--api-key=abc123",
    "--token",
    "t0k",
    "PASSWD=pw1",
    "--dsn",
    "postgresql://app:s3cret@db-host:5432/app?sslmode=require",
    "https://example.test/cb?access_token=xyz&page=2",
    "--verbose",
    "plain",
]


def started(db: Path) -> dict[str, Any]:
    (row,) = rows(db, "SELECT * FROM events WHERE event_type = 'process.started'")
    return row["payload"]  # type: ignore[no-any-return]


class TestPayloadKeys:
    def test_secret_keys_at_any_depth(self, db_path: Path) -> None:
        """password, api_key, Authorization... are scrubbed wherever they are, and listed."""
        runlog.init(db=str(db_path), sync=True)
        runlog.log_event(
            "x",
            {
                "user": "ann",
                "password": "hunter2",
                "request": {"headers": {"Authorization": "Bearer sk-1", "Accept": "*/*"}},
                "clients": [{"apiKey": "k1"}, {"OPENAI_API_KEY": "k2"}],
                "Cookie": "session=1",
                "db_credentials": {"user": "u"},
                "private_key": "-----BEGIN",
                "access_token": "tok",
                "client_secret": "cs",
                "passwd": "p",
            },
        )
        stored = rows(db_path)[-1]["payload"]
        assert stored["user"] == "ann"
        assert stored["request"]["headers"] == {"Authorization": SCRUBBED, "Accept": "*/*"}
        assert stored["clients"] == [{"apiKey": SCRUBBED}, {"OPENAI_API_KEY": SCRUBBED}]
        for key in ("password", "Cookie", "db_credentials", "private_key", "access_token"):
            assert stored[key] == SCRUBBED
        assert stored[MARK]["scrubbed"] == [
            "password",
            "request.headers.Authorization",
            "clients[0].apiKey",
            "clients[1].OPENAI_API_KEY",
            "Cookie",
            "db_credentials",
            "private_key",
            "access_token",
            "client_secret",
            "passwd",
        ]

    def test_runlogs_own_token_counts_are_not_secrets(self) -> None:
        """input_tokens, token_source, max_tokens, tokenizer are kept: they are not tokens."""
        payload = {"input_tokens": 3, "output_tokens": 4, "token_source": "usage"}
        payload |= {"max_tokens": 9, "tokenizer": "o200k", "time_to_first_token_ms": 1.0}
        assert encode(payload, 10**6) == json.dumps(payload, separators=(",", ":"))

    def test_objects_keys_are_scrubbed_too(self, db_path: Path) -> None:
        """A dataclass field named password is scrubbed like a dict key."""
        import dataclasses

        @dataclasses.dataclass
        class Login:
            user: str
            password: str

        runlog.init(db=str(db_path), sync=True)
        runlog.log_event("x", {"login": Login("ann", "hunter2")})
        stored = rows(db_path)[-1]["payload"]
        assert stored["login"] == {"user": "ann", "password": SCRUBBED}

    def test_none_and_booleans_are_kept(self) -> None:
        """A flag or a null under a secret's name reveals nothing and stays."""
        assert encode({"api_key": None, "password_set": True}, 10**6) == (
            '{"api_key":null,"password_set":true}'
        )


class TestProcessStarted:
    def test_argv_and_urls(self, db_path: Path) -> None:
        """Flag values, KEY=value and URL passwords in argv are scrubbed; the rest stays."""
        url = "postgresql://app:s3cret@h/app"
        code = f"import sys, runlog; sys.argv[1:] = {ARGV!r}; runlog.init(db_url={url!r})"
        python(code, db_path)
        payload = started(db_path)
        assert payload["argv"][1:] == [
            "--password",
            SCRUBBED,
            f"--api-key={SCRUBBED}",
            "--token",
            SCRUBBED,
            f"PASSWD={SCRUBBED}",
            "--dsn",
            f"postgresql://app:{SCRUBBED}@db-host:5432/app?sslmode=require",
            f"https://example.test/cb?access_token={SCRUBBED}&page=2",
            "--verbose",
            "plain",
        ]
        assert payload["db_url"] == f"postgresql://app:{SCRUBBED}@h/app"
        text = Path(db_path).read_bytes()
        for secret in (b"hunter2", b"abc123", b"t0k", b"pw1", b"s3cret", b"xyz"):
            assert secret not in text

    @pytest.mark.parametrize("how", ["init", "env"])
    def test_opt_out_keeps_everything(self, how: str, db_path: Path) -> None:
        """init(scrub=False) or RUNLOG_SCRUB=0 stores argv and payloads as given."""
        scrub = "scrub=False" if how == "init" else ""
        code = (
            f"import sys, runlog; sys.argv[1:] = {ARGV!r}; runlog.init({scrub});"
            " runlog.log_event('x', {'password': 'hunter2'})"
        )
        python(code, db_path, **({"RUNLOG_SCRUB": "0"} if how == "env" else {}))
        assert started(db_path)["argv"][1:] == ARGV
        assert rows(db_path)[1]["payload"] == {"password": "hunter2"}

    @pytest.mark.parametrize("how", ["init", "env"])
    def test_extra_patterns(self, how: str, db_path: Path) -> None:
        """init(scrub=[...]) or RUNLOG_SCRUB=a,b adds key patterns to the defaults."""
        scrub = "scrub=['ssn', '^pin$']" if how == "init" else ""
        code = (
            f"import runlog; runlog.init({scrub});"
            " runlog.log_event('x', {'ssn': '1', 'pin': '2', 'spinner': 3, 'password': 'p'})"
        )
        python(code, db_path, **({"RUNLOG_SCRUB": "ssn, ^pin$"} if how == "env" else {}))
        stored = rows(db_path)[1]["payload"]
        assert stored["ssn"] == stored["pin"] == stored["password"] == SCRUBBED
        assert stored["spinner"] == 3

    def test_bad_settings_raise_at_init(self) -> None:
        """A scrub setting that is not a bool or a list of regexes is a clear error."""
        with pytest.raises(TypeError, match="scrub"):
            runlog.init(scrub="password")  # type: ignore[arg-type]
        with pytest.raises(runlog.ConfigurationError, match="not a regex"):
            runlog.init(scrub=["(unclosed"])


class TestRecordArgs:
    def test_record_args_goes_through_the_scrubber(self, db_path: Path) -> None:
        """Secret-named arguments and URL passwords in arguments are scrubbed."""
        runlog.init(db=str(db_path), sync=True)

        @runlog.traced_event("job.ran", record_args=True)
        def connect(dsn: str, password: str, api_key: str, headers: dict[str, str]) -> None:
            del dsn, password, api_key, headers

        connect("mysql://root:rootpw@h/db", "hunter2", "sk-1", {"Authorization": "Bearer x"})
        stored = rows(db_path)[-1]["payload"]
        assert stored["dsn"] == f"mysql://root:{SCRUBBED}@h/db"
        assert stored["password"] == stored["api_key"] == SCRUBBED
        assert stored["headers"] == {"Authorization": SCRUBBED}
        assert sorted(stored[MARK]["scrubbed"]) == ["api_key", "headers.Authorization", "password"]


class TestScrubber:
    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            (["-p", "x"], ["-p", "x"]),  # not a secret's name
            (["--password"], ["--password"]),  # nothing follows
            (["--password="], ["--password="]),
            (["--secret-file", "/etc/s"], ["--secret-file", SCRUBBED]),
            (["user:pw@host"], ["user:pw@host"]),  # not a URL
            (["redis://:pw@h:6379/0"], [f"redis://:{SCRUBBED}@h:6379/0"]),
        ],
    )
    def test_argv_rules(self, argv: list[str], expected: list[str]) -> None:
        """The argv rules, one case each."""
        assert Scrubber().argv(argv) == expected

    def test_disabled_scrubber_changes_nothing(self) -> None:
        """A disabled scrubber finds no secret anywhere."""
        off = Scrubber(enabled=False)
        assert not off.secret_key("password") and off.argv(ARGV) == ARGV


class TestFolders:
    def test_every_folder_runlog_creates_is_owner_only(self, tmp_path: Path) -> None:
        """Parents made for the database are 0700, like the last one; the file is 0600."""
        db = tmp_path / "a" / "b" / "c" / "events.db"
        old = os.umask(0o022)
        try:
            runlog.init(db=str(db), sync=True)
        finally:
            os.umask(old)
        for folder in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        assert stat.S_IMODE(db.stat().st_mode) == 0o600


class TestCapture:
    def test_capture_restores_the_applications_scrubbing(self, db_path: Path) -> None:
        """runlog.testing.capture() scrubs by default and gives the app's setting back."""
        from runlog.testing import capture

        runlog.init(db=str(db_path), sync=True, scrub=False)
        with capture() as events:
            runlog.log_event("inside", {"password": "p"})
        runlog.log_event("after", {"password": "p"})
        assert events.of_type("inside")[0].payload["password"] == SCRUBBED
        assert rows(db_path)[-1]["payload"] == {"password": "p"}
