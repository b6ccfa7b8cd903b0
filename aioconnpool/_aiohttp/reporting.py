"""How the pool puts what it does into words: log lines and error messages.

Log lines follow urllib3's vocabulary so that existing filters and habits
carry over. Nothing here ever names credentials: keys are ``PoolKey``s.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

from .._core import PoolCore
from .._core.host_limits import HostLimits
from .._keys import PoolKey, pool_key_of
from .options import PoolOptions

__all__ = ["LOG_LEVELS", "describe_wait", "log_closing"]

log = logging.getLogger("aioconnpool")

LOG_LEVELS: dict[int, bool] = getattr(log, "_cache", {})
"""What ``log.isEnabledFor(level)`` last answered, per level: the logger's
own cache (``Logger._cache``, CPython 3.7 to 3.13), which ``logging`` empties
whenever a level changes anywhere and on ``logging.disable()``. The paths
every request takes read it without a call, as ``LOG_LEVELS[level] and not
log.disabled`` (``isEnabledFor`` checks ``disabled`` before its cache), and
ask ``isEnabledFor`` on a ``KeyError``, which fills it. Empty for good, and
so always asking, if a logger class ever lacked it."""

Core = PoolCore[Hashable, Hashable, PoolKey]


def log_closing(core: Core, options: PoolOptions, key: Hashable, reason: str) -> None:
    """Log one connection the pool closes: WARNING when an idle cap
    discarded it (urllib3's message), INFO otherwise."""
    if reason == "pool_full":
        per_host = options.max_idle_per_host
        at_host_cap = per_host is not None and (
            options.max_idle is None or core.idle_count(key) >= per_host
        )
        size = per_host if at_host_cap else options.max_idle
        # A cap of 0 keeps nothing on purpose: no warning per request.
        level = logging.DEBUG if size == 0 else logging.WARNING
        if log.isEnabledFor(level):
            log.log(
                level,
                "Connection pool is full, discarding connection: %s. "
                "Connection pool size: %s",
                pool_key_of(key).host,
                size if at_host_cap else f"{size} (max_idle)",
            )
    elif log.isEnabledFor(logging.INFO):
        log.info("Closing connection to %s (reason: %s)", pool_key_of(key), reason)


def describe_wait(
    core: Core, host_limits: HostLimits, limit_per_host: int | None, key: Hashable
) -> str:
    """The limits and gauges that made a request wait, for error messages."""
    f = core.figures(key)
    found = host_limits.lookup(*pool_key_of(key))
    if found is not None:
        source = f"host_limits[{str(found[0])!r}]={found[1]}"
    elif limit_per_host is not None:
        source = f"limit_per_host={limit_per_host}"
    elif f.limit is not None:  # none configured, one in force: learned
        source = f"adaptive limit_per_host={f.limit}"
    else:
        source = "no per-host limit"
    total = f"limit={core.limit}" if core.limit is not None else "no total limit"
    budget = core.max_open
    if budget is not None and (core.limit is None or budget < core.limit):
        total += (
            f", fd_budget={budget}: the sockets the pool may hold, idle ones "
            "included (raise RLIMIT_NOFILE or set fd_budget=)"
        )
    return (
        f"{f.acquired} acquired + {f.connecting} connecting for this host "
        f"({source}), {core.acquired + core.connecting} in all ({total}), "
        f"{f.waiting} waiting for this host"
    )
