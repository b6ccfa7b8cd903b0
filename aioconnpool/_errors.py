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
