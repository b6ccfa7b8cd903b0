"""aiohttp's protocol, plus an early notice when the peer closes the socket."""

from __future__ import annotations

import asyncio
import weakref
from typing import Protocol

from aiohttp.client_proto import ResponseHandler

__all__ = ["PoolHooks", "PoolProtocol"]


class PoolHooks(Protocol):
    """What the protocol tells its pool (the connector)."""

    def _on_idle_data(self, protocol: PoolProtocol) -> bool: ...

    def _on_lost(self, protocol: PoolProtocol) -> None: ...


class PoolProtocol(ResponseHandler):
    """A ``ResponseHandler`` that tells its pool what happens to idle sockets.

    aiohttp discovers a dead idle connection only when it next tries to reuse
    it, so its pool counts sockets that are gone. With this notice the pool
    drops them at once and ``stats().idle`` stays true to the OS.

    Bytes arriving on an idle connection answer no request: aiohttp would
    parse them as the next request's response, and every later response on
    that socket would be off by one. The pool is asked first (``on_data``
    returns True when the connection was idle and is now dropped), and the
    bytes are discarded.

    The pool is held through one weak reference, shared by all its protocols
    (a socket must not keep a dropped connector alive); dereferencing it
    allocates nothing, which matters on a path taken for every read.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: weakref.ref[PoolHooks] | None = None,
    ) -> None:
        super().__init__(loop)
        self._aioconnpool_pool = pool

    def data_received(self, data: bytes) -> None:
        ref = self._aioconnpool_pool
        if data and ref is not None:
            pool = ref()
            if pool is not None and pool._on_idle_data(self):
                return
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        # A write cancelled mid-drain leaves aiohttp's drain waiter behind
        # (3.11 shields it); losing the socket sets an exception on it that
        # nobody will read, and asyncio logs "Future exception was never
        # retrieved". Whoever still awaits it reads it anyway.
        drain_waiter = getattr(self, "_drain_waiter", None)
        try:
            super().connection_lost(exc)
        finally:
            if (
                drain_waiter is not None
                and drain_waiter.done()
                and not drain_waiter.cancelled()
            ):
                drain_waiter.exception()  # marks it retrieved
            ref = self._aioconnpool_pool
            pool = ref() if ref is not None else None
            if pool is not None:
                pool._on_lost(self)
