"""The accounting core: a pure, synchronous model of a keyed connection pool.

Theory of operation
-------------------
This module knows nothing of sockets, aiohttp or the event loop. The connector
reports *events* to it (a request arrives, a connection was created or failed,
a connection is released, a waiter gave up, the peer closed an idle socket,
time passed, the pool closes) and the core answers with a :class:`Decision`:
the waiters to wake and the connections to close. The connector carries those
out. Every state change happens inside one method call, with no ``await``, so
no other task can observe a half-updated pool.

A *connection* is in one of two states, per key:

* ``acquired`` -- handed to a request; counts against the limits;
* ``idle``     -- kept alive in the pool; does *not* count against the limits
  (as in aiohttp), but is reused before anything new is created.

A *ticket* is one request's claim on the pool:

* ``QUEUED``  -- waiting in its key's FIFO queue;
* ``GRANTED`` -- holds a slot: ``ticket.conn`` is an idle connection handed
  over (now acquired), or ``None``: permission to open a new connection, which
  counts as ``connecting`` until :meth:`PoolCore.connect_succeeded` or
  :meth:`PoolCore.connect_failed`;
* ``DONE``    -- finished (taken by its request, resolved, abandoned or
  timed out);
* ``REJECTED`` -- refused at once: it would have had to wait, and the request
  asked not to (``block=False``);
* ``CLOSED``  -- refused because the pool closed while it waited.

Which idle connections are kept, reused first, or closed (keep-alive, age,
use count, idle caps, host LRU) is the idle store's policy: see ``_idle``.

Invariants (checked by the hypothesis state machine in the tests):

1. ``acquired + connecting <= limit`` in total and per key, always, including
   when an idle connection is reused.
2. Per-key gauges add up to the totals; per-key counters plus the counters of
   forgotten keys add up to the total counters.
3. No waiter waits while a slot it may take is free: for every key with
   waiters, the key has no room or the total has no room.
4. ``created + reused == sum(released) + acquired``: every acquisition ends
   exactly once.

Scheduling is FIFO within a key. Across keys, a freed slot goes to the
longest-waiting request among the keys that have per-key room. To find it
without scanning, the core keeps only the *ready* keys -- those whose first
waiter could run if the total limit allowed it -- in a heap ordered by that
waiter's arrival number. Every event touches one key plus, per slot it frees,
one heap pop: O(log k) in the number of ready keys and O(1) in the number of
waiters. Stale heap entries (a key whose head changed) are skipped lazily and
compacted away when they outnumber the live ones.

Every duration the pool sees (queue wait, connect, hold, lifetime) goes into
fixed-bucket histograms per key and in total (``_histogram``). When someone
observes (:meth:`PoolCore.observe`), each step is also appended to a list of
:mod:`~aioconnpool._events` that the connector delivers once the call has
returned, so that a listener always sees a consistent pool.

Keys that hold nothing leave no state behind: their counters move to a bounded
history so that ``stats()`` can still report recently drained hosts, and the
oldest history entries are folded into one ``forgotten`` aggregate.

This module holds the events; every read (gauges, figures, records) is in the
base class :class:`~aioconnpool._view.PoolView`.
"""

from __future__ import annotations

import itertools
import time
from bisect import bisect_left
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from .. import _events as ev
from .._histogram import BOUNDS, BUCKETS
from .counters import (
    CLOSED_INDEX,
    HISTOGRAMS_AT,
    N_CONNECT_ERRORS,
    N_CREATED,
    N_REJECTED,
    N_REQUESTS,
    N_REUSED,
    N_WAIT_TIMEOUTS,
    RELEASED_INDEX,
    SUMS_AT,
    Counters,
    bucket_index,
)
from .history import KeyHistory
from .idle import IdleStore
from .ready import ReadyQueue
from .records import (
    ACQUIRED,
    CLOSED,
    DONE,
    GRANTED,
    IDLE,
    NO_WAITERS,
    NOTHING,
    QUEUED,
    REJECTED,
    Closing,
    ConnRecord,
    Decision,
    KeyFigures,
    KeyState,
    Ticket,
    positive,
)
from .view import PoolView

