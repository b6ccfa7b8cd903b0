"""The values the accounting core works with: tickets, connection records,
per-key state, decisions and figures. Plain data, no behaviour beyond arithmetic."""

from __future__ import annotations

from array import array
from collections.abc import Hashable, Sequence
from typing import Any, Final, NamedTuple

from .counters import (
    SUMS_AT,
    Counters,
    Counts,
    KeyExtras,
    flat_counts,
    new_key_counts,
)

__all__ = [
    "ACQUIRED",
    "CLOSED",
    "DONE",
    "GONE",
    "GRANTED",
    "IDLE",
    "NOTHING",
    "QUEUED",
    "REJECTED",
    "Closing",
    "ConnRecord",
    "Decision",
    "KeyFigures",
    "KeyState",
    "Ticket",
    "counts_of",
    "dequeue_first",
    "enqueue",
    "extras_of",
    "min_limit",
    "min_room",
    "positive",
    "unlink_waiter",
    "waiters_of",
]

QUEUED: Final = "queued"
GRANTED: Final = "granted"
DONE: Final = "done"
CLOSED: Final = "closed"
REJECTED: Final = "rejected"

ACQUIRED: Final = "acquired"
IDLE: Final = "idle"
# A record the pool no longer holds (closed, or closed with the pool): set
# whenever a record leaves the pool, so that whoever kept it (the connector's
# protocol) can tell from the record alone, without a lookup.
GONE: Final = "gone"


class Closing:
    """A connection the connector must close, why, and the key it served.

    A plain class, like the others here, not a ``NamedTuple``: compiled, one
    is built by a direct call, where a ``NamedTuple`` runs its Python-level
    ``__new__`` (about 2,300 machine instructions each; a request whose
    connection closes builds a ``Closing`` and a ``Decision``).
    """

    __slots__ = ("conn", "key", "reason")

    def __init__(self, conn: Hashable, reason: str, key: Hashable) -> None:
        self.conn = conn
        self.reason = reason
        self.key = key

    def __repr__(self) -> str:
        return f"Closing(conn={self.conn!r}, reason={self.reason!r}, key={self.key!r})"


class Decision:
    """What the connector must do after an event (a plain class, for the
    reason ``Closing`` is one)."""

    __slots__ = ("close", "wake")

    def __init__(self, wake: Sequence[Ticket], close: Sequence[Closing]) -> None:
        self.wake = wake
        """Tickets to wake: each is now ``GRANTED`` or ``CLOSED``."""
        self.close = close
        """Connections to close, with the reason counted for each."""

    def __repr__(self) -> str:
        return f"Decision(wake={self.wake!r}, close={self.close!r})"


NOTHING: Final = Decision((), ())


class Ticket:
    """One request's claim on the pool (see the module docstring).

    While queued, a ticket is a link of its key's queue (``next_waiter`` /
    ``prev_waiter``, see :func:`enqueue`); both are ``None`` otherwise.
    """

    __slots__ = (
        "conn",
        "granted_at",
        "key",
        "next_waiter",
        "prev_waiter",
        "seq",
        "since",
        "state",
        "token",
    )

    def __init__(self, key: Hashable, seq: int, since: float) -> None:
        self.key = key
        self.seq = seq
        self.since = since
        self.granted_at = since
        self.state = QUEUED
        self.conn: Hashable | None = None
        self.token: object = None  # the connector's own handle (a Future)
        self.next_waiter: Ticket | None = None
        self.prev_waiter: Ticket | None = None

    def __repr__(self) -> str:
        return f"<Ticket #{self.seq} {self.state} conn={self.conn!r}>"


class ConnRecord:
    """What the core knows of one live connection."""

    __slots__ = (
        "acquired_at",
        "created_at",
        "handle",
        "idle_since",
        "key",
        "newer",
        "older",
        "pool_newer",
        "pool_older",
        "served",
        "state",
    )

    def __init__(self, handle: Hashable, key: KeyState, now: float) -> None:
        self.handle = handle
        self.key = key
        self.state = ACQUIRED
        self.created_at = now
        self.acquired_at = now
        self.idle_since = now
        self.served = 1
        # While idle: its neighbours in its key's ring of idle connections
        # (see ``idle``); None otherwise.
        self.newer: ConnRecord | None = None
        self.older: ConnRecord | None = None
        # While idle: its neighbours in the pool's ring of all idle
        # connections, in the order they went idle (see ``idle``).
        self.pool_newer: ConnRecord | None = None
        self.pool_older: ConnRecord | None = None


class KeyFigures(NamedTuple):
    """A snapshot of one full key: gauges, limit and counters.

    ``requests`` is ``counters.requests``, there to rank keys by without
    reading their counters (which a live key's build when first read).
    """

    key: Hashable
    acquired: int
    idle: int
    connecting: int
    waiting: int
    limit: int | None
    room: int | None
    counters: Counters
    requests: int


