"""Checks of option values shared by the core and the glue: an error that
names the option and quotes the bad value, at the earliest point."""

from __future__ import annotations

import math

__all__ = ["check_count", "check_seconds"]


def check_count(name: str, value: object, *, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum``; else a TypeError/ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}: {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def check_seconds(name: str, value: object, *, allow_none: bool = True) -> float | None:
    """``value`` as a finite number of seconds >= 0 (or None when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number of seconds"
            f"{' or None' if allow_none else ''}, not {type(value).__name__}: {value!r}"
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{name} must be a finite number of seconds >= 0, got {value!r}"
        )
    return float(value)
