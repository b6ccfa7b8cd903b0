"""Arrivals and grants: who gets a slot, and when.

A request arrives (:meth:`Grants.arrive`, or :meth:`Grants.reuse` on the
keep-alive hot path, without a ticket) and is granted at once or queued in its
key's FIFO. Whenever a slot may have been freed -- a connection released or
closed, a connect failed, a limit raised -- :meth:`Grants._slot_freed` hands
the free slots to the longest-waiting ready requests (the ready queue,
``ready``), and :meth:`Grants._grant` gives each one an idle connection or a
permit to connect. The rest of a grant's life is here too: the request takes
its connection (``handed_over``), finds it dead (``grant_lost``), its connect
succeeds or fails, or it times out in the queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from .. import _events as ev
from .._histogram import BOUNDS, BUCKET_BY_MS, BY_MS_END, BY_MS_LAST
from .bookkeeping import CONNECT, WAIT_AT, WAIT_SUM
from .closes import Closes
from .counters import (
    N_CONNECT_ERRORS,
    N_CREATED,
    N_REJECTED,
    N_REQUESTS,
    N_WAIT_TIMEOUTS,
    TOTAL_HOT,
)
from .records import (
    ACQUIRED,
    CLOSED,
    DONE,
    GONE,
    GRANTED,
    NOTHING,
    QUEUED,
    REJECTED,
    Closing,
    ConnRecord,
    Decision,
    KeyState,
    Ticket,
    dequeue_first,
    enqueue,
    positive,
    unlink_waiter,
)
from .view import C, G, K

__all__ = ["Grants"]

# Final: the compiled core (setup.py) reads these as C statics, not by name.
_BOUNDS: Final = BOUNDS
_BUCKET_BY_MS: Final = BUCKET_BY_MS


# On Closes, not beside it as a second base of PoolCore: mypyc compiles
# single inheritance only (setup.py).
class Grants(Closes[K, C, G]):
    """Arrivals, grants and the queue (see the module docstring)."""

    # ---------------------------------------------------- arrivals

    def arrive(self, key: K, *, block: bool = True) -> tuple[Ticket, Decision]:
        """A request for ``key`` arrives. Granted at once, or queued; with
        ``block=False`` a request that would have to wait is ``REJECTED``."""
        _conn, ticket, decision = self.acquire(key, block=block, reuse=False)
        assert ticket is not None
        return ticket, decision

    def reuse(self, key: K) -> tuple[C | None, Decision]:
        """A request for ``key``, served at once by an idle connection if one
        is free and the limits allow it: a keep-alive client's hot path, with
        no ticket.

        Returns the connection, now acquired (it has served one more request),
        or ``None``: nothing was counted, and the request must :meth:`arrive`.
        Either way the decision closes the idle connections found unusable on
        the way (expired, too old, dead).
        """
        conn, _ticket, decision = self.acquire(key, arrive=False)
        return conn, decision

    def acquire(
        self, key: K, block: bool = True, reuse: bool = True, arrive: bool = True
    ) -> tuple[C | None, Ticket | None, Decision]:
        """A request for ``key``, in one call whatever happens to it:
        :meth:`reuse`, then (if no idle connection served it) :meth:`arrive`.

        Returns ``(conn, None, decision)`` when an idle connection served it
        at once with no ticket (``reuse=False`` skips that path), else
        ``(None, ticket, decision)`` as :meth:`arrive` would (``arrive=False``
        returns ``(None, None, decision)`` instead: nothing was counted).
        """
        ks = self._keys.get(key)
        decision = NOTHING
        now = None
        if (
            reuse
            and ks is not None
            and ks.idle
            and not ks.waiting
            and not self._closed
            and (
                (limit := self._limit) is None
                or self._acquired + self._connecting < limit
            )
            and (ks.limit is None or ks.acquired + ks.connecting < ks.limit)
        ):
            # The keep-alive hot path: no ticket.
            now = self._clock()
            dropped: list[tuple[ConnRecord, str]] = []
            rec = self._idle.take(ks, now, dropped)
            if rec is not None:  # as arrive + _grant + handed_over would count it
                # Fields, not entries of ks.counts (KeyState): no array item.
                ks.requests += 1
                ks.served_at_once += 1  # the wait histogram's first bucket
                ks.reused += 1
                # The same three for the totals, in one entry (read_totals).
                self._totals[TOTAL_HOT] += 1
                ks.acquired += 1
                self._acquired += 1
                rec.acquired_at = now
                rec.served += 1
                if self._events is not None:
                    self._events.append(
                        ev.Acquired(self._ekey(key), now, True, now - rec.idle_since)
                    )
                conn: Any = rec.handle
                if not dropped:
                    return conn, None, NOTHING
            if dropped:
                closes: list[Closing] = []
                # Settled once the key holds its slot, so it stays live;
                # without a connection the key may retire, and the arrival
                # below revives it.
                self._settle_closings(dropped, closes, now)
                decision = Decision((), closes)
                if rec is not None:
                    return conn, None, decision
                ks = self._keys.get(key)
        if not arrive:
            return None, None, decision
        # The arrival: a ticket, granted at once, queued or refused.
        if ks is None:
            ks = self._open_key(key)
        ks.requests += 1
        self._totals[N_REQUESTS] += 1
        if now is None:
            now = self._clock()
        ticket = Ticket(key, next(self._seqs), now)
        if self._closed:
            ticket.state = CLOSED
            self._retire_if_empty(ks)
            return None, ticket, decision
        limit = self._limit
        if not ks.waiting and (
            (limit is None or self._acquired + self._connecting < limit)
            and (ks.limit is None or ks.acquired + ks.connecting < ks.limit)
        ):
            closes = list(decision.close)
            self._grant(ks, ticket, closes, now)
            return None, ticket, Decision((), closes) if closes else NOTHING
        if not block:
            ticket.state = REJECTED
            ks.counts[N_REJECTED] += 1
            self._totals[N_REJECTED] += 1
            if self._events is not None:
                self._events.append(ev.Rejected(self._ekey(key), now))
            self._retire_if_empty(ks)
            return None, ticket, decision
        # Invariant 3 means a free total slot implies no ready key, so a new
        # request cannot overtake anyone by queueing behind its key.
        waiting = enqueue(ks, ticket)
        self._waiting += 1
        if waiting == 1 and positive(ks.room()):
            self._ready.push(ks)
        if self._events is not None:
            self._events.append(ev.Queued(self._ekey(key), now, waiting))
        return None, ticket, decision

    def handed_over(self, ticket: Ticket) -> bool:
        """The request takes the idle connection it was granted.

        Returns False, spending the ticket, if that connection was closed with
        the pool meanwhile: the request must then fail. On True the connection
        has served one more request.
        """
        if ticket.state != GRANTED or ticket.conn is None:
            return False
        ticket.state = DONE
        rec = self._conns.get(ticket.conn)
        if rec is None:
            return False
        rec.served += 1
        return True

    def grant_lost(self, ticket: Ticket, reason: str = "server") -> Decision:
        """The idle connection granted to ``ticket`` cannot serve its request.

        A request woken from the queue runs a loop turn after its grant, and
        the connector checks the connection again when it comes to take it:
        the peer may have closed it meanwhile (``"server"``) or sent bytes
        nobody asked for (``"error"``). It is counted released (``error``: it
        served nothing) and closed for ``reason``, and the ticket's slot is
        filled again: another live idle connection, else a permit to connect.
        The slot never leaves the ticket, so nobody else is woken and the
        request keeps its turn. ``NOTHING`` when the ticket holds no acquired
        connection of the pool (closed with the pool meanwhile: ``handed_over``
        then reports it).
        """
        conn = ticket.conn
        if ticket.state != GRANTED or conn is None:
            return NOTHING
        rec = self._conns.get(conn)
        if rec is None or rec.state != ACQUIRED:
            return NOTHING
        ks = rec.key
        now = self._clock()
        self._count_release(ks, "error", now, rec.acquired_at)
        ks.acquired -= 1
        self._acquired -= 1
        del self._conns[conn]
        rec.state = GONE
        self._count_close(ks, reason, now, rec.created_at, rec.served)
        closes = [Closing(conn, reason, ks.key)]
        # Also restarts a permit's connect time at now.
        self._grant(ks, ticket, closes, now, count_wait=False)
        return Decision((), closes)

    # -------------------------------------------------- connecting

    def connect_succeeded(self, ticket: Ticket, conn: C) -> Decision:
        """A connection opened under ``ticket``'s permit; it is now acquired.

        If the pool closed meanwhile, the ticket becomes ``CLOSED`` and the
        decision closes the new connection.
        """
        ks = self._settle_permit(ticket)
        ks.counts[N_CREATED] += 1
        self._totals[N_CREATED] += 1
        now = self._clock()
        self._observe(ks, CONNECT, now - ticket.granted_at)
        if self._events is not None:
            self._events.append(
                ev.ConnectEnded(self._ekey(ks.key), now, now - ticket.granted_at)
            )
        if self._closed:
            ticket.state = CLOSED
            self._count_release(ks, "connector_closed", now, now)
            self._count_close(ks, "connector_closed", now, now, 0)
            self._retire_if_empty(ks)
            return Decision((), [Closing(conn, "connector_closed", ks.key)])
        ticket.state = DONE
        rec = ConnRecord(conn, ks, now)
        self._conns[conn] = rec
        ks.acquired += 1
        self._acquired += 1
        if self._events is not None:
            self._events.append(ev.Acquired(self._ekey(ks.key), now, False, None))
        return NOTHING

    def connect_failed(self, ticket: Ticket) -> Decision:
        """Opening a connection under ``ticket``'s permit failed or was cancelled."""
        ks = self._settle_permit(ticket)
        ticket.state = DONE
        ks.counts[N_CONNECT_ERRORS] += 1
        self._totals[N_CONNECT_ERRORS] += 1
        now = self._clock()
        self._observe(ks, CONNECT, now - ticket.granted_at)
        if self._events is not None:
            self._events.append(
                ev.ConnectFailed(self._ekey(ks.key), now, now - ticket.granted_at)
            )
        return self._slot_freed(ks, [], now)

    # --------------------------------------------------- the queue

    def time_out(self, ticket: Ticket) -> bool:
        """``ticket`` waited as long as it may. Returns True, counting a wait
        timeout, if it was still queued (it leaves the queue); False if it was
        granted or refused meanwhile, in which case nothing changes."""
        ks = self._keys.get(ticket.key)
        if ks is None or ticket.state != QUEUED:
            return False
        ticket.state = DONE
        ks.counts[N_WAIT_TIMEOUTS] += 1
        self._totals[N_WAIT_TIMEOUTS] += 1
        self._unqueue(ks, ticket, "timed_out")
        return True

    def set_limit(self, key: K, limit: int | None) -> Decision:
        """Change the per-key limit of a live key; raising it wakes waiters."""
        ks = self._keys.get(key)
        if ks is None:
            return NOTHING
        ks.limit = limit
        if ks in self._ready and not positive(ks.room()):
            self._ready.discard(ks)
        return self._slot_freed(ks, [])

    def refresh_limits(self, where: Callable[[K], bool]) -> Decision:
        """Ask ``limit_for`` again for the live keys ``where`` selects (after
        the rules behind it changed); raised limits wake waiters.

        Costs time in the number of live keys: an administrative call, not a
        per-request one.
        """
        wake: list[Ticket] = []
        closes: list[Closing] = []
        for key in [k for k in self._keys if where(k)]:  # type: ignore[arg-type]
            limit = self._limit_for(key)  # type: ignore[arg-type]
            ks = self._keys.get(key)
            if ks is not None and ks.limit != limit:
                decision = self.set_limit(key, limit)  # type: ignore[arg-type]
                wake.extend(decision.wake)
                closes.extend(decision.close)
        return Decision(wake, closes) if wake or closes else NOTHING

    # ---------------------------------------------------- granting

    def _grant(
        self,
        ks: KeyState,
        ticket: Ticket,
        closes: list[Closing],
        now: float,
        handoff: ConnRecord | None = None,
        *,
        count_wait: bool = True,
    ) -> None:
        """Give ``ticket`` a slot of ``ks``: ``handoff`` (a connection of
        ``ks`` released this instant), else an idle connection if a live one
        is left, else permission to connect. ``count_wait=False`` when the
        ticket already holds the slot and only its connection is replaced
        (``grant_lost``): its wait was counted when it was first granted."""
        ticket.state = GRANTED
        ticket.granted_at = now
        if count_wait:
            waited = now - ticket.since
            totals = self._totals
            if waited:  # _observe, inlined: every queued request passes here
                # The bucket by the table (_histogram.BUCKET_BY_MS): no call.
                ms = int(waited * 1000.0)
                if 0 <= ms < BY_MS_END:
                    b = _BUCKET_BY_MS[ms]
                    if b and waited <= _BOUNDS[b - 1]:
                        b -= 1
                else:  # 10 s or more (a long queue): scan from there
                    b = BY_MS_LAST if ms > 0 else 0
                    while waited > _BOUNDS[b]:
                        b += 1
                i = WAIT_AT + b
                ks.counts[i] += 1
                totals[i] += 1
                ks.wait_sum += waited
                totals[WAIT_SUM] += waited
            else:  # served at once (most requests): the first bucket, no search
                ks.served_at_once += 1
                totals[WAIT_AT] += 1
        rec = handoff
        dropped: list[tuple[ConnRecord, str]] = []
        if rec is None and ks.idle:
            rec = self._idle.take(ks, now, dropped)
        if rec is not None:
            ks.acquired += 1
            self._acquired += 1
            ks.reused += 1  # the totals work it out (read_totals)
            ticket.conn = rec.handle
            rec.acquired_at = now
            if self._events is not None:
                self._events.append(
                    ev.Acquired(self._ekey(ks.key), now, True, now - rec.idle_since)
                )
        else:
            max_open = self._max_open
            if max_open is not None:
                # A new socket: make room under the budget by closing the
                # connections idle longest. There are enough of them, since
                # acquired + connecting stays under the budget (self._limit).
                excess = (
                    self._acquired + self._connecting + self._idle.count + 1 - max_open
                )
                if excess > 0:
                    self._idle.evict(excess, dropped, "fd_budget")
            ticket.conn = None
            self._permits[ticket] = None
            ks.connecting += 1
            self._connecting += 1
            if self._events is not None:
                self._events.append(ev.ConnectStarted(self._ekey(ks.key), now))
        if dropped:  # settled once the key holds its slot, so it stays live
            self._settle_closings(dropped, closes, now)

    def _slot_freed(
        self,
        ks: KeyState,
        closes: list[Closing],
        now: float | None = None,
        handoff: ConnRecord | None = None,
    ) -> Decision:
        """A slot of ``ks`` (and of the total) may have been freed: hand the
        free slots to the longest-waiting ready requests.

        ``handoff`` is a keep-alive connection of ``ks`` released this
        instant, not yet idle: if the slot goes to a waiter of ``ks`` it takes
        that connection directly (what the idle store would have given it);
        otherwise it is kept idle at the end.
        """
        # Inlined room checks (KeyState.room, total_room, positive): this
        # runs on every release that someone is waiting for.
        ready_keys = self._ready
        if (
            ks.waiting
            and ks.ready_token < 0
            and (ks.limit is None or ks.acquired + ks.connecting < ks.limit)
        ):
            ready_keys.push(ks)
        wake: list[Ticket] = []
        if now is None and ready_keys.count:
            now = self._clock()
        limit = self._limit
        while ready_keys.count and (
            limit is None or self._acquired + self._connecting < limit
        ):
            assert now is not None
            ready = ready_keys.pop()
            # Serving the first waiter is inlined here and in
            # Releases.release's own-key hand-off (a call per queued request
            # otherwise): change both together.
            ticket = dequeue_first(ready)
            self._waiting -= 1
            if self._events is not None:
                self._events.append(
                    ev.Dequeued(
                        self._ekey(ready.key), now, "served", now - ticket.since
                    )
                )
            # A granted key holds the slot: it cannot retire here.
            if ready is ks and handoff is not None:
                self._grant(ready, ticket, closes, now, handoff)
                handoff = None
            else:
                self._grant(ready, ticket, closes, now)
            wake.append(ticket)
            if ready.waiting and (
                ready.limit is None or ready.acquired + ready.connecting < ready.limit
            ):
                ready_keys.push(ready)
        if handoff is not None:  # the slot went elsewhere: keep it idle
            assert now is not None  # release() passes it with a handoff
            self._keep(ks, handoff, closes, now)
        self._retire_if_empty(ks)
        if wake or closes:
            return Decision(wake, closes)
        return NOTHING

    def _unqueue(self, ks: KeyState, ticket: Ticket, outcome: str) -> None:
        if self._events is not None:
            now = self._clock()
            self._events.append(
                ev.Dequeued(self._ekey(ks.key), now, outcome, now - ticket.since)  # type: ignore[arg-type]
            )
        was_head = ks.first_waiter is ticket
        unlink_waiter(ks, ticket)
        self._waiting -= 1
        if was_head and ks in self._ready:
            self._ready.discard(ks)
            if ks.waiting:
                self._ready.push(ks)
        self._retire_if_empty(ks)

    def _settle_permit(self, ticket: Ticket) -> KeyState:
        ks = self._keys.get(ticket.key)
        if ks is None or ticket not in self._permits:
            raise RuntimeError(f"{ticket!r} holds no permit to connect")
        del self._permits[ticket]
        ks.connecting -= 1
        self._connecting -= 1
        return ks
