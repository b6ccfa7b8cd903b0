"""Adaptive limits in the connector: samples measured, new limits applied.

The algorithm is the pure ``_core/adaptive.AdaptiveController``; this module
only measures what it needs and carries out what it answers. A connector
built without an adaptive limit installs none of it and pays nothing: no
other protocol, connection class or connect step.

What is measured, per request:

* the round trip, from the connection's hand-over to the request
  (``AdaptiveConnection.__init__``: aiohttp builds the ``Connection`` just
  before sending) to the response's headers (``AdaptiveProtocol.feed_data``:
  aiohttp's parser hands each parsed response to it, once). Connecting,
  queueing in the pool and reading the body are left out: they are not the
  server's latency;
* the outcome: the status (5xx and 429 are overload), or a failure before
  any headers came (a connection reset, a read timeout: overload; a
  cancellation: nothing), or a failure to connect (``_create_connection``
  wrapped: overload);
* the host's demand, read from the core at that instant (acquired,
  connecting and queued requests of its key).

When a window of samples moves a host's limit, the new limit is set on the
host's keys in the core (``PoolCore.set_limit``): raising it grants waiters
at once; lowering it closes nothing, the connections in use beyond it drain
as they come back. A host with a fixed limit (a ``host_limits`` match) is
not sampled: the fixed limit wins.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import weakref
from collections.abc import Callable, Coroutine, Hashable
from typing import TYPE_CHECKING, Any

from .._core.adaptive import AdaptiveController
from .._keys import PoolKey, pool_key_of
from .compat import response_status
from .protocol import PoolProtocol
from .release_paths import PoolConnection

if TYPE_CHECKING:
    from aiohttp.client import ClientTimeout
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace

    from .connector import PoolConnector

__all__ = ["AdaptiveGate", "AdaptiveProtocol", "adaptive_connection_class"]

log = logging.getLogger("aioconnpool")

CreateConnection = Callable[
    ["ClientRequest", "list[Trace]", "ClientTimeout"],
    Coroutine[Any, Any, "ResponseHandler"],
]


def is_overload(status: int) -> bool:
    """Whether a response says the host is overloaded: any 5xx, and 429."""
    return status >= 500 or status == 429


class AdaptiveProtocol(PoolProtocol):
    """A ``PoolProtocol`` that notes when its request's response headers come.

    ``_adaptive_start`` is the loop time at which a request took the
    connection (``None``: no request awaits its headers); ``feed_data``,
    which aiohttp calls once per parsed response, turns it into a sample.
    Informational responses (1xx but 101) are not the answer: the clock
    keeps running until the final one.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: weakref.ref[Any] | None = None,
    ) -> None:
        super().__init__(loop, pool)
        self._adaptive_start: float | None = None
        self._adaptive_key: Hashable = None

    def feed_data(self, data: Any, *args: Any) -> None:
        super().feed_data(data, *args)
        start = self._adaptive_start
        if start is None:
            return
        status = response_status(data)
        if status is None or (status < 200 and status != 101):
            return
        self._adaptive_start = None
        ref = self._aioconnpool_pool
        pool = ref() if ref is not None else None
        gate: AdaptiveGate | None = getattr(pool, "_adaptive", None)
        if gate is not None:
            gate.answered(self._adaptive_key, start, status)


_CLASSES: dict[type[PoolConnection], type[PoolConnection]] = {}


def adaptive_connection_class(base: type[PoolConnection]) -> type[PoolConnection]:
    """``base`` (the connector's connection class: ``PoolConnection``, or
    the fleet's), also starting each request's clock and counting a failure
    before any response as overload; one class per base."""
    made = _CLASSES.get(base)
    if made is None:
        made = _CLASSES[base] = _make_connection_class(base)
    return made


def _make_connection_class(base: type[PoolConnection]) -> type[PoolConnection]:

    class AdaptiveConnection(base):  # type: ignore[valid-type,misc]
        def __init__(
            self,
            connector: Any,
            key: Any,
            protocol: Any,
            loop: asyncio.AbstractEventLoop,
        ) -> None:
            super().__init__(connector, key, protocol, loop)
            if isinstance(protocol, AdaptiveProtocol):
                protocol._adaptive_key = key
                protocol._adaptive_start = loop.time()

        def release(self) -> None:
            protocol = self._protocol
            if isinstance(protocol, AdaptiveProtocol):
                protocol._adaptive_start = None
            super().release()

        def close(self) -> None:
            protocol = self._protocol
            if (
                isinstance(protocol, AdaptiveProtocol)
                and protocol._adaptive_start is not None
            ):
                # Closed before its response came: aiohttp's cleanup after an
                # error (a reset, a read timeout) is overload; a cancellation
                # or the caller's own close says nothing about the host.
                protocol._adaptive_start = None
                failure = sys.exc_info()[1]
                if failure is not None and not isinstance(
                    failure, asyncio.CancelledError
                ):
                    gate: AdaptiveGate | None = getattr(
                        self._connector, "_adaptive", None
                    )
                    if gate is not None:
                        gate.failed(protocol._adaptive_key)
            super().close()

    AdaptiveConnection.__name__ = AdaptiveConnection.__qualname__ = (
        f"Adaptive{base.__name__}"
    )
    return AdaptiveConnection


class AdaptiveGate:
    """Feeds one connector's samples to its controller and applies the
    limits it answers (see the module docstring)."""

    def __init__(
        self, connector: PoolConnector, controller: AdaptiveController[PoolKey]
    ) -> None:
        self._connector = weakref.ref(connector)
        self._loop = connector._loop
        self.controller = controller

    def wrap_create_connection(self, create: CreateConnection) -> CreateConnection:
        """``create`` (``TCPConnector._create_connection``), also counting a
        failure to connect as overload."""

        async def create_connection(
            req: ClientRequest, traces: list[Trace], timeout: ClientTimeout
        ) -> ResponseHandler:
            try:
                return await create(req, traces, timeout)
            except (OSError, asyncio.TimeoutError):
                # aiohttp's ClientConnectorError and ClientOSError are
                # OSErrors; its connect timeouts are TimeoutErrors.
                self.failed(req.connection_key)
                raise

        return create_connection

    def answered(self, key: Hashable, start: float, status: int) -> None:
        """A response's headers came, ``start`` being the hand-over time."""
        now = self._loop.time()
        self._sample(key, now, now - start, is_overload(status))

    def failed(self, key: Hashable) -> None:
        """A request failed before any response: overload."""
        self._sample(key, self._loop.time(), 0.0, True)

    def _sample(self, key: Hashable, now: float, rtt: float, overload: bool) -> None:
        connector = self._connector()
        if connector is None:
            return
        core = connector._core
        if core.closed:
            return
        host = pool_key_of(key)
        if (
            connector._host_limit_patterns
            and connector._host_limits.lookup(*host) is not None
        ):
            return  # a fixed limit wins
        limit = self.controller.sample(
            host, now, rtt, overload=overload, demand=core.demand(key)
        )
        if limit is not None and host not in connector._held:
            # A paused host keeps its limit of 0 (PoolConnector._hold); the
            # learned one applies when the pause ends (refresh_limits asks
            # _adaptive_limit_for again).
            log.debug("Adaptive limit of %s: %d", host, limit)
            for member in core.keys_in_group(host):
                connector._carry_out(core.set_limit(member, limit))
        if connector._pending_events:
            connector._deliver()
