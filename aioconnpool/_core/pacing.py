"""Per-host pacing: when each request to a host may start.

Theory of operation
-------------------
A host is *paced* when it has a delay (``delay_per_host``, ``host_delays``)
or while it is *paused* (a server asked the client to back off). Pacing sits
in front of the pool: a request waiting on pacing holds no slot of any limit,
so other hosts go ahead. This class is pure: the caller passes ``now`` into
every call (it never reads a clock) and arms one timer for :meth:`next_due`;
each call returns the tickets it let go, which the caller then wakes.

A request arrives (:meth:`arrive`) and gets a :class:`PaceTicket` whose
``start`` is decided then, once, in arrival order: the host's previous
planned start plus a gap (the delay, jittered by ``jitter``: a gap is drawn
uniformly from ``delay * [1 - jitter, 1 + jitter]``, Scrapy's
``RANDOMIZE_DOWNLOAD_DELAY`` with ``jitter=0.5``), and never before a pause
ends. A ticket whose start would fall after its ``deadline`` is ``LATE`` at
once: it never waits for a start it cannot live to see.

A ticket is in one of these states:

* ``WAITING`` -- queued for its host, FIFO by arrival number (``seq``);
* ``GO``      -- let go: the request is on its way through the pool;
* ``DONE``    -- it started (or failed, or gave up);
* ``LATE``    -- refused: its start falls after its deadline;
* ``CLOSED``  -- refused: the pacer closed while it waited.

The start decided at arrival is the earliest one. Two more rules keep the
promise of "at least the gap between two starts" when the pool, not pacing,
made a request wait: a paced host has one request at a time between pacing
and its connection (``in_flight``), and the next one goes no sooner than the
gap after the previous one really started (:meth:`ended`). So the queue head
goes at ``max(start, last_start + gap, paused_until)``, once nothing of its
host is in flight. A host with no delay that is paused lets its requests go
all at once when the pause ends, in their order.

Timers: every host with a head to let go, a pause to end or a quiet period
to forget has one live entry in one heap of ``(time, token, host)``; stale
entries (a host rescheduled) are skipped when popped and compacted when they
outnumber live ones. Each request costs O(log n) in the number of paced
hosts, whatever their number. A host that is quiet for longer than its gap
(nothing queued or in flight, no pause) is forgotten.

Invariants (checked by the state machine in ``tests/test_pacing_core.py``):

1. ``waiting`` is the number of ``WAITING`` tickets, in total and per host.
2. A host with waiting tickets and nothing in flight has a live heap entry
   no later than its head's due time: nobody waits past its start.
3. Two starts of one host are at least the later one's gap apart.
4. Within a host, tickets go in ``seq`` order.
"""

from __future__ import annotations

import heapq
import itertools
import random as _random
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, NamedTuple, TypeVar

from .. import _events as ev

__all__ = [
    "CLOSED",
    "DONE",
    "GO",
    "LATE",
    "WAITING",
    "HostPace",
    "PaceFigures",
    "PaceTicket",
    "Pacer",
]

K = TypeVar("K", bound=Hashable)

WAITING = "waiting"
GO = "go"
DONE = "done"
LATE = "late"
CLOSED = "closed"

_NEVER = float("-inf")


class PaceTicket:
    """One request's place in its host's pacing queue."""

    __slots__ = (
        "deadline",
        "gap",
        "key",
        "released_at",
        "seq",
        "since",
        "start",
        "state",
        "token",
    )

    def __init__(
        self,
        key: Hashable,
        seq: int,
        since: float,
        start: float,
        *,
        gap: float,
        deadline: float | None,
    ) -> None:
        self.key = key
        self.seq = seq
        self.since = since
        self.start = start
        self.gap = gap
        self.deadline = deadline
        self.state = WAITING
        self.released_at = since
        self.token: object = None  # the caller's own handle (a Future)

    def __lt__(self, other: PaceTicket) -> bool:
        # The host queue is a heap of tickets: by arrival number, so that a
        # retried request keeping its first number goes back to its place.
        return self.seq < other.seq

    def __repr__(self) -> str:
        return f"<PaceTicket #{self.seq} {self.state} start={self.start:.3f}>"


