"""Validation of connector options: clear errors, before anything is built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp.helpers import sentinel

from .._core.adaptive import AdaptiveLimit
from .._core.checks import check_count, check_seconds
from .._core.host_limits import HostDelays, HostLimits

__all__ = [
    "FD_BUDGET_SHARE",
    "PoolOptions",
    "adaptive_of",
    "check_count",
    "check_fraction",
    "check_seconds",
    "fd_budget_of",
    "validate_pool_options",
    "validate_tcp_options",
]


def validate_tcp_options(options: Mapping[str, Any]) -> None:
    """Check the TCPConnector keywords whose bad values aiohttp lets through."""
    if "limit" in options:
        check_count("limit", options["limit"])
    if "limit_per_host" in options:
        check_count("limit_per_host", options["limit_per_host"])
    keepalive = options.get("keepalive_timeout")
    if keepalive is not None and keepalive is not sentinel:
        check_seconds("keepalive_timeout", keepalive)


def adaptive_of(value: object) -> AdaptiveLimit | None:
    """``limit_per_host`` as an adaptive limit: ``"auto"`` is
    ``AdaptiveLimit()``, an ``AdaptiveLimit`` is itself; ``None`` for
    anything else (an int, checked by ``validate_tcp_options``). Any other
    string raises ``ValueError`` naming it."""
    if isinstance(value, AdaptiveLimit):
        return value
    if isinstance(value, str):
        if value == "auto":
            return AdaptiveLimit()
        raise ValueError(
            "limit_per_host must be an int >= 0, 'auto' or an AdaptiveLimit, "
            f"got {value!r}"
        )
    if isinstance(value, type) and issubclass(value, AdaptiveLimit):
        raise TypeError(
            "limit_per_host must be an AdaptiveLimit instance, not the class: "
            "write AdaptiveLimit()"
        )
    return None


def check_optional_count(name: str, value: object, *, minimum: int) -> int | None:
    """``None`` or an int >= ``minimum``."""
    return None if value is None else check_count(name, value, minimum=minimum)


def check_positive_seconds(name: str, value: object) -> float | None:
    """``None`` or a finite number of seconds > 0."""
    seconds = check_seconds(name, value)
    if seconds == 0:
        raise ValueError(f"{name} must be > 0 (or None for no limit), got {value!r}")
    return seconds


def check_fraction(name: str, value: object) -> float:
    """``value`` as a number within [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a fraction within [0, 1], "
            f"not {type(value).__name__}: {value!r}"
        )
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise ValueError(f"{name} must be within [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """``PoolConnector``'s own options, validated."""

    stats_history: int
    host_limits: HostLimits
    max_idle_per_host: int | None
    max_idle: int | None
    max_hosts: int | None
    block: bool
    acquire_timeout: float | None
    max_connection_age: float | None
    max_requests_per_connection: int | None
    reuse: str
    leak_threshold: float | None
    fd_budget: int | None
    host_delays: HostDelays
    """``delay_per_host`` as its default: falsy when no host is paced."""
    delay_jitter: float


FD_BUDGET_SHARE = 0.5
"""The share of the process's soft ``RLIMIT_NOFILE`` that ``fd_budget="auto"``
gives one connector's sockets; the rest is left for files, DNS, servers and
other connectors."""


def fd_budget_of(value: object) -> int | None:
    """``fd_budget`` as a number of sockets: ``"auto"`` from the soft
    ``RLIMIT_NOFILE`` (none when unlimited, or where the platform has no such
    limit), ``None`` for no budget, or an int >= 1."""
    if value == "auto":
        try:
            import resource
        except ImportError:  # not on this platform (Windows)
            return None
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft <= 0:
            return None
        return max(1, int(soft * FD_BUDGET_SHARE))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            "fd_budget must be 'auto', None or an int, not "
            f"{type(value).__name__}: {value!r}"
        )
    return check_count("fd_budget", value, minimum=1)


def validate_pool_options(
    tcp_options: Mapping[str, Any],
    *,
    stats_history: object,
    host_limits: object,
    max_idle_per_host: object,
    max_idle: object,
    max_hosts: object,
    block: object,
    acquire_timeout: object,
    max_connection_age: object,
    max_requests_per_connection: object,
    reuse: object,
    leak_threshold: object,
    fd_budget: object,
    delay_per_host: object = 0.0,
    host_delays: object = None,
    delay_jitter: object = 0.0,
) -> PoolOptions:
    """Check every option, then the ones that only make sense together.

    Raises ``TypeError``/``ValueError`` naming the option and the value,
    before anything is built.
    """
    if not isinstance(block, bool):
        raise TypeError(f"block must be True or False, not {type(block).__name__}")
    if not isinstance(reuse, str):
        raise TypeError(f"reuse must be 'fifo' or 'lifo', not {type(reuse).__name__}")
    if reuse not in ("fifo", "lifo"):
        raise ValueError(f"reuse must be 'fifo' or 'lifo', got {reuse!r}")
    options = PoolOptions(
        stats_history=check_count("stats_history", stats_history),
        host_limits=HostLimits(host_limits),  # type: ignore[arg-type]
        max_idle_per_host=check_optional_count(
            "max_idle_per_host", max_idle_per_host, minimum=0
        ),
        max_idle=check_optional_count("max_idle", max_idle, minimum=0),
        max_hosts=check_optional_count("max_hosts", max_hosts, minimum=1),
        block=block,
        acquire_timeout=check_positive_seconds("acquire_timeout", acquire_timeout),
        max_connection_age=check_positive_seconds(
            "max_connection_age", max_connection_age
        ),
        max_requests_per_connection=check_optional_count(
            "max_requests_per_connection", max_requests_per_connection, minimum=1
        ),
        reuse=reuse,
        leak_threshold=check_positive_seconds("leak_threshold", leak_threshold),
        fd_budget=fd_budget_of(fd_budget),
        host_delays=HostDelays(
            host_delays,  # type: ignore[arg-type]
            check_seconds("delay_per_host", delay_per_host, allow_none=False) or 0.0,
        ),
        delay_jitter=check_fraction("delay_jitter", delay_jitter),
    )
    if not block and options.acquire_timeout is not None:
        raise ValueError(
            "acquire_timeout has no effect with block=False (requests never "
            f"wait); got acquire_timeout={acquire_timeout!r}"
        )
    _check_idle_caps(options, tcp_options)
    return options


def _check_idle_caps(options: PoolOptions, tcp_options: Mapping[str, Any]) -> None:
    """An idle cap above every limit it could meet can never act: say so."""
    limit = tcp_options.get("limit", 100)  # TCPConnector's default
    limit_per_host = tcp_options.get("limit_per_host", 0)
    per_host, total = options.max_idle_per_host, options.max_idle
    if per_host is not None and total is not None and per_host > total:
        raise ValueError(
            f"max_idle_per_host={per_host} is more than max_idle={total}: "
            "no host could ever keep that many idle connections"
        )
    # No check of max_idle against limit: idle connections do not count
    # against limit, so several hosts may keep more idle than limit in all.
    if per_host is not None and limit and per_host > limit:
        raise ValueError(
            f"max_idle_per_host={per_host} is more than limit={limit}: the pool "
            "never holds that many connections"
        )
    overrides = [value for _pattern, value in options.host_limits]
    if per_host is None or not limit_per_host or None in overrides:
        return
    highest = max([limit_per_host, *overrides])
    if per_host > highest:
        raise ValueError(
            f"max_idle_per_host={per_host} is more than limit_per_host="
            f"{limit_per_host}{' and every host_limits value' if overrides else ''}"
            ": no host ever holds that many connections"
        )
