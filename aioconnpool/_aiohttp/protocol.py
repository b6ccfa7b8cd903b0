"""aiohttp's protocol, plus an early notice when the peer closes the socket."""

from __future__ import annotations

import asyncio
import weakref
from typing import Protocol

from aiohttp.client_proto import ResponseHandler

from .._core.records import IDLE, ConnRecord

__all__ = ["PoolHooks", "PoolProtocol"]


def _closed_reader(data: bytes) -> None:
    """What reads after the socket is gone reach (none should)."""


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
    that socket would be off by one. The pool is asked first (``_on_idle_data``
    returns True when the connection was idle and is now dropped), and the
    bytes are discarded.

    Every read of every request must not pay for that screen, so it is on
    only while the connection may be idle. The screen is the class's own
    ``data_received``; while a request holds the connection, an instance
    attribute of the same name, aiohttp's own method bound to it
    (``direct_reads``), wins over it: set when a request takes the
    connection (and from the start: a new connection is acquired), deleted
    when it comes back. One attribute store or delete per request, no call.
    An idle connection, what a crawler keeps by the thousand, holds no bound
    method at all: two objects fewer per connection for every full
    collection to walk than when both readers were bound once and kept.
    The screen itself asks the pool's record of the connection
    (``track``) whether it is idle before dropping anything, so a connection
    handed to a waiter that has not yet taken it reads normally. The pool is
    held through one weak reference, shared by all its protocols: a socket
    must not keep a dropped connector alive.
    """

    # aiohttp's reader, bound when read from an instance (see the docstring).
    direct_reads = ResponseHandler.data_received

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: weakref.ref[PoolHooks] | None = None,
    ) -> None:
        super().__init__(loop)
        self._aioconnpool_pool = pool
        self._aioconnpool_record: ConnRecord | None = None
        # Acquired from the start: aiohttp's reader (see the class docstring).
        self.data_received = self.direct_reads  # type: ignore[method-assign]

    def track(self, record: ConnRecord | None) -> None:
        """The pool's record of this connection, once it holds it."""
        self._aioconnpool_record = record

    def data_received(self, data: bytes) -> None:
        """The screen: reads while no request holds the connection."""
        if not data:
            # aiohttp's resume_reading() passes b"" once per response, just
            # after the connection came back, to resume parsing what a pause
            # held back. A screened connection answers no request: it came
            # back with its response parsed to the end (or is being closed),
            # so there is nothing to resume, and aiohttp's reader is spared.
            return
        record = self._aioconnpool_record
        if record is not None and record.state == IDLE:
            ref = self._aioconnpool_pool
            pool = ref() if ref is not None else None
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
            # A bound reader refers to this protocol, and so does the pool's
            # record of it (ConnRecord.handle): drop them, so that it is freed
            # by reference counting, not by the collector (with the record, a
            # closed idle connection's drained key went too).
            self.data_received = _closed_reader  # type: ignore[method-assign]
            record = self._aioconnpool_record
            self._aioconnpool_record = None
            # Only an idle connection leaves the pool when its socket goes
            # (Closes.conn_lost): one the pool closed itself is already gone
            # from it (GONE), and an acquired one is settled when its request
            # releases it. The record says which, without a call.
            if record is not None and record.state == IDLE:
                ref = self._aioconnpool_pool
                pool = ref() if ref is not None else None
                if pool is not None:
                    pool._on_lost(self)
