"""The fleet's exceptions: aioconnpool's, so existing ``except`` clauses
(``aiohttp.ClientConnectionError``, ``aioconnpool.AioConnPoolError``,
``aioconnpool.PoolTimeoutError``) keep catching them."""

from __future__ import annotations

from aiohttp import ClientConnectionError

from aioconnpool import AioConnPoolError, PoolKey, PoolTimeoutError

__all__ = ["FleetTimeoutError", "FleetUnavailableError"]


class FleetUnavailableError(AioConnPoolError, ClientConnectionError):
    """Redis cannot be reached and ``on_unavailable="raise"``.

    ``host`` is the ``PoolKey`` the request was for; ``address`` the Redis
    URL with its password masked.
    """

    def __init__(self, message: str, *, host: PoolKey, address: str) -> None:
        super().__init__(message)
        self.host = host
        self.address = address


class FleetTimeoutError(PoolTimeoutError):
    """A request waited ``acquire_timeout`` seconds for a fleet slot."""
