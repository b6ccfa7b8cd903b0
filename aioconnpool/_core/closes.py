"""Closing, expiry and retirement: connections leave the pool.

The peer closes an idle socket (:meth:`Closes.conn_lost`), keep-alive time runs
out (:meth:`Closes.expire`), or the whole pool closes (:meth:`Closes.close`).
Each closed connection is counted for its reason and its key retires into the
history once it holds nothing (``Bookkeeping._retire_if_empty``).
"""

from __future__ import annotations

from .. import _events as ev
from .bookkeeping import Bookkeeping
from .records import (
    ACQUIRED,
    CLOSED,
    GONE,
    IDLE,
    NOTHING,
    Closing,
    ConnRecord,
    Decision,
    Ticket,
    dequeue_first,
)
from .view import C, G, K

__all__ = ["Closes"]


class Closes(Bookkeeping[K, C, G]):
    """Idle connections lost or expired, and the pool's close."""

    def conn_lost(self, conn: C, reason: str = "server") -> Decision:
        """The transport of ``conn`` was lost. Only an idle one leaves now
        (the decision lists it, closing it again is harmless); an acquired one
        is settled when its request releases it."""
        rec = self._conns.get(conn)
        if rec is None or rec.state != IDLE:
            return NOTHING
        self._idle.remove(rec)
        closes: list[Closing] = []
        self._settle_closings([(rec, reason)], closes, self._clock())
        return Decision((), closes)

    def expire(self) -> Decision:
        """Close the idle connections whose keep-alive time is over.

        Costs time in proportion to what expires, not to the pool's size.
        """
        if not self._idle:
            return NOTHING
        expired: list[tuple[ConnRecord, str]] = []
        now = self._clock()
        self._idle.expire(now, expired)
        if not expired:
            return NOTHING
        closes: list[Closing] = []
        self._settle_closings(expired, closes, now)
        return Decision((), closes)

    def close(self) -> Decision:
        """The pool closes: close every connection, refuse every waiter.

        Connections still being opened are closed when their outcome arrives.
        """
        if self._closed:
            return NOTHING
        self._closed = True
        closes: list[Closing] = []
        wake: list[Ticket] = []
        now = self._clock()
        self._idle.clear()
        for rec in list(self._conns.values()):
            ks = rec.key
            if rec.state == ACQUIRED:
                self._count_release(ks, "connector_closed", now, rec.acquired_at)
                ks.acquired -= 1
                self._acquired -= 1
            self._count_close(ks, "connector_closed", now, rec.created_at, rec.served)
            del self._conns[rec.handle]
            rec.state = GONE
            closes.append(Closing(rec.handle, "connector_closed", ks.key))
        for ks in list(self._keys.values()):
            while ks.waiting:
                ticket = dequeue_first(ks)
                ticket.state = CLOSED
                wake.append(ticket)
                if self._events is not None:
                    self._events.append(
                        ev.Dequeued(
                            self._ekey(ks.key), now, "closed", now - ticket.since
                        )
                    )
                self._waiting -= 1
            self._retire_if_empty(ks)
        self._ready.clear()
        return Decision(wake, closes)
