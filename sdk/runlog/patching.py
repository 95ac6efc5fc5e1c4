"""Monkey-patches installed and removed as one set: runlog's and its integrations' one helper.

runlog patches ``Thread.start`` and ``ThreadPoolExecutor.submit`` (so spans follow work
into threads) and its integrations patch the request methods of LLM clients; each of
these needs the same three things, done the same way:

* install is idempotent: a method that is already our wrapper is not wrapped again, so
  instrumenting twice logs once;
* uninstall restores the original only where the attribute is still our wrapper, so a
  patch someone put over ours later is left alone (the rule of OpenTelemetry's
  ``unwrap``);
* both hold one lock, so two threads instrumenting at once patch once.

::

    patches = runlog.patching.Patches((SyncClient, "request", wrapper))
    patches.install()     # wrapt.wrap_function_wrapper(SyncClient, "request", wrapper)
    patches.uninstall()   # SyncClient.request is the original again

Wrappers have wrapt's signature ``wrapper(wrapped, instance, args, kwargs)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import wrapt

from . import _forksafe

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


class Patches:
    """Wrappers for ``(owner, attribute name, wrapper)`` triples, put in and taken out together."""

    def __init__(self, *patches: tuple[type, str, Wrapper]) -> None:
        for owner, name, wrapper in patches:
            if not isinstance(owner, type) or not isinstance(name, str) or not callable(wrapper):
                raise TypeError(
                    f"Patches() takes (class, attribute name, wrapper) triples, "
                    f"got {(owner, name, wrapper)!r}"
                )
        self._patches = patches
        self._lock = _forksafe.lock()

    def install(self) -> None:
        """Wrap every attribute that is not already ours (idempotent)."""
        with self._lock:
            for owner, name, wrapper in self._patches:
                if not _is_ours(owner, name, wrapper):
                    wrapt.wrap_function_wrapper(owner, name, wrapper)

    def uninstall(self) -> None:
        """Put the originals back where our wrappers are still in place (idempotent)."""
        with self._lock:
            for owner, name, wrapper in self._patches:
                if _is_ours(owner, name, wrapper):
                    setattr(owner, name, owner.__dict__[name].__wrapped__)

    def installed(self) -> bool:
        """Whether every attribute is our wrapper."""
        return all(_is_ours(owner, name, wrapper) for owner, name, wrapper in self._patches)


def _is_ours(owner: type, name: str, wrapper: Wrapper) -> bool:
    attr = owner.__dict__.get(name)
    return isinstance(attr, wrapt.FunctionWrapper) and attr._self_wrapper is wrapper


__all__ = ["Patches", "Wrapper"]
