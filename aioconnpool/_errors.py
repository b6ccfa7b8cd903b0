"""The exceptions aioconnpool raises, under one root.

Each also subclasses the aiohttp exception that existing code already
catches for a failed connection (``aiohttp.ClientConnectionError``, hence
``aiohttp.ClientError``), so swapping ``TCPConnector`` for ``PoolConnector``
breaks no ``except`` clause.

``PoolTimeoutError`` is deliberately *not* an ``asyncio.TimeoutError``:
``ClientSession`` replaces any ``TimeoutError`` that comes out of a connector
with its own ``ConnectionTimeoutError("Connection timeout to host ...")``,
which would lose the key and the limits, and ``except PoolTimeoutError``
would never match.
"""

from __future__ import annotations

from aiohttp import ClientConnectionError, ClientError

from ._keys import PoolKey

__all__ = [
    "AioConnPoolError",
    "HostStalledError",
    "PacingDeadlineError",
    "PoolClosedError",
    "PoolFullError",
    "PoolTimeoutError",
]


class AioConnPoolError(ClientError):
    """The root of every exception aioconnpool raises."""


class PoolClosedError(AioConnPoolError, ClientConnectionError):
    """A request reached the connector after (or while) it closed."""


class PoolFullError(AioConnPoolError, ClientConnectionError):
    """``block=False``: no connection was free for the request's host."""

    def __init__(self, message: str, key: PoolKey) -> None:
        super().__init__(message)
        self.key = key


class PoolTimeoutError(AioConnPoolError, ClientConnectionError):
    """A request waited ``acquire_timeout`` seconds for a connection."""

    def __init__(self, message: str, key: PoolKey, timeout: float) -> None:
        super().__init__(message)
        self.key = key
        self.timeout = timeout


class PacingDeadlineError(PoolTimeoutError):
    """A request's start, decided by its host's pacing (a delay or a pause),
    would fall after its ``ClientTimeout`` deadline: it fails at once rather
    than wait for a start it cannot live to see. ``start`` and ``deadline``
    are on the event loop's clock; ``timeout`` is the time it had left."""

    def __init__(
        self,
        message: str,
        key: PoolKey,
        timeout: float,
        *,
        start: float,
        deadline: float | None,
    ) -> None:
        super().__init__(message, key, timeout)
        self.start = start
        self.deadline = deadline


class HostStalledError(AioConnPoolError, ClientConnectionError):
    """``backoff_middleware``: the host answered 429/503 ``stalls`` times in
    a row; its requests fail at once until its pause ends."""

    def __init__(self, message: str, key: PoolKey, stalls: int) -> None:
        super().__init__(message)
        self.key = key
        self.stalls = stalls
