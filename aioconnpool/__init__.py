"""aioconnpool: a drop-in aiohttp connector whose connection pool is exact,
observable and fast.

    connector = aioconnpool.PoolConnector(limit=100, limit_per_host=5)
    async with aiohttp.ClientSession(connector=connector) as session:
        ...
        print(connector.stats())
"""

import logging

from ._aiohttp.backoff import BackoffMiddleware, backoff_middleware
from ._aiohttp.compat import SUPPORTED_RANGE
from ._aiohttp.connector import PoolConnector
from ._aiohttp.leaks import LeakInfo
from ._core.adaptive import AdaptiveLimit
from ._core.compiled import compiled_core
from ._core.counters import CLOSE_REASONS, COUNTER_NAMES, RELEASE_HOWS
from ._core.host_limits import HostLimits
from ._errors import (
    AioConnPoolError,
    HostStalledError,
    PacingDeadlineError,
    PoolClosedError,
    PoolFullError,
    PoolTimeoutError,
)
from ._events import (
    Acquired,
    Closed,
    ConnectEnded,
    ConnectFailed,
    ConnectStarted,
    Dequeued,
    HostPaused,
    HostResumed,
    LeakSuspected,
    LimitAdjusted,
    PacingDequeued,
    PacingLate,
    PacingQueued,
    PoolEvent,
    Queued,
    Rejected,
    Released,
)
from ._fleet_stats import FleetHostStats, FleetStats
from ._histogram import Histogram
from ._keys import PoolKey
from ._stats import ConnectionInfo, HostStats, HostTable, PoolStats

# A library logs, the application decides where it goes (as urllib3 does).
logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0.dev0"
"""This package's version."""

__all__ = [
    "CLOSE_REASONS",
    "COUNTER_NAMES",
    "RELEASE_HOWS",
    "SUPPORTED_RANGE",
    "Acquired",
    "AdaptiveLimit",
    "AioConnPoolError",
    "BackoffMiddleware",
    "Closed",
    "ConnectEnded",
    "ConnectFailed",
    "ConnectStarted",
    "ConnectionInfo",
    "Dequeued",
    "FleetHostStats",
    "FleetStats",
    "Histogram",
    "HostLimits",
    "HostPaused",
    "HostResumed",
    "HostStalledError",
    "HostStats",
    "HostTable",
    "LeakInfo",
    "LeakSuspected",
    "LimitAdjusted",
    "PacingDeadlineError",
    "PacingDequeued",
    "PacingLate",
    "PacingQueued",
    "PoolClosedError",
    "PoolConnector",
    "PoolEvent",
    "PoolFullError",
    "PoolKey",
    "PoolStats",
    "PoolTimeoutError",
    "Queued",
    "Rejected",
    "Released",
    "__version__",
    "backoff_middleware",
    "compiled_core",
]
