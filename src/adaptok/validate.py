"""Checks of user-given options, with one wording everywhere.

Every public function that takes a size, a count, a name from a fixed set or free-form options
validates it here, so that a mistake always reads the same way: what was received, what was
expected, and (where there is one) the fix.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from typing import Any

from .errors import AdaptokError

__all__ = ["accepted_options", "as_int", "check_choice", "check_int", "check_options"]


def as_int(value: object) -> object:
    """`value` as a Python int when it is an integer scalar of numpy or torch (`np.int64(100)`, a
    0-d integer tensor, what `len`, `.sum()` and `.item()`-less arithmetic hand a user);
    anything else unchanged, for the caller's own check to accept or refuse.

    The one place where such scalars become ints: `check_int` and `partition`'s options call it.
    """
    import numbers

    if isinstance(value, int):  # bools included: the caller refuses them
        return value
    if isinstance(value, numbers.Integral):  # numpy integers register as Integral
        return int(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        item = value.item()  # a 0-d torch tensor or numpy array
        if isinstance(item, int) and not isinstance(item, bool):
            return item
    return value


def check_int(name: str, value: object, *, minimum: int = 1, hint: str = "") -> int:
    """Return `value` if it is an int >= `minimum` (bools are refused).

    Args:
        name: the option's name as the user wrote it.
        value: what the user passed.
        minimum: the smallest allowed value (1: a positive integer).
        hint: appended to the message, e.g. "(tokens per image)".

    Raises:
        AdaptokError: "patch_size must be a positive integer, got 0".
    """
    value = as_int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = {1: "a positive integer", 0: "a non-negative integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        suffix = f" {hint}" if hint else ""
        raise AdaptokError(f"{name} must be {kind}{suffix}, got {value!r}")
    return value


def check_choice(name: str, value: object, choices: Collection[str]) -> str:
    """Return `value` if it is one of `choices`; otherwise raise listing them."""
    if not isinstance(value, str) or value not in choices:
        raise AdaptokError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
    return value


def accepted_options(function: Callable[..., Any]) -> list[str] | None:
    """The keyword options `function` (or class) accepts; None when it takes `**kwargs`."""
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [name for name, p in parameters.items() if p.kind in keyword]


def check_options(
    function: Callable[..., Any], options: Mapping[str, object], *, what: str, skip: int = 0
) -> None:
    """Refuse options that `function` does not take (never drop them silently).

    Args:
        function: the callable the options will be passed to.
        options: the user's options.
        what: how the callable is named in the message, e.g. "method 'grid'".
        skip: leading positional parameters that are not options (e.g. 1 for `images`).

    Raises:
        AdaptokError: "method 'grid' got unknown option(s) budget; it accepts: patch_size".
    """
    accepted = accepted_options(function)
    if accepted is None:
        return
    accepted = accepted[skip:]
    unknown = [name for name in options if name not in accepted]
    if unknown:
        raise AdaptokError(
            f"{what} got unknown option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'no options'}"
        )
