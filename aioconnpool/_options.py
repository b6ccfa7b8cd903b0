"""Validation of connector options: clear errors, before anything is built."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from aiohttp.helpers import sentinel

__all__ = ["check_count", "check_seconds", "validate_tcp_options"]


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


def validate_tcp_options(options: Mapping[str, Any]) -> None:
    """Check the TCPConnector keywords whose bad values aiohttp lets through."""
    if "limit" in options:
        check_count("limit", options["limit"])
    if "limit_per_host" in options:
        check_count("limit_per_host", options["limit_per_host"])
    keepalive = options.get("keepalive_timeout")
    if keepalive is not None and keepalive is not sentinel:
        check_seconds("keepalive_timeout", keepalive)
