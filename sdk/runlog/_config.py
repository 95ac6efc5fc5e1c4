"""Settings: ``init()`` arguments first, then ``RUNLOG_*`` environment variables, then defaults.

Everything is resolved and validated once, when the run starts, so a bad value is a
clear :class:`~runlog.ConfigurationError` at ``init()`` and never a surprise later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import ConfigurationError
from ._scrub import ENV_VAR as SCRUB_ENV
from ._scrub import from_setting

DEFAULT_DB = "runlog.db"


@dataclass(frozen=True)
class Config:
    """The resolved settings of one process's runlog."""

    db: str = DEFAULT_DB
    role: str = "process"
    instance_id: str | None = None
    version: str | None = None
    sync: bool = False
    lock_timeout: float = 30.0
    """Seconds to keep retrying while another process holds the database lock."""
    max_payload_bytes: int = 64 * 1024
    """Payloads whose JSON is larger are truncated, with a marker."""
    queue_size: int = 100_000
    """Events waiting for the writer before ``log_event`` applies back-pressure."""
    batch_size: int = 1_000
    flush_interval: float = 0.05
    """Seconds the background writer waits before writing a partial batch."""
    thread_context: bool = True
    """Threads and thread pools started inside a span run in the starter's context."""
    scrub: bool | tuple[str, ...] = True
    """Scrub secrets (True), not at all (False), or also under these key patterns."""
    identity: Mapping[str, Any] = field(default_factory=dict)
    """Extra fields for the ``process.started`` payload."""


_ENV: dict[str, tuple[str, type]] = {
    "db": ("RUNLOG_DB", str),
    "role": ("RUNLOG_ROLE", str),
    "instance_id": ("RUNLOG_INSTANCE_ID", str),
    "version": ("RUNLOG_VERSION", str),
    "sync": ("RUNLOG_SYNC", bool),
    "lock_timeout": ("RUNLOG_LOCK_TIMEOUT", float),
    "max_payload_bytes": ("RUNLOG_MAX_PAYLOAD_BYTES", int),
    "queue_size": ("RUNLOG_QUEUE_SIZE", int),
    "batch_size": ("RUNLOG_BATCH_SIZE", int),
    "flush_interval": ("RUNLOG_FLUSH_INTERVAL", float),
    "thread_context": ("RUNLOG_THREAD_CONTEXT", bool),
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _from_env(name: str, kind: type, raw: str) -> Any:
    if kind is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigurationError(f"{name}={raw!r} is not a boolean; use 1/0, true/false")
    if kind is str:
        return raw
    try:
        return kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


def _check(name: str, value: Any) -> None:
    expected = {f.name: f.type for f in Config.__dataclass_fields__.values()}[name]
    if value is None and "None" in str(expected):
        return
    ok = {
        "str": isinstance(value, str),
        "str | None": isinstance(value, str),
        "bool": isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
    }.get(str(expected), True)
    if not ok:
        raise TypeError(f"runlog.init({name}=...) expects {expected}, got {type(value).__name__}")
    if name in ("lock_timeout", "flush_interval") and value < 0:
        raise ConfigurationError(f"{name} must be >= 0, got {value!r}")
    if name in ("max_payload_bytes", "queue_size", "batch_size") and value < 1:
        raise ConfigurationError(f"{name} must be >= 1, got {value!r}")
    if name in ("db", "role") and not value:
        raise ConfigurationError(f"{name} must be a non-empty string")


def resolve(overrides: Mapping[str, Any], identity: Mapping[str, Any] | None = None) -> Config:
    """Build the :class:`Config` from explicit arguments, the environment and defaults.

    ``overrides`` holds only the arguments the caller actually passed (``None`` means
    "not given"), so the environment fills in everything else.
    """
    values: dict[str, Any] = {}
    for name, (env_name, kind) in _ENV.items():
        value = overrides.get(name)
        if value is None and env_name in os.environ:
            value = _from_env(env_name, kind, os.environ[env_name])
        if value is None:
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        _check(name, value)
        values[name] = value
    values["scrub"] = _scrub_setting(overrides.get("scrub"))
    if identity:
        values["identity"] = dict(identity)
    return Config(**values)


def _scrub_setting(given: object) -> bool | tuple[str, ...]:
    """``init(scrub=...)``, else ``RUNLOG_SCRUB`` (0/1, or comma-separated extra patterns)."""
    if given is not None and not isinstance(given, bool | list | tuple):
        raise TypeError(
            "runlog.init(scrub=...) expects True, False or a list of regular expressions, "
            f"got {type(given).__name__}"
        )
    scrubber = from_setting(given if given is not None else os.environ.get(SCRUB_ENV))
    return scrubber.extra if scrubber.enabled else False


__all__ = ["DEFAULT_DB", "Config", "resolve"]
