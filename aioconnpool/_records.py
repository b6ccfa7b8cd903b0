"""The values the accounting core works with: tickets, connection records,
per-key state, decisions and figures. Plain data, no behaviour beyond arithmetic."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import NamedTuple

from ._counters import Counters

__all__ = [
    "ACQUIRED",
    "CLOSED",
    "DONE",
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
    "min_room",
    "positive",
]

QUEUED = "queued"
GRANTED = "granted"
DONE = "done"
CLOSED = "closed"
REJECTED = "rejected"

ACQUIRED = "acquired"
IDLE = "idle"


class Closing(NamedTuple):
    """A connection the connector must close, why, and the key it served."""

    conn: Hashable
    reason: str
    key: Hashable


class Decision(NamedTuple):
    """What the connector must do after an event."""

    wake: Sequence[Ticket]
    """Tickets to wake: each is now ``GRANTED`` or ``CLOSED``."""
    close: Sequence[Closing]
    """Connections to close, with the reason counted for each."""


NOTHING: Decision = Decision((), ())


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
    __slots__ = (
        "acquired",
        "connecting",
        "counters",
        "idle",
        "key",
        "limit",
        "ready_token",
        "waiters",
    )

    def __init__(self, key: Hashable, limit: int | None, counters: Counters) -> None:
        self.key = key
        self.limit = limit
        self.acquired = 0
        self.connecting: dict[Ticket, None] = {}
        self.idle: OrderedDict[Hashable, ConnRecord] = OrderedDict()
        self.waiters: OrderedDict[Ticket, None] = OrderedDict()
        self.counters = counters
        self.ready_token = -1  # >= 0 while the key sits in the ready heap

    def room(self) -> int | None:
        if self.limit is None:
            return None
        return self.limit - self.acquired - len(self.connecting)

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
