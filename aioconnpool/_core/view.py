"""The read side of the accounting core: gauges, per-key figures, records.

``PoolCore`` (``_core``) changes the pool's state, one event per call; this
base class only reads it, for ``stats()``, the exporters, the connector's
messages and the tests. Nothing here changes a field, so a reader can never
leave the pool half-updated; the fields themselves are set up and kept by
``PoolCore``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sized
from typing import Generic, TypeVar

from .counters import (
    N_CREATED,
    N_REQUESTS,
    Counters,
    Counts,
    key_counters,
    read_totals,
)
from .history import KeyHistory
from .idle import IdleStore, idle_count
from .records import (
    IDLE,
    ConnRecord,
    KeyFigures,
    KeyState,
    Ticket,
    extras_of,
    min_room,
)

__all__ = ["PoolView"]

K = TypeVar("K", bound=Hashable)
C = TypeVar("C", bound=Hashable)
G = TypeVar("G", bound=Hashable)


class PoolView(Generic[K, C, G]):
    """Read-only queries over the state ``PoolCore`` keeps."""

    _limit: int | None
    _limit_given: int | None
    _max_open: int | None
    _limit_for: Callable[[K], int | None]
    _keys: dict[Hashable, KeyState]
    _conns: dict[Hashable, ConnRecord]
    _idle: IdleStore
    _acquired: int
    _connecting: int
    _waiting: int
    _permits: dict[Ticket, None]
    _totals: Counts  # see counters.new_totals
    _history: KeyHistory
    _closed: bool

    def limit_of(self, key: K) -> int | None:
        """The per-key limit in force for ``key`` (live or not)."""
        ks = self._keys.get(key)
        return ks.limit if ks is not None else self._limit_for(key)

    def demand(self, key: K) -> int:
        """Requests of ``key`` in the pool now: acquired, connecting and
        queued (0 for a drained key). What adaptive limits call a host's
        use of its limit."""
        ks = self._keys.get(key)
        return ks.acquired + ks.connecting + ks.waiting if ks is not None else 0

    def connection_count(self, key: K) -> int:
        """Connections ``key`` opened or is opening (0 for a drained key)."""
        ks = self._keys.get(key)
        return ks.counts[N_CREATED] + ks.connecting if ks is not None else 0

    def record_of(self, conn: C) -> ConnRecord | None:
        """The core's live record of ``conn`` (its ``state`` tells whether it
        is idle), or ``None``."""
        return self._conns.get(conn)

    def is_idle(self, conn: C) -> bool:
        """Whether ``conn`` is one of the pool's idle connections."""
        rec = self._conns.get(conn)
        return rec is not None and rec.state == IDLE

    def idle_count(self, key: K) -> int:
        """Idle connections ``key`` keeps."""
        ks = self._keys.get(key)
        return idle_count(ks) if ks is not None else 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def limit(self) -> int | None:
        """The total limit as configured (``None``: unlimited)."""
        return self._limit_given

    @property
    def max_open(self) -> int | None:
        """The socket budget (``None``: none)."""
        return self._max_open

    @property
    def open(self) -> int:
        """Sockets the pool holds: acquired, connecting and idle."""
        return self._acquired + self._connecting + self._idle.count

    @property
    def acquired(self) -> int:
        return self._acquired

    @property
    def idle(self) -> int:
        return self._idle.count

    def idle_connections(self) -> Sized:
        """The idle connections, as a live object that stays the same for the
        core's life, whose length is their number: test it for emptiness
        without a call into the core (read it only; :meth:`records` lists
        every connection, idle or not)."""
        return self._idle

    @property
    def connecting(self) -> int:
        return self._connecting

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def totals(self) -> Counters:
        """The connector-wide counters, as of now (a new object)."""
        return read_totals(self._totals, self._acquired)

    @property
    def forgotten(self) -> tuple[int, Counters]:
        """How many drained keys fell out of the history, and their counters."""
        return self._history.forgotten

    def total_room(self) -> int | None:
        if self._limit is None:
            return None
        return self._limit - self._acquired - self._connecting

    def next_expiry(self) -> float | None:
        """When the oldest idle connection's keep-alive runs out, if any."""
        return self._idle.next_expiry()

    def figures(self, key: K) -> KeyFigures:
        """Gauges and counters of one full key (zeros if unknown)."""
        ks = self._keys.get(key)
        if ks is not None:
            return self._figures_of(ks, self.total_room())
        return self._drained_figures(key, self.total_room())

    def all_figures(self) -> Iterator[KeyFigures]:
        """Figures of every live key, then of every key in the history; each
        holds a copy of its counts, so it can be kept and read later."""
        room = self.total_room()
        for ks in self._keys.values():
            yield self._figures_of(ks, room)
        for key in self._history:
            yield self._drained_figures(key, room)  # type: ignore[arg-type]

    def keys_in_group(self, group: G) -> frozenset[Hashable]:
        """The full keys (live or in history) that belong to ``group``."""
        return self._history.members(group)

    def records(self) -> Iterator[ConnRecord]:
        """Every live connection, acquired or idle."""
        return iter(list(self._conns.values()))

    def connecting_tickets(self) -> Iterator[Ticket]:
        """Every ticket currently opening a connection."""
        return iter(list(self._permits))

    def key_of(self, rec: ConnRecord) -> Hashable:
        return rec.key.key

    def _drained_figures(self, key: K, room: int | None) -> KeyFigures:
        frozen = self._history.get(key)
        limit = self._limit_for(key)
        if frozen is None:
            counters, requests = Counters(), 0
        else:
            counters, requests = Counters(list(frozen)), frozen[N_REQUESTS]
        return KeyFigures(
            key, 0, 0, 0, 0, limit, min_room(limit, room), counters, requests
        )

    def _figures_of(self, ks: KeyState, room: int | None) -> KeyFigures:
        # idle_count, without its call for no idle connection or one (what
        # nearly every host of a crawler keeps): stats() reads every key.
        first = ks.idle
        if first is None:
            idle = 0
        elif first.newer is first:
            idle = 1
        else:
            idle = idle_count(ks)
        return KeyFigures(
            ks.key,
            ks.acquired,
            idle,
            ks.connecting,
            ks.waiting,
            ks.limit,
            min_room(ks.room(), room),
            # A copy of the array (a memcpy) and the fields: the flat list
            # is built only if read (most hosts of a snapshot are not).
            key_counters(ks.counts[:], extras_of(ks)),
            ks.requests + ks.counts[N_REQUESTS],
        )
