"""aiohttp's protocol, plus an early notice when the peer closes the socket."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable

from aiohttp.client_proto import ResponseHandler

__all__ = ["PoolProtocol"]


class PoolProtocol(ResponseHandler):
    """A ``ResponseHandler`` that tells its pool when its transport is lost.

    aiohttp discovers a dead idle connection only when it next tries to reuse
    it, so its pool counts sockets that are gone. With this notice the pool
    drops them at once and ``stats().idle`` stays true to the OS.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_lost: weakref.WeakMethod[Callable[[PoolProtocol], None]] | None = None,
    ) -> None:
        super().__init__(loop)
        self._aioconnpool_on_lost = on_lost

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            ref = self._aioconnpool_on_lost
            callback = ref() if ref is not None else None
            if callback is not None:
                callback(self)