class KeyState:
    """One live key: its limit, gauges, queue, idle connections, counters.

    ``first_waiter`` .. ``last_waiter`` is the key's queue, ``waiting``
    tickets long, oldest first: the tickets themselves are its links (see
    :func:`enqueue`), so that a key with requests waiting, as each of a
    crawl's 15,000 hosts has when its requests are issued at once, needs no
    container of its own (an ``OrderedDict`` per key before: one more object
    for the collector to walk per queued host). "Has waiters" reads
    ``ks.waiting``: a test of ``first_waiter`` after a call that may have
    changed it would be wrong in the compiled core, which keeps what mypy
    narrowed an attribute to across calls.

    ``idle`` is the key's idle connection idle longest, ``None`` when it has
    none: the first of a ring the records themselves link
    (``ConnRecord.newer`` / ``older``, kept by ``idle.IdleStore``), so that a
    key keeping idle connections, as every host a crawler has visited does,
    needs no mapping of its own either; a record is always true, so
    ``ks.idle`` reads as "has idle connections".

    ``connecting`` is a count: the tickets themselves are indexed once for
    the whole pool.

    The key's counts (``counters``) are ``counts``, an array of the integer
    part of the layout, and fields: the four duration sums (``wait_sum`` ..
    ``lifetime_sum``) and four counts the keep-alive hot path adds to
    (``requests``, ``reused``, ``released_eof``, ``served_at_once``, each
    on top of its entry in ``counts``, which other paths may increment).
    :func:`counts_of` reads them all into the flat layout, which is what the
    history keeps when the key drains.
    """

    __slots__ = (
        "acquired",
        "connect_sum",
        "connecting",
        "counts",
        "first_waiter",
        "hold_sum",
        "idle",
        "key",
        "last_waiter",
        "lifetime_sum",
        "limit",
        "ready_token",
        "released_eof",
        "requests",
        "reused",
        "served_at_once",
        "wait_sum",
        "waiting",
    )

    def __init__(
        self, key: Hashable, limit: int | None, frozen: tuple[Any, ...] | None
    ) -> None:
        """``frozen``: the key's counts from the history (the flat layout),
        ``None`` for a key never seen."""
        self.key = key
        self.limit = limit
        self.acquired = 0
        self.connecting = 0
        self.idle: ConnRecord | None = None
        self.first_waiter: Ticket | None = None
        self.last_waiter: Ticket | None = None
        self.waiting = 0
        self.ready_token = -1  # >= 0 while the key sits in the ready heap
        self.requests = 0
        self.reused = 0
        self.released_eof = 0
        self.served_at_once = 0
        if frozen is None:
            self.counts = new_key_counts()
            self.wait_sum = 0.0
            self.connect_sum = 0.0
            self.hold_sum = 0.0
            self.lifetime_sum = 0.0
        else:
            self.counts = array("q", frozen[:SUMS_AT])
            # The sums in the order of _histogram.DURATIONS (counters checks
            # WAIT .. LIFETIME are 0 .. 3).
            self.wait_sum = float(frozen[SUMS_AT])
            self.connect_sum = float(frozen[SUMS_AT + 1])
            self.hold_sum = float(frozen[SUMS_AT + 2])
            self.lifetime_sum = float(frozen[SUMS_AT + 3])

    def room(self) -> int | None:
        if self.limit is None:
            return None
        return self.limit - self.acquired - self.connecting

    def is_empty(self) -> bool:
        return not (self.acquired or self.connecting or self.idle or self.waiting)


def extras_of(ks: KeyState) -> KeyExtras:
    """``ks``'s counts kept as fields (see ``counters.KeyExtras``)."""
    return (
        ks.requests,
        ks.reused,
        ks.released_eof,
        ks.served_at_once,
        ks.wait_sum,
        ks.connect_sum,
        ks.hold_sum,
        ks.lifetime_sum,
    )


def counts_of(ks: KeyState) -> Counts:
    """``ks``'s counts in the flat layout of ``counters`` (a new list)."""
    return flat_counts(ks.counts, extras_of(ks))


# A key's queue: a doubly linked list of its tickets. Unlinking clears a
# ticket's own links, so that a ticket that left leaves no reference cycle
# behind (a cycle would wait for the collector's next pass over it).


def enqueue(ks: KeyState, ticket: Ticket) -> int:
    """Queue ``ticket`` last in ``ks``'s queue; returns the queue's length."""
    last = ks.last_waiter
    ticket.prev_waiter = last
    if last is None:
        ks.first_waiter = ticket
    else:
        last.next_waiter = ticket
    ks.last_waiter = ticket
    ks.waiting += 1
    return ks.waiting


def dequeue_first(ks: KeyState) -> Ticket:
    """Take the first ticket out of ``ks``'s queue (which must have one)."""
    ticket = ks.first_waiter
    if ticket is None:
        raise RuntimeError(f"no request waits on {ks.key!r}")
    unlink_waiter(ks, ticket)
    return ticket


def unlink_waiter(ks: KeyState, ticket: Ticket) -> None:
    """Take ``ticket``, wherever it stands, out of ``ks``'s queue."""
    before, after = ticket.prev_waiter, ticket.next_waiter
    if before is None:
        if ks.first_waiter is not ticket:
            raise RuntimeError(f"{ticket!r} does not wait on {ks.key!r}")
        ks.first_waiter = after
    else:
        before.next_waiter = after
    if after is None:
        ks.last_waiter = before
    else:
        after.prev_waiter = before
    ticket.prev_waiter = None
    ticket.next_waiter = None
    ks.waiting -= 1


def waiters_of(ks: KeyState) -> list[Ticket]:
    """``ks``'s queued tickets, oldest first (a copy)."""
    found: list[Ticket] = []
    ticket = ks.first_waiter
    while ticket is not None:
        found.append(ticket)
        ticket = ticket.next_waiter
    return found


def positive(room: int | None) -> bool:
    return room is None or room > 0


def min_room(a: int | None, b: int | None) -> int | None:
    if a is None:
        return None if b is None else max(b, 0)
    if b is None:
        return max(a, 0)
    return max(min(a, b), 0)


def min_limit(a: int | None, b: int | None) -> int | None:
    """The tighter of two limits, ``None`` being "unlimited"."""
    if a is None:
        return b
    return a if b is None else min(a, b)
