"""runlog.patching: the one install/uninstall registry of runlog's and its integrations' patches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import wrapt

from runlog.patching import Patches


class Target:
    def greet(self, name: str) -> str:
        return f"hello {name}"


def shout(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    return str(wrapped(*args, **kwargs)).upper()


def whisper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    return str(wrapped(*args, **kwargs)).lower()


class TestPatches:
    def test_install_is_idempotent_and_uninstall_restores(self) -> None:
        """Installing twice wraps once; uninstalling puts the very original back."""
        original = Target.__dict__["greet"]
        patches = Patches((Target, "greet", shout))
        patches.install()
        patches.install()
        try:
            assert patches.installed()
            assert Target().greet("ann") == "HELLO ANN"
            assert not isinstance(Target.__dict__["greet"].__wrapped__, wrapt.FunctionWrapper)
        finally:
            patches.uninstall()
            patches.uninstall()
        assert Target.__dict__["greet"] is original and not patches.installed()

    def test_a_patch_put_over_ours_is_left_alone(self) -> None:
        """Uninstall restores only where our wrapper is still the attribute."""
        ours = Patches((Target, "greet", shout))
        ours.install()
        wrapt.wrap_function_wrapper(Target, "greet", whisper)
        over = Target.__dict__["greet"]
        try:
            ours.uninstall()
            assert Target.__dict__["greet"] is over and not ours.installed()
        finally:
            Target.greet = over.__wrapped__.__wrapped__  # type: ignore[method-assign]

    def test_two_sets_on_one_method_are_independent(self) -> None:
        """Each set knows its own wrapper: one installed set does not count as the other."""
        first, second = Patches((Target, "greet", shout)), Patches((Target, "greet", whisper))
        first.install()
        try:
            assert first.installed() and not second.installed()
        finally:
            first.uninstall()

    @pytest.mark.parametrize(
        "bad", [("not a class", "greet", shout), (Target, 3, shout), (Target, "greet", None)]
    )
    def test_bad_triples_raise_at_once(self, bad: Any) -> None:
        """A triple that is not (class, name, wrapper) is a programming error."""
        with pytest.raises(TypeError, match="triples"):
            Patches(bad)
