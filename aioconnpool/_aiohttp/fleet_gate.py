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
import weakref
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from aiohttp.connector import Connection
from aiohttp.helpers import ceil_timeout

from .._errors import PoolClosedError, PoolTimeoutError
from .._fleet_stats import FleetStats
from .._keys import PoolKey, pool_key_of
from . import compat as _compat
from .connector import PoolConnector
from .fleet_pacing import FleetPacingBackend
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
    back without awaiting; ``lease_ok`` says whether the slots held are
    surely still this process's (a request that waited starts only then);
    ``snapshot`` feeds ``PoolStats.fleet``; ``bind``
    is called once, by the connector that owns the backend; ``close`` is
    awaited by the connector's ``close()``.
    """

    def bind(self, loop: asyncio.AbstractEventLoop) -> None: ...

    def take_now(self, key: PoolKey) -> bool: ...

    def lease_ok(self, key: PoolKey) -> bool: ...

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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(self._fleet, FleetPacingBackend):
            # Pauses other processes share reach this connector's pacing
            # (built then if need be). Held weakly: the fleet belongs to the
            # connector, and a cycle would keep an unclosed one from warning.
            ref = weakref.ref(self)

            def on_pause(key: PoolKey, seconds: float, reason: str) -> None:
                connector = ref()
                if connector is not None and not connector._closed:
                    connector._pacing_gate().fleet_paused(key, seconds, reason)

            def on_resume(key: PoolKey) -> None:
                connector = ref()
                if connector is not None and connector._pacing is not None:
                    connector._pacing.resume(key, share=False)

            self._fleet.pacing_listen(on_pause, on_resume)

    if not _compat.CLOSE_IS_COROUTINE:  # aiohttp 3.11

        def close(self) -> Any:  # type: ignore[override]
            """aiohttp 3.11's ``close()``, whose awaitable also waits for the
            fleet to be left (aiohttp's own awaits nothing). From 3.12 on,
            ``close()`` awaits what the close step returns, the fleet's
            leaving included (``PoolConnector._close_pool``)."""
            result = super().close()
            closing = self._fleet_closing
            if closing is None:
                return result
            return asyncio.gather(asyncio.ensure_future(result), closing)

    async def connect(
        self, req: ClientRequest, traces: list[Trace] | None, timeout: ClientTimeout
    ) -> Connection:
        if self._closed:
            raise PoolClosedError("Connector is closed.")
        key = pool_key_of(req.connection_key)
        fleet = self._fleet
        loop = self._loop
        limit = timeout.connect
        started = loop.time()
        while True:
            if not fleet.take_now(key):
                # The fleet wait and the local one share the connect timeout:
                # what the fleet took, the local wait no longer has.
                async with ceil_timeout(limit, timeout.ceil_threshold):
                    await fleet.acquire(key)
                if limit is not None:
                    left = max(limit - (loop.time() - started), 0.001)
                    timeout = _compat.with_connect_timeout(timeout, left)
            try:
                conn = await super().connect(req, traces, timeout)
            except BaseException:
                fleet.release(key)
                raise
            if fleet.lease_ok(key):
                return conn
            # The process stalled past its lease while this request waited
            # for a local slot: the fleet slot may be someone else's now.
            # Start nothing on it: give both back and ask again (the fleet
            # re-registers what this process really holds meanwhile).
            conn.release()
            if limit is not None:
                left = limit - (loop.time() - started)
                if left <= 0:
                    raise PoolTimeoutError(
                        f"Timed out after {limit:g} s (connect timeout) waiting "
                        f"for a fleet slot of {key} confirmed by the fleet",
                        key,
                        limit,
                    )
