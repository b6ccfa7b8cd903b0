"""The values the accounting core works with: tickets, connection records,
per-key state, decisions and figures. Plain data, no behaviour beyond arithmetic."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Final, NamedTuple

from .counters import Counters, Counts
from .empty_queue import NO_WAITERS

__all__ = [
    "ACQUIRED",
    "CLOSED",
    "DONE",
    "GONE",
    "GRANTED",
    "IDLE",
    "NOTHING",
    "NO_WAITERS",
    "QUEUED",
    "REJECTED",
    "Closing",
    "ConnRecord",
    "Decision",
    "KeyFigures",
    "KeyState",
    "Ticket",
    "min_limit",
    "min_room",
    "positive",
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
    """One request's claim on the pool (see the module docstring)."""

    __slots__ = ("conn", "granted_at", "key", "seq", "since", "state", "token")

    def __init__(self, key: Hashable, seq: int, since: float) -> None:
        self.key = key
        self.seq = seq
        self.since = since
        self.granted_at = since
        self.state = QUEUED
        self.conn: Hashable | None = None
        self.token: object = None  # the connector's own handle (a Future)

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
    """A snapshot of one full key: gauges, limit and counters."""

    key: Hashable
    acquired: int
    idle: int
    connecting: int
    waiting: int
    limit: int | None
    room: int | None
    counters: Counters


class KeyState:
    """One live key: its limit, gauges, queue, idle connections, counters.

    ``waiters`` is the shared empty ``NO_WAITERS`` while empty (see
    ``_NothingYet``). ``idle`` is the key's idle connection idle longest,
    ``None`` when it has none: the first of a ring the records themselves
    link (``ConnRecord.newer`` / ``older``, kept by ``idle.IdleStore``), so
    that a key keeping idle connections, as every host a crawler has
    visited does, needs no mapping of its own; a record is always true, so
    ``ks.idle`` reads as "has idle connections". ``connecting`` is a count:
    the tickets themselves are indexed once for the whole pool. ``counts``
    is the key's counts list (see ``counters``), which the history keeps
    when it drains.
    """

    __slots__ = (
        "acquired",
        "connecting",
        "counts",
        "idle",
        "key",
        "limit",
        "ready_token",
        "waiters",
    )

    def __init__(self, key: Hashable, limit: int | None, counts: Counts) -> None:
        self.key = key
        self.limit = limit
        self.acquired = 0
        self.connecting = 0
        self.idle: ConnRecord | None = None
        self.waiters = NO_WAITERS
        self.counts = counts
        self.ready_token = -1  # >= 0 while the key sits in the ready heap

    def room(self) -> int | None:
        if self.limit is None:
            return None
        return self.limit - self.acquired - self.connecting

    def is_empty(self) -> bool:
        return not (self.acquired or self.connecting or self.idle or self.waiters)


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