class HostPace:
    """One paced host: its delay, its queue, its last starts and its pause."""

    __slots__ = (
        "delay",
        "in_flight",
        "key",
        "last_planned",
        "last_start",
        "pause_reason",
        "paused_until",
        "queue",
        "token",
        "waiting",
        "when",
    )

    def __init__(self, key: Hashable, delay: float) -> None:
        self.key = key
        self.delay = delay
        self.queue: list[PaceTicket] = []  # a heap by seq; gone tickets linger
        self.waiting = 0
        self.in_flight = 0
        self.last_planned = _NEVER  # the start decided for the latest arrival
        self.last_start = _NEVER  # when the latest request really started
        self.paused_until: float | None = None
        self.pause_reason: str | None = None
        self.token = -1  # the token of its live heap entry, -1 for none
        self.when = 0.0  # the time of that entry


class PaceFigures(NamedTuple):
    """What ``stats()`` shows of one host's pacing."""

    delay: float
    next_start: float | None
    waiting: int
    paused_until: float | None
    pause_reason: str | None


class Pacer(Generic[K]):
    """Per-host start times, with one timer heap (see the module docstring).

    ``delay_for(key)`` gives a host's delay in seconds (0: not paced);
    ``jitter`` is the fraction in [0, 1] by which gaps vary; ``random`` draws
    from [0, 1) (pass a seeded one for repeatable tests).
    """

    def __init__(
        self,
        *,
        delay_for: Callable[[K], float],
        jitter: float = 0.0,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be within [0, 1], got {jitter!r}")
        self._delay_for = delay_for
        self._jitter = jitter
        self._random = random
        self._hosts: dict[Hashable, HostPace] = {}
        self._heap: list[tuple[float, int, HostPace]] = []
        self._live = 0
        self._tokens = itertools.count()
        self._seqs = itertools.count()
        self._closed = False
        self.waiting = 0
        """Tickets waiting on pacing, all hosts."""
        self.paced = 0
        """Requests that had to wait on pacing (a counter)."""
        self.late = 0
        """Requests refused because their start fell after their deadline."""
        self.pauses = 0
        """Pauses asked for (a counter)."""
        self._events: list[ev.PoolEvent] | None = None

    def observe(self, sink: list[ev.PoolEvent] | None) -> None:
        """Append an event for every step to ``sink`` (``None``: stop)."""
        self._events = sink

    # ------------------------------------------------------------ events

    def arrive(
        self,
        key: K,
        now: float,
        deadline: float | None = None,
        seq: int | None = None,
        *,
        retry: bool = False,
    ) -> tuple[PaceTicket | None, list[PaceTicket]]:
        """A request for ``key`` arrives at ``now``.

        Returns ``(None, [])`` when the host is not paced: the request goes
        on, and nothing is to be reported back. Otherwise a ticket: ``GO``
        (go now; report :meth:`ended`), ``WAITING`` (wait to be let go), or
        ``LATE`` (its start, ``ticket.start``, falls after ``deadline``).
        ``seq`` is the request's place in its host's queue, taken earlier with
        :meth:`take_seq` (default: a new one, the back of the queue); with
        ``retry=True`` the request was sent before and comes back: it keeps
        that place and plans no new gap of its own. The list holds other
        tickets let go on the way.
        """
        hs = self._hosts.get(key)
        if hs is None:
            delay = self._delay_for(key)
            if not delay or self._closed:
                return None, []
            hs = self._hosts[key] = HostPace(key, delay)
        gap = self._gap(hs.delay)
        if seq is None:
            seq = next(self._seqs)
        start = now if retry else max(now, hs.last_planned + gap)
        if hs.paused_until is not None and start < hs.paused_until:
            start = hs.paused_until
        ticket = PaceTicket(key, seq, now, start, gap=gap, deadline=deadline)
        released: list[PaceTicket] = []
        if deadline is not None and start > deadline:
            self._refuse_late(ticket, now)
            self._advance(hs, now, released)  # forgets a host it just opened
            return ticket, released
        if not retry:
            hs.last_planned = start
        if (
            not hs.waiting
            and not (gap and hs.in_flight)
            and self._due_of(hs, ticket) <= now
        ):
            # Nothing ahead and its time has come: it goes, never queued.
            ticket.state = GO
            ticket.released_at = now
            hs.in_flight += 1
            return ticket, released
        heapq.heappush(hs.queue, ticket)
        hs.waiting += 1
        self.waiting += 1
        self.paced += 1
        if self._events is not None:
            self._events.append(ev.PacingQueued(key, now, start, hs.waiting))  # type: ignore[arg-type]
        self._advance(hs, now, released)
        if ticket in released:  # a timer not run yet let it go with the rest
            released.remove(ticket)
        return ticket, released

    def take_seq(self) -> int:
        """A place in line, for a request to :meth:`arrive` with later (its
        retries keep it)."""
        return next(self._seqs)

    def ended(self, ticket: PaceTicket, now: float, *, sent: bool) -> list[PaceTicket]:
        """A ticket let go (``GO``) got its connection (``sent``) or failed
        before that. The host's next start counts from ``now`` if it was
        sent, else from when the ticket was let go. Returns the tickets this
        lets go."""
        if ticket.state != GO:
            return []
        ticket.state = DONE
        hs = self._hosts[ticket.key]
        hs.in_flight -= 1
        started = now if sent else ticket.released_at
        hs.last_start = max(hs.last_start, started)
        released: list[PaceTicket] = []
        self._advance(hs, now, released)
        return released

    def refused_late(self, ticket: PaceTicket, now: float, start: float) -> None:
        """A ticket let go (``GO``) was refused further on: a start decided
        elsewhere (a fleet-wide one) falls at ``start``, after its deadline.
        Counted and reported as late; the caller then reports it
        :meth:`ended` unsent."""
        ticket.start = start
        self.late += 1
        if self._events is not None:
            self._events.append(
                ev.PacingLate(ticket.key, now, start, ticket.deadline)  # type: ignore[arg-type]
            )

    def cancel(self, ticket: PaceTicket, now: float) -> list[PaceTicket]:
        """The request behind ``ticket`` gave up (cancelled, timed out).
        Idempotent; a ticket already let go ends unsent. Returns the tickets
        this lets go."""
        if ticket.state == GO:
            return self.ended(ticket, now, sent=False)
        if ticket.state != WAITING:
            return []
        ticket.state = DONE
        hs = self._hosts[ticket.key]
        hs.waiting -= 1
        self.waiting -= 1
        if self._events is not None:
            self._events.append(
                ev.PacingDequeued(ticket.key, now, "cancelled", now - ticket.since)  # type: ignore[arg-type]
            )
        released: list[PaceTicket] = []
        self._advance(hs, now, released)
        return released

    def due(self, now: float) -> list[PaceTicket]:
        """Time passed: let go every ticket whose time has come."""
        released: list[PaceTicket] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _when, token, hs = heapq.heappop(heap)
            if hs.token != token:
                continue
            hs.token = -1
            self._live -= 1
            self._advance(hs, now, released)
        return released

    def pause(
        self, key: K, until: float, reason: str, now: float
    ) -> tuple[list[PaceTicket], list[PaceTicket]]:
        """Pause ``key`` until ``until`` (a later pause wins): its waiting and
        future requests start no sooner. Returns ``(released, late)``: the
        waiting tickets whose start now falls after their deadline are
        ``LATE`` and leave the queue."""
        hs = self._hosts.get(key)
        if hs is None:
            if self._closed:
                return [], []
            hs = self._hosts[key] = HostPace(key, self._delay_for(key))
        if hs.paused_until is None or until > hs.paused_until:
            hs.paused_until = until
            hs.pause_reason = reason
        self.pauses += 1
        if self._events is not None:
            self._events.append(ev.HostPaused(key, now, hs.paused_until, reason))  # type: ignore[arg-type]
        late: list[PaceTicket] = []
        if hs.waiting:
            # Where each waiting ticket would now start, in queue order.
            at = hs.last_start
            for ticket in sorted(t for t in hs.queue if t.state == WAITING):
                at = max(ticket.start, at + ticket.gap, hs.paused_until)
                if ticket.deadline is not None and at > ticket.deadline:
                    ticket.state = DONE
                    hs.waiting -= 1
                    self.waiting -= 1
                    if self._events is not None:
                        self._events.append(
                            ev.PacingDequeued(key, now, "late", now - ticket.since)  # type: ignore[arg-type]
                        )
                    self._refuse_late(ticket, now, start=at)
                    late.append(ticket)
        released: list[PaceTicket] = []
        self._advance(hs, now, released)
        return released, late

    def resume(self, key: K, now: float) -> list[PaceTicket]:
        """End ``key``'s pause now, if it has one. Returns the tickets this
        lets go."""
        hs = self._hosts.get(key)
        if hs is None or hs.paused_until is None:
            return []
        hs.paused_until = now
        # Starts planned to wait the pause out are due now: the gap after
        # the last start still holds (one at a time, ``_due_of``), in order.
        for ticket in hs.queue:
            if ticket.state == WAITING and ticket.start > now:
                ticket.start = now
        hs.last_planned = min(hs.last_planned, now)
        released: list[PaceTicket] = []
        self._advance(hs, now, released)
        return released

    def refresh_delays(self, where: Callable[[Hashable], bool]) -> None:
        """Ask ``delay_for`` again for the hosts ``where`` selects (after the
        rules behind it changed). Waiting requests keep the starts they were
        given; the next ones are planned with the new delay. Costs time in
        the number of hosts with pacing state: an administrative call."""
        for key, hs in self._hosts.items():
            if where(key):
                hs.delay = self._delay_for(key)  # type: ignore[arg-type]

    def close(self, now: float) -> list[PaceTicket]:
        """Refuse every waiting ticket (``CLOSED``) and forget every host."""
        self._closed = True
        closed: list[PaceTicket] = []
        for hs in self._hosts.values():
            for ticket in hs.queue:
                if ticket.state == WAITING:
                    ticket.state = CLOSED
                    closed.append(ticket)
                    if self._events is not None:
                        self._events.append(
                            ev.PacingDequeued(
                                ticket.key,  # type: ignore[arg-type]
                                now,
                                "closed",
                                now - ticket.since,
                            )
                        )
            hs.token = -1
        self._hosts.clear()
        self._heap.clear()
        self._live = 0
        self.waiting = 0
        return closed

    # ------------------------------------------------------------- reads

    def next_due(self) -> float | None:
        """When the earliest host needs :meth:`due`, if any."""
        heap = self._heap
        while heap:
            _when, token, hs = heap[0]
            if hs.token == token:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def figures(self, key: K) -> PaceFigures | None:
        """A paced host's figures (``None`` for a host with no pacing state)."""
        hs = self._hosts.get(key)
        if hs is None:
            return None
        return PaceFigures(
            hs.delay, self._next_start(hs), hs.waiting, hs.paused_until, hs.pause_reason
        )

    def all_figures(self) -> Iterator[tuple[Hashable, PaceFigures]]:
        """Every host with pacing state, and its figures."""
        for key, hs in self._hosts.items():
            yield (
                key,
                PaceFigures(
                    hs.delay,
                    self._next_start(hs),
                    hs.waiting,
                    hs.paused_until,
                    hs.pause_reason,
                ),
            )

    def delay_of(self, key: K) -> float:
        """The delay in force for ``key`` (0: not paced)."""
        hs = self._hosts.get(key)
        return hs.delay if hs is not None else self._delay_for(key)

    def hosts(self) -> int:
        """Hosts with pacing state."""
        return len(self._hosts)

    @property
    def heap_size(self) -> int:
        """Timer entries, stale ones included (for tests and benchmarks)."""
        return len(self._heap)

    def host_state(self, key: K) -> HostPace | None:
        """The live state of one host (for tests: never change it)."""
        return self._hosts.get(key)

    def heap_entries(self) -> list[tuple[float, int, HostPace]]:
        """The live timer entries (for tests)."""
        return [e for e in self._heap if e[2].token == e[1]]

    # ---------------------------------------------------------- internals

    def _gap(self, delay: float) -> float:
        jitter = self._jitter
        if not jitter or not delay:
            return delay
        return delay * (1.0 - jitter + 2.0 * jitter * self._random())

    def _due_of(self, hs: HostPace, ticket: PaceTicket) -> float:
        due = max(ticket.start, hs.last_start + ticket.gap)
        if hs.paused_until is not None and hs.paused_until > due:
            due = hs.paused_until
        return due

    def _next_start(self, hs: HostPace) -> float | None:
        head = self._head(hs)
        if head is not None:
            return self._due_of(hs, head)
        if hs.delay or hs.paused_until is not None:
            start = max(hs.last_planned + hs.delay, hs.last_start + hs.delay)
            if hs.paused_until is not None and hs.paused_until > start:
                start = hs.paused_until
            return None if start == _NEVER else start
        return None

    def _head(self, hs: HostPace) -> PaceTicket | None:
        queue = hs.queue
        while queue and queue[0].state != WAITING:
            heapq.heappop(queue)  # gone tickets leave as they reach the head
        return queue[0] if queue else None

    def _refuse_late(
        self, ticket: PaceTicket, now: float, start: float | None = None
    ) -> None:
        ticket.state = LATE
        if start is not None:
            ticket.start = start
        self.late += 1
        if self._events is not None:
            self._events.append(
                ev.PacingLate(ticket.key, now, ticket.start, ticket.deadline)  # type: ignore[arg-type]
            )

    def _advance(self, hs: HostPace, now: float, released: list[PaceTicket]) -> None:
        """Let go what of ``hs`` may go at ``now``, then set its one timer
        entry (or forget the host)."""
        if hs.paused_until is not None and hs.paused_until <= now:
            hs.paused_until = None
            hs.pause_reason = None
            if self._events is not None:
                self._events.append(ev.HostResumed(hs.key, now))  # type: ignore[arg-type]
        while hs.waiting:
            head = self._head(hs)
            assert head is not None
            if head.gap and hs.in_flight:
                self._unschedule(hs)  # ended() of the one in flight resumes
                return
            due = self._due_of(hs, head)
            if due > now:
                self._schedule(hs, due)
                return
            heapq.heappop(hs.queue)
            hs.waiting -= 1
            self.waiting -= 1
            head.state = GO
            head.released_at = now
            hs.in_flight += 1
            released.append(head)
            if self._events is not None:
                self._events.append(
                    ev.PacingDequeued(head.key, now, "released", now - head.since)  # type: ignore[arg-type]
                )
        if hs.paused_until is not None:
            self._schedule(hs, hs.paused_until)  # to tell when it ends
        elif hs.in_flight:
            self._unschedule(hs)
        else:
            # Quiet: forget it once a new arrival would start at once anyway.
            quiet = max(hs.last_planned, hs.last_start) + hs.delay * (1 + self._jitter)
            if quiet > now:
                self._schedule(hs, quiet)
            else:
                self._unschedule(hs)
                hs.queue.clear()
                if self._hosts.get(hs.key) is hs:
                    del self._hosts[hs.key]

    def _schedule(self, hs: HostPace, when: float) -> None:
        if hs.token >= 0:
            if hs.when == when:
                return  # its entry stands
        else:
            self._live += 1
        hs.when = when
        token = next(self._tokens)
        hs.token = token
        heapq.heappush(self._heap, (when, token, hs))
        if len(self._heap) > 4 * self._live + 64:
            self._heap = [e for e in self._heap if e[2].token == e[1]]
            heapq.heapify(self._heap)

    def _unschedule(self, hs: HostPace) -> None:
        if hs.token >= 0:
            hs.token = -1
            self._live -= 1