__all__ = [
    "CLOSED",
    "DONE",
    "GRANTED",
    "NOTHING",
    "QUEUED",
    "REJECTED",
    "Closing",
    "ConnRecord",
    "Decision",
    "KeyFigures",
    "PoolCore",
    "Ticket",
]

# Histogram numbers, in the order of _histogram.DURATIONS.
WAIT, CONNECT, HOLD, LIFETIME = range(4)

K = TypeVar("K", bound=Hashable)
C = TypeVar("C", bound=Hashable)
G = TypeVar("G", bound=Hashable)


class PoolCore(PoolView[K, C, G]):
    """Pure bookkeeping of a keyed connection pool; see the module docstring.

    ``limit`` and the values returned by ``limit_for`` are ``None`` for
    "unlimited". ``group`` maps a full key to the coarser key stats are grouped
    by. ``is_alive`` is asked before an idle connection is handed out. The
    idle policy options are those of :class:`~aioconnpool._idle.IdleStore`;
    ``reuse`` is ``"fifo"`` or ``"lifo"``.
    """

    def __init__(
        self,
        *,
        limit: int | None,
        limit_for: Callable[[K], int | None],
        group: Callable[[K], G],
        keepalive_timeout: float | None,
        is_alive: Callable[[C], bool] = lambda conn: True,
        clock: Callable[[], float] = time.monotonic,
        history: int = 10_000,
        max_age: float | None = None,
        max_requests: int | None = None,
        max_idle_per_key: int | None = None,
        max_idle: int | None = None,
        max_idle_keys: int | None = None,
        reuse: str = "fifo",
    ) -> None:
        if reuse not in ("fifo", "lifo"):
            raise ValueError(f"reuse must be 'fifo' or 'lifo', got {reuse!r}")
        self._limit = limit
        self._limit_for = limit_for
        self._group = group
        self._clock = clock

        self._keys: dict[Hashable, KeyState] = {}
        self._conns: dict[Hashable, ConnRecord] = {}
        self._idle = IdleStore(
            keepalive=keepalive_timeout,
            is_alive=is_alive,  # type: ignore[arg-type]
            max_age=max_age,
            max_requests=max_requests,
            max_per_key=max_idle_per_key,
            max_total=max_idle,
            max_keys=max_idle_keys,
            lifo=reuse == "lifo",
        )
        self._acquired = 0
        self._connecting = 0
        self._waiting = 0
        # Tickets holding a permit to connect, for the whole pool: a key only
        # counts its own (see KeyState).
        self._permits: dict[Ticket, None] = {}

        self._ready = ReadyQueue()
        self._seqs = itertools.count()

        self._totals = Counters()
        self._history = KeyHistory(history, group)  # type: ignore[arg-type]
        self._closed = False
        self._events: list[ev.PoolEvent] | None = None

    def observe(self, sink: list[ev.PoolEvent] | None) -> None:
        """Append an event for every step to ``sink`` from now on (``None``:
        stop). The caller empties it; events carry ``group(key)`` as key."""
        self._events = sink

    # ------------------------------------------------------------------ events

    def arrive(self, key: K, *, block: bool = True) -> tuple[Ticket, Decision]:
        """A request for ``key`` arrives. Granted at once, or queued; with
        ``block=False`` a request that would have to wait is ``REJECTED``."""
        ks = self._keys.get(key)
        if ks is None:
            ks = self._open_key(key)
        ks.counts[N_REQUESTS] += 1
        self._totals.n[N_REQUESTS] += 1
        now = self._clock()
        ticket = Ticket(key, next(self._seqs), now)
        if self._closed:
            ticket.state = CLOSED
            self._retire_if_empty(ks)
            return ticket, NOTHING
        limit = self._limit
        if not ks.waiters and (
            (limit is None or self._acquired + self._connecting < limit)
            and (ks.limit is None or ks.acquired + ks.connecting < ks.limit)
        ):
            closes: list[Closing] = []
            self._grant(ks, ticket, closes, now)
            return ticket, Decision((), closes) if closes else NOTHING
        if not block:
            ticket.state = REJECTED
            ks.counts[N_REJECTED] += 1
            self._totals.n[N_REJECTED] += 1
            if self._events is not None:
                self._events.append(ev.Rejected(self._ekey(key), now))
            self._retire_if_empty(ks)
            return ticket, NOTHING
        # Invariant 3 means a free total slot implies no ready key, so a new
        # request cannot overtake anyone by queueing behind its key.
        waiters = ks.own_waiters()
        waiters[ticket] = None
        self._waiting += 1
        if len(waiters) == 1 and positive(ks.room()):
            self._ready.push(ks)
        if self._events is not None:
            self._events.append(ev.Queued(self._ekey(key), now, len(waiters)))
        return ticket, NOTHING

    def reuse(self, key: K) -> tuple[C | None, Decision]:
        """A request for ``key``, served at once by an idle connection if one
        is free and the limits allow it: a keep-alive client's hot path, with
        no ticket.

        Returns the connection, now acquired (it has served one more request),
        or ``None``: nothing was counted, and the request must :meth:`arrive`.
        Either way the decision closes the idle connections found unusable on
        the way (expired, too old, dead).
        """
        ks = self._keys.get(key)
        if ks is None or not ks.idle or ks.waiters or self._closed:
            return None, NOTHING
        limit = self._limit
        if not (
            (limit is None or self._acquired + self._connecting < limit)
            and (ks.limit is None or ks.acquired + ks.connecting < ks.limit)
        ):
            return None, NOTHING
        now = self._clock()
        dropped: list[tuple[ConnRecord, str]] = []
        rec = self._idle.take(ks, now, dropped)
        if rec is not None:  # as arrive + _grant + handed_over would count it
            counts, totals = ks.counts, self._totals.n
            counts[N_REQUESTS] += 1
            totals[N_REQUESTS] += 1
            counts[HISTOGRAMS_AT + WAIT * BUCKETS] += 1  # served at once
            totals[HISTOGRAMS_AT + WAIT * BUCKETS] += 1
            counts[N_REUSED] += 1
            totals[N_REUSED] += 1
            ks.acquired += 1
            self._acquired += 1
            rec.acquired_at = now
            rec.served += 1
            if self._events is not None:
                self._events.append(
                    ev.Acquired(self._ekey(key), now, True, now - rec.idle_since)
                )
        conn: Any = rec.handle if rec is not None else None
        if not dropped:
            return conn, NOTHING
        closes: list[Closing] = []
        # Settled once the key holds its slot, so it stays live; without a
        # connection the key may retire, and arrive() revives it.
        self._settle_closings(dropped, closes, now)
        return conn, Decision((), closes)

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
        self._count_close(ks, reason, now, rec.created_at, rec.served)
        closes = [Closing(conn, reason, ks.key)]
        # Also restarts a permit's connect time at now.
        self._grant(ks, ticket, closes, now, count_wait=False)
        return Decision((), closes)

    def connect_succeeded(self, ticket: Ticket, conn: C) -> Decision:
        """A connection opened under ``ticket``'s permit; it is now acquired.

        If the pool closed meanwhile, the ticket becomes ``CLOSED`` and the
        decision closes the new connection.
        """
        ks = self._settle_permit(ticket)
        ks.counts[N_CREATED] += 1
        self._totals.n[N_CREATED] += 1
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
        self._totals.n[N_CONNECT_ERRORS] += 1
        now = self._clock()
        self._observe(ks, CONNECT, now - ticket.granted_at)
        if self._events is not None:
            self._events.append(
                ev.ConnectFailed(self._ekey(ks.key), now, now - ticket.granted_at)
            )
        return self._slot_freed(ks, [], now)

    def abandon(self, ticket: Ticket, how: str = "cancelled") -> Decision:
        """The request behind ``ticket`` gave up (cancelled, timed out, failed).

        Queued: it leaves the queue without a trace. Granted: the slot, and the
        idle connection if one was handed over, go back to the pool. Idempotent.
        """
        ks = self._keys.get(ticket.key)
        state = ticket.state
        if ks is None or state not in (QUEUED, GRANTED):
            return NOTHING
        ticket.state = DONE
        if state == QUEUED:
            self._unqueue(ks, ticket, "cancelled")
            return NOTHING
        if ticket.conn is None:  # an unused permit to connect
            del self._permits[ticket]
            ks.connecting -= 1
            self._connecting -= 1
            return self._slot_freed(ks, [])
        rec = self._conns.get(ticket.conn)
        if rec is None or rec.state != ACQUIRED:
            return NOTHING  # closed (and counted) with the pool meanwhile
        now = self._clock()
        self._count_release(ks, how, now, rec.acquired_at)
        ks.acquired -= 1
        self._acquired -= 1
        closes: list[Closing] = []
        self._keep(ks, rec, closes, now)
        return self._slot_freed(ks, closes, now)

    def time_out(self, ticket: Ticket) -> bool:
        """``ticket`` waited as long as it may. Returns True, counting a wait
        timeout, if it was still queued (it leaves the queue); False if it was
        granted or refused meanwhile, in which case nothing changes."""
        ks = self._keys.get(ticket.key)
        if ks is None or ticket.state != QUEUED:
            return False
        ticket.state = DONE
        ks.counts[N_WAIT_TIMEOUTS] += 1
        self._totals.n[N_WAIT_TIMEOUTS] += 1
        self._unqueue(ks, ticket, "timed_out")
        return True

    def release(self, conn: C, how: str, close_reason: str | None) -> Decision | None:
        """An acquired connection comes back.

        ``how`` names how the acquisition ended (``"eof"``, ``"release"``...).
        ``close_reason`` is ``None`` to keep the connection alive, else why it
        must be closed. Returns ``None`` when ``conn`` is not an acquired
        connection of this pool (already closed with the pool, or never ours):
        the caller should then just close it.
        """
        rec = self._conns.get(conn)
        if rec is None or rec.state != ACQUIRED:
            return None
        ks = rec.key
        now = self._clock()
        self._count_release(ks, how, now, rec.acquired_at)
        ks.acquired -= 1
        self._acquired -= 1
        closes: list[Closing] = []
        ready = self._ready.count
        if (
            close_reason is None
            and ks.waiters
            and (not ready or (ready == 1 and ks.ready_token >= 0))
            and not ks.idle
            and self._idle.plain
            and self._idle.is_alive(conn)
        ):
            # Someone of this key waits, and no other key's waiter can be
            # first in line: the connection goes straight to them, as the
            # idle store would give it (it keeps everything, and the key has
            # no other idle connection to prefer).
            rec.idle_since = now
            return self._slot_freed(ks, closes, now, rec)
        if close_reason is None:
            dropped: list[tuple[ConnRecord, str]] = []  # _keep, inlined: hot
            self._idle.put(ks, rec, now, dropped)
            if dropped:
                self._settle_closings(dropped, closes, now)
            elif not ks.waiters and not self._ready.count:
                # The common case, kept idle with nobody waiting: the key
                # holds that connection (no retiring) and nobody can be woken.
                return NOTHING
        else:
            del self._conns[conn]
            self._count_close(ks, close_reason, now, rec.created_at, rec.served)
            closes.append(Closing(conn, close_reason, ks.key))
        return self._slot_freed(ks, closes, now)

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
            closes.append(Closing(rec.handle, "connector_closed", ks.key))
        for ks in list(self._keys.values()):
            for ticket in ks.waiters:
                ticket.state = CLOSED
                wake.append(ticket)
                if self._events is not None:
                    self._events.append(
                        ev.Dequeued(
                            self._ekey(ks.key), now, "closed", now - ticket.since
                        )
                    )
            self._waiting -= len(ks.waiters)
            ks.waiters = NO_WAITERS
            self._retire_if_empty(ks)
        self._ready.clear()
        return Decision(wake, closes)

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

    # ------------------------------------------------------------ internals

    def _open_key(self, key: K) -> KeyState:
        counters = self._history.revive(key)
        ks = KeyState(key, self._limit_for(key), counters)
        self._keys[key] = ks
        return ks

    def _retire_if_empty(self, ks: KeyState) -> None:
        if not ks.is_empty() or self._keys.get(ks.key) is not ks:
            return
        del self._keys[ks.key]
        self._history.retire(ks.key, ks.counts)

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
            if waited:
                self._observe(ks, WAIT, waited)
            else:  # served at once (most requests): the first bucket, no search
                ks.counts[HISTOGRAMS_AT + WAIT * BUCKETS] += 1
                self._totals.n[HISTOGRAMS_AT + WAIT * BUCKETS] += 1
        rec = handoff
        dropped: list[tuple[ConnRecord, str]] = []
        if rec is None and ks.idle:
            rec = self._idle.take(ks, now, dropped)
        if rec is not None:
            ks.acquired += 1
            self._acquired += 1
            ks.counts[N_REUSED] += 1
            self._totals.n[N_REUSED] += 1
            ticket.conn = rec.handle
            rec.acquired_at = now
            if self._events is not None:
                self._events.append(
                    ev.Acquired(self._ekey(ks.key), now, True, now - rec.idle_since)
                )
        else:
            ticket.conn = None
            self._permits[ticket] = None
            ks.connecting += 1
            self._connecting += 1
            if self._events is not None:
                self._events.append(ev.ConnectStarted(self._ekey(ks.key), now))
        if dropped:  # settled once the key holds its slot, so it stays live
            self._settle_closings(dropped, closes, now)

    def _keep(
        self, ks: KeyState, rec: ConnRecord, closes: list[Closing], now: float
    ) -> None:
        """``rec`` comes back keep-alive: idle it, unless the idle policy
        closes it (or others) instead."""
        dropped: list[tuple[ConnRecord, str]] = []
        self._idle.put(ks, rec, now, dropped)
        if dropped:
            self._settle_closings(dropped, closes, now)

    def _settle_closings(
        self, dropped: list[tuple[ConnRecord, str]], closes: list[Closing], now: float
    ) -> None:
        """Forget and count connections the idle store closed; keys left
        with nothing retire."""
        for rec, reason in dropped:
            ks = rec.key
            del self._conns[rec.handle]
            self._count_close(ks, reason, now, rec.created_at, rec.served)
            closes.append(Closing(rec.handle, reason, ks.key))
        # Only once every closing is counted: a retired key's counters are
        # folded into the history and must not change afterwards.
        for rec, _reason in dropped:
            self._retire_if_empty(rec.key)

    def _unqueue(self, ks: KeyState, ticket: Ticket, outcome: str) -> None:
        if self._events is not None:
            now = self._clock()
            self._events.append(
                ev.Dequeued(self._ekey(ks.key), now, outcome, now - ticket.since)  # type: ignore[arg-type]
            )
        waiters = ks.waiters
        was_head = next(iter(waiters)) is ticket
        del waiters[ticket]
        self._waiting -= 1
        if not waiters:
            ks.waiters = NO_WAITERS
        if was_head and ks in self._ready:
            self._ready.discard(ks)
            if waiters:
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

    def _count_release(self, ks: KeyState, how: str, now: float, since: float) -> None:
        """An acquisition (held since ``since``) ended ``how``."""
        counts, totals = ks.counts, self._totals.n
        i = RELEASED_INDEX[how]
        counts[i] += 1
        totals[i] += 1
        held = now - since
        # bucket_index, inlined: hot
        i = HISTOGRAMS_AT + HOLD * BUCKETS + bisect_left(BOUNDS, held)
        counts[i] += 1
        totals[i] += 1
        counts[SUMS_AT + HOLD] += held
        totals[SUMS_AT + HOLD] += held
        if self._events is not None:
            self._events.append(ev.Released(self._ekey(ks.key), now, how, now - since))

    def _count_close(
        self, ks: KeyState, reason: str, now: float, born: float, served: int
    ) -> None:
        """A connection (created at ``born``) was closed for ``reason``."""
        i = CLOSED_INDEX[reason]
        ks.counts[i] += 1
        self._totals.n[i] += 1
        self._observe(ks, LIFETIME, now - born)
        if self._events is not None:
            self._events.append(
                ev.Closed(self._ekey(ks.key), now, reason, now - born, served)
            )

    def _ekey(self, key: Hashable) -> Any:
        """An event's key: the group (``PoolKey`` in the connector)."""
        return self._group(key)  # type: ignore[arg-type]

    def _observe(self, ks: KeyState, which: int, seconds: float) -> None:
        i = bucket_index(which, seconds)  # one lookup for the key and the totals
        counts, totals = ks.counts, self._totals.n
        counts[i] += 1
        counts[SUMS_AT + which] += seconds
        totals[i] += 1
        totals[SUMS_AT + which] += seconds

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
            ks.waiters
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
            ticket = ready.waiters.popitem(last=False)[0]
            if not ready.waiters:
                ready.waiters = NO_WAITERS
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
            if ready.waiters and (
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
