"""Secrets kept out of the table: values under secret-looking keys, argv flags, URL passwords.

Scrubbing is on by default, the way Logfire scrubs: a value whose key matches one of
:data:`DEFAULT_PATTERNS` (case-insensitive, at any depth of a payload) is replaced by
:data:`SCRUBBED` and its path listed under ``_runlog.scrubbed``.  ``process.started``
also gets its ``argv`` scrubbed (the value after ``--password``, ``--api-key=...``)
and passwords inside URLs (``postgresql://user:[scrubbed]@host``) in argv and identity values;
``record_args`` values get the URL rule too.

``init(scrub=...)`` or ``RUNLOG_SCRUB`` changes it: ``False`` / ``0`` turns scrubbing
off, a list of regular expressions (comma-separated in the variable) adds patterns.

The encoder asks :meth:`Scrubber.secret_key` once per distinct key string: the answer
is cached, so the cost on the hot path is a set lookup per top-level key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._errors import ConfigurationError

SCRUBBED = "[scrubbed]"
DEFAULT_PATTERNS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "api[-_. ]?key",
    "apikey",
    "authorization",
    "cookie",
    "credential",
    "private[-_. ]?key",
    # "token" but not "tokens", "token_source", "tokenizer": the counts runlog logs itself.
    "token(?![a-z_])",
)
ENV_VAR = "RUNLOG_SCRUB"
_OFF = {"0", "false", "no", "off"}
_ON = {"", "1", "true", "yes", "on"}
_CACHE_LIMIT = 10_000
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^/?#@\s:]*:)([^/?#@\s]+)(@)", re.IGNORECASE)
_FLAG = re.compile(r"[A-Za-z0-9_.-]+")  # a flag's or a variable's name, not a URL
_QUERY = re.compile(r"([?&])([^=&#\s]+)=([^&#\s]*)")


class Scrubber:
    """One process's scrubbing rules; ``enabled=False`` leaves everything as it is."""

    def __init__(self, extra: Iterable[str] = (), *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.extra = tuple(extra)
        self.patterns = (*DEFAULT_PATTERNS, *self.extra)
        # ASCII case folding only: a Kelvin sign or a long s is not a k or an s.
        self._key = re.compile("|".join(f"(?:{p})" for p in self.patterns), re.I | re.A)
        self._secret: dict[str, bool] = {}
        self.plain_keys: set[str] = set()
        """The encoder's cache: str keys it may write as they are under these rules."""

    def secret_key(self, key: str) -> bool:
        """Whether values under ``key`` are secret (cached per key string)."""
        found = self._secret.get(key)
        if found is None:
            found = self.enabled and self._key.search(key) is not None
            if len(self._secret) >= _CACHE_LIMIT:  # keys made of data: keep memory bounded
                self._secret.clear()
            self._secret[key] = found
        return found

    def url(self, text: str) -> str:
        """``text`` with URL passwords and secret query parameters replaced."""
        if not self.enabled or "://" not in text:
            return text
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + SCRUBBED + m.group(3), text)
        return _QUERY.sub(self._query_value, text)

    def _query_value(self, match: re.Match[str]) -> str:
        sep, name, value = match.groups()
        return f"{sep}{name}={SCRUBBED}" if self.secret_key(name) and value else match.group(0)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` with the values of secret flags and URL passwords replaced.

        ``--password hunter2``, ``--password=hunter2``, ``-api-key x`` and
        ``PASSWORD=hunter2`` all lose their value; the flag names stay.
        """
        out: list[str] = []
        hide_next = False
        for arg in argv:
            if not isinstance(arg, str):
                out.append(arg)
                continue
            if hide_next:
                out.append(SCRUBBED)
                hide_next = False
                continue
            name, eq, value = arg.partition("=")
            flag = name.lstrip("-")
            if self.enabled and _FLAG.fullmatch(flag) and self.secret_key(flag):
                if eq:
                    out.append(f"{name}={SCRUBBED}" if value else arg)
                    continue
                hide_next = name.startswith("-")
            out.append(self.url(arg))
        return out

    def strings(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``values`` with URL passwords removed from its string values."""
        return {k: self.url(v) if isinstance(v, str) else v for k, v in values.items()}

    def identity(self, identity: Mapping[str, Any]) -> dict[str, Any]:
        """A ``process.started`` payload with its argv and URLs scrubbed."""
        out = self.strings(identity)
        argv = out.get("argv")
        if isinstance(argv, list):
            out["argv"] = self.argv(argv)
        return out


def for_config(setting: bool | tuple[str, ...]) -> Scrubber:
    """The scrubber a resolved ``Config.scrub`` describes."""
    if setting is False:
        return Scrubber(enabled=False)
    return Scrubber(() if setting is True else setting)


def from_setting(setting: bool | Sequence[str] | str | None) -> Scrubber:
    """The scrubber for ``init(scrub=...)`` or, when not given, ``RUNLOG_SCRUB``."""
    if setting is None:
        setting = os.environ.get(ENV_VAR, "")
    if isinstance(setting, bool):
        return Scrubber(enabled=setting)
    if isinstance(setting, str):
        low = setting.strip().lower()
        if low in _OFF:
            return Scrubber(enabled=False)
        if low in _ON:
            return Scrubber()
        setting = [p.strip() for p in setting.split(",") if p.strip()]
    extra = list(setting)
    for pattern in extra:
        if not isinstance(pattern, str):
            raise TypeError(
                f"runlog.init(scrub=...) takes True, False or regular expressions as str, "
                f"got {type(pattern).__name__}"
            )
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigurationError(f"scrub pattern {pattern!r} is not a regex: {exc}") from None
    return Scrubber(extra)


_active = Scrubber()


def active() -> Scrubber:
    """The scrubber of this process (set when the run starts)."""
    return _active


def use(scrubber: Scrubber) -> None:
    """Make ``scrubber`` the process's (``Runtime`` calls this when it starts)."""
    global _active
    _active = scrubber


__all__ = [
    "DEFAULT_PATTERNS",
    "ENV_VAR",
    "SCRUBBED",
    "Scrubber",
    "active",
    "for_config",
    "from_setting",
    "use",
]
