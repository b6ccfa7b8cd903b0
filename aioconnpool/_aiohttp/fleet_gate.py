"""The glue's side of fleet-wide limits: what a fleet backend must offer, and
the connector that asks it before every acquisition.

A backend (``aioconnpool.fleet.RedisFleet``) does I/O; the core never sees
it. ``PoolConnector(fleet=...)`` builds a :class:`FleetGatedConnector`, whose
``connect()`` first waits for a fleet slot for the request's ``PoolKey``,
then runs the ordinary ``connect()``, so a request waiting on the fleet
holds none of this process's ``limit`` slots and other hosts go ahead. The
slot is given back when the acquisition ends: the connection released or
closed (:class:`FleetConnection`), garbage-collected unreleased, or the
local ``connect()`` failed or was cancelled.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from aiohttp.connector import Connection
from aiohttp.helpers import ceil_timeout

from .._errors import PoolClosedError
from .._fleet_stats import FleetStats
from .._keys import PoolKey, pool_key_of
from .connector import PoolConnector
from .release_paths import PoolConnection

if TYPE_CHECKING:
    from aiohttp.client import ClientTimeout
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace

__all__ = ["FleetBackend", "FleetConnection", "FleetGatedConnector"]


@runtime_checkable
class FleetBackend(Protocol):
    """What ``PoolConnector(fleet=...)`` needs from a fleet backend.

    ``take_now`` takes one fleet slot of ``key`` if that needs no waiting
    (True), else ``acquire`` waits for one and raises if none can be had (it
    gives back whatever it got when cancelled); ``release`` gives one
    back without awaiting; ``snapshot`` feeds ``PoolStats.fleet``; ``bind``
    is called once, by the connector that owns the backend; ``close`` is
    awaited by the connector's ``close()``.
    """

    def bind(self, loop: asyncio.AbstractEventLoop) -> None: ...

    def take_now(self, key: PoolKey) -> bool: ...

    async def acquire(self, key: PoolKey) -> None: ...

    def release(self, key: PoolKey) -> None: ...

    def snapshot(self) -> FleetStats: ...

    async def close(self) -> None: ...


class FleetConnection(PoolConnection):
    """A ``PoolConnection`` that gives its fleet slot back when it ends."""

    def _give_back(self) -> None:
        if self._protocol is not None:
            connector: FleetGatedConnector = self._connector  # type: ignore[assignment]
            connector._fleet.release(pool_key_of(self._key))

    def release(self) -> None:
        self._give_back()
        super().release()

    def close(self) -> None:
        self._give_back()
        super().close()

    def __del__(self, _warnings: Any = warnings) -> None:
        if self._protocol is not None and not self._loop.is_closed():
            self._give_back()
        super().__del__(_warnings)


class FleetGatedConnector(PoolConnector):
    """A ``PoolConnector`` whose acquisitions each hold a fleet slot."""

    _fleet: FleetBackend
    _connection_class = FleetConnection

    async def connect(
        self, req: ClientRequest, traces: list[Trace] | None, timeout: ClientTimeout
    ) -> Connection:
        if self._closed:
            raise PoolClosedError("Connector is closed.")
        key = pool_key_of(req.connection_key)
        fleet = self._fleet
        if not fleet.take_now(key):
            # The fleet wait counts against the connect timeout, as a wait in
            # the local queue does.
            async with ceil_timeout(timeout.connect, timeout.ceil_threshold):
                await fleet.acquire(key)
        try:
            return await super().connect(req, traces, timeout)
        except BaseException:
            fleet.release(key)
            raise
