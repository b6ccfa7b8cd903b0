"""Releases and hand-off: an acquired connection, or a granted slot, comes back.

:meth:`Releases.release` counts how the acquisition ended, then keeps the
connection idle or closes it; the freed slot goes to the next ready waiter,
and a keep-alive connection whose own key has the first waiter goes straight
to them (the hand-off), without passing through the idle store.
:meth:`Releases.abandon` is the same for a request that gives up its ticket
before using it.
"""

from __future__ import annotations

from typing import Final

from .. import _events as ev
from .._histogram import BOUNDS, BUCKET_BY_MS, BY_MS_END, BY_MS_LAST
from .bookkeeping import EOF, HOLD_AT, HOLD_SUM
from .counters import RELEASED_INDEX
from .grants import Grants
from .records import (
    ACQUIRED,
    DONE,
    GONE,
    GRANTED,
    NOTHING,
    QUEUED,
    Closing,
    ConnRecord,
    Decision,
    Ticket,
    dequeue_first,
)
from .view import C, G, K

__all__ = ["Releases"]

# Final: the compiled core (setup.py) reads these as C statics, not by name.
_BOUNDS: Final = BOUNDS
_BUCKET_BY_MS: Final = BUCKET_BY_MS
_RELEASED_INDEX: Final = RELEASED_INDEX


class Releases(Grants[K, C, G]):
    """Releases, hand-off and abandoned tickets (see the module docstring)."""

    def release(
        self,
        conn: C,
        how: str,
        close_reason: str | None,
        alive: bool = False,
        record: ConnRecord | None = None,
    ) -> Decision | None:
        """An acquired connection comes back.

        ``how`` names how the acquisition ended (``"eof"``, ``"release"``...).
        ``close_reason`` is ``None`` to keep the connection alive, else why it
        must be closed. ``alive=True`` says the caller has just found ``conn``
        alive (the connector's release checks its socket), so ``is_alive`` is
        not asked again before it goes straight to a waiter. ``record`` is
        ``conn``'s record (:meth:`record_of`), if the caller kept it: it spares
        the lookup (a record that left the pool is ``GONE``). Returns ``None``
        when ``conn`` is not an acquired connection of this pool (already
        closed with the pool, or never ours): the caller should then just
        close it.
        """
        rec = self._conns.get(conn) if record is None else record
        if rec is None or rec.state != ACQUIRED:
            return None
        ks = rec.key
        now = self._clock()
        # _count_release, inlined: every request passes here.
        counts, totals = ks.counts, self._totals
        i = _RELEASED_INDEX[how]
        if i == EOF:  # a field of its own; the totals work it out (read_totals)
            ks.released_eof += 1
        else:
            counts[i] += 1
            totals[i] += 1
        held = now - rec.acquired_at
        # The bucket by the table (_histogram.BUCKET_BY_MS), inlined: no call.
        ms = int(held * 1000.0)
        if 0 <= ms < BY_MS_END:
            b = _BUCKET_BY_MS[ms]
            if b and held <= _BOUNDS[b - 1]:
                b -= 1
        else:  # 10 s or more (or a clock gone back): scan from there
            b = BY_MS_LAST if ms > 0 else 0
            while held > _BOUNDS[b]:
                b += 1
        i = HOLD_AT + b
        counts[i] += 1
        totals[i] += 1
        ks.hold_sum += held
        totals[HOLD_SUM] += held
        if self._events is not None:
            self._events.append(ev.Released(self._ekey(ks.key), now, how, held))
        ks.acquired -= 1
        self._acquired -= 1
        if (
            close_reason is None
            and ks.waiting
            and not ks.idle
            and self._idle.plain
            and (alive or self._idle.is_alive(conn))
        ):
            # Someone of this key waits and the idle store would keep the
            # connection (it keeps everything, and the key has no other idle
            # connection to prefer): it goes straight to a waiter of its key,
            # if no other key's waiter can be first in line.
            ready = self._ready.count
            limit = self._limit
            sole = ready == 1 and ks.ready_token >= 0
            if (
                (not ready or sole)
                and (ks.limit is None or ks.acquired + ks.connecting < ks.limit)
                and (limit is None or self._acquired + self._connecting < limit)
            ):
                # No other key is ready, so this one's first waiter is first
                # in line for the slot this release frees: it takes the
                # connection at once, without passing through the ready
                # queue (which _slot_freed would pop this key from and push
                # it into again). Nobody else can move: the pool is as full
                # as before and no other key is ready. When this key was the
                # ready one (held back by the total limit), its entry is
                # re-keyed to its new first waiter, or dropped. Serving the
                # first waiter, as _slot_freed's loop does it (inlined in
                # both: change both together).
                closes: list[Closing] = []
                ticket = dequeue_first(ks)
                self._waiting -= 1
                if self._events is not None:
                    self._events.append(
                        ev.Dequeued(
                            self._ekey(ks.key), now, "served", now - ticket.since
                        )
                    )
                rec.idle_since = now
                self._grant(ks, ticket, closes, now, rec)
                if sole:
                    if ks.waiting:
                        # Still ready (the slot it took was its own), under
                        # a first waiter that left: re-keyed when it matters
                        # (ReadyQueue.moved).
                        self._ready.moved = ks
                    else:
                        self._ready.discard(ks)
                return Decision((ticket,), closes)
            if not ready or (ready == 1 and ks.ready_token >= 0):
                rec.idle_since = now
                return self._slot_freed(ks, [], now, rec)
        if close_reason is None:
            dropped = self._idle.put(ks, rec, now)  # _keep, inlined: hot
            if dropped is None and not ks.waiting and not self._ready.count:
                # The common case, kept idle with nobody waiting: the key
                # holds that connection (no retiring) and nobody can be
                # woken. No list allocated for closings on the way here.
                return NOTHING
            closes = []
            if dropped is not None:
                self._settle_closings(dropped, closes, now)
        else:
            closes = []
            del self._conns[conn]
            rec.state = GONE
            self._count_close(ks, close_reason, now, rec.created_at, rec.served)
            closes.append(Closing(conn, close_reason, ks.key))
        return self._slot_freed(ks, closes, now)

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
