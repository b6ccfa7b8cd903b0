"""Monotonic counters kept per key and in total by the accounting core.

A crawler keeps counts for every live host and thousands more in the
history, so their layout is chosen for memory and for the garbage collector:
every figure of one key -- the scalar counters, ``released`` by how,
``closed`` by reason, the four duration histograms and their sums in seconds
-- has its place in one flat layout (``Counts``), one object the collector
tracks instead of six (counters object, two dicts, histogram object, two
lists). Copying is one slice; adding is one ``map`` in C.

A live key (``records.KeyState``) holds the integers, up to ``SUMS_AT``, in
an ``array`` (:func:`new_key_counts`), and the four sums and the keep-alive
hot path's four counts as fields of its own: the collector tracks an array
too, but visits none of its items, where it visits each of a list's 100 at
every full collection (about 1 microsecond per key: 15,000 live keys added
14 ms to each). An item of an array costs more to increment than one of a
list (about 40 ns against 15, compiled), which the hot path's counts as
fields (3 ns) more than make up. ``records.counts_of`` reads a key's
counts into the flat layout; the history keeps a drained key's as a tuple.

The core increments the counts at the indices below directly (hot path);
``Counters`` wraps the flat layout for everything else, with named
properties.

The core's totals are one more such list, counted along with every key's,
except for three figures that an invariant gives once per read (``stats()``)
instead of at every request (:func:`new_totals`, :func:`read_totals`).
"""

from __future__ import annotations

import math
import operator
from array import array
from typing import Any, Final

from .._histogram import BOUNDS, BUCKETS, DURATIONS, Histogram, bucket_of

__all__ = [
    "CLOSED_AT",
    "CLOSED_INDEX",
    "CLOSE_REASONS",
    "CONNECT",
    "COUNTER_NAMES",
    "EOF",
    "HISTOGRAMS_AT",
    "HOLD",
    "HOLD_AT",
    "HOLD_SUM",
    "LIFETIME",
    "N_BUCKETS",
    "N_CONNECT_ERRORS",
    "N_CREATED",
    "N_REJECTED",
    "N_REQUESTS",
    "N_REUSED",
    "N_WAIT_TIMEOUTS",
    "RELEASED_AT",
    "RELEASED_INDEX",
    "RELEASE_HOWS",
    "SUMS_AT",
    "TOTAL_HOT",
    "WAIT",
    "WAIT_AT",
    "WAIT_SUM",
    "Counters",
    "Counts",
    "bucket_index",
    "flat_counts",
    "key_counters",
    "new_key_counts",
    "new_totals",
    "read_totals",
]

RELEASE_HOWS: tuple[str, ...] = (
    "eof",  # the body was received to the end (read, or arrived with the headers)
    "release",  # released before the end: release(), async-with exit...
    "close",  # closed by the caller before the end
    "error",  # the request failed (reset, bad response, read timeout, raising
    # trace), or its idle grant died before it ran (the request goes on)
    "cancelled",  # the task was cancelled while holding the connection
    "gc",  # garbage-collected without being released (a leak in the caller)
    "connector_closed",  # the connector closed under it
)
"""How an acquisition can end; always present in ``released`` mappings."""

CLOSE_REASONS: tuple[str, ...] = (
    "server",  # Connection: close, HTTP/1.0, or the peer closed the socket
    "unread",  # released with body bytes still unread
    "caller",  # closed by the caller
    "expired",  # idle longer than keepalive_timeout
    "max_age",  # older than max_connection_age
    "max_requests",  # served max_requests_per_connection requests
    "pool_full",  # released while max_idle_per_host / max_idle were reached
    "evicted",  # its host was the least recently used beyond max_hosts
    "fd_budget",  # idle longest when a new socket would exceed fd_budget
    "error",  # a protocol or transport error
    "cancelled",  # the task holding it was cancelled
    "force_close",  # the connector was built with force_close=True
    "upgraded",  # the connection was upgraded (e.g. to a WebSocket)
    "gc",  # garbage-collected without being released
    "connector_closed",  # the connector was closed
)
"""Why a connection can be closed; always present in ``closed`` mappings."""

# Indices into Counters.n, as literals: the compiled core (``setup.py``)
# inlines a ``Final`` literal where it is used, and looks any other module
# name up at run time. The layout they stand for is checked below.
N_REQUESTS: Final = 0
N_CREATED: Final = 1
N_REUSED: Final = 2
N_CONNECT_ERRORS: Final = 3
N_REJECTED: Final = 4
N_WAIT_TIMEOUTS: Final = 5
RELEASED_AT: Final = 6  # then one entry per RELEASE_HOWS
CLOSED_AT: Final = 13  # then one per CLOSE_REASONS
HISTOGRAMS_AT: Final = 28  # then BUCKETS per DURATIONS
N_BUCKETS: Final = 17  # _histogram.BUCKETS, as a literal
SUMS_AT: Final = 96  # then one sum (seconds) per DURATIONS
_SIZE: Final = 100

# Histogram numbers, in the order of _histogram.DURATIONS.
WAIT: Final = 0
CONNECT: Final = 1
HOLD: Final = 2
LIFETIME: Final = 3
# Where the wait and hold histograms start in a key's counts, and where their
# sums are: constants, so that the hot paths compute no index of their own.
WAIT_AT: Final = 28  # HISTOGRAMS_AT + WAIT * BUCKETS
HOLD_AT: Final = 62  # HISTOGRAMS_AT + HOLD * BUCKETS
WAIT_SUM: Final = 96  # SUMS_AT + WAIT
HOLD_SUM: Final = 98  # SUMS_AT + HOLD
# The index of released "eof", which the totals do not count (read_totals).
EOF: Final = 6

RELEASED_INDEX: dict[str, int] = {
    how: RELEASED_AT + i for i, how in enumerate(RELEASE_HOWS)
}
CLOSED_INDEX: dict[str, int] = {
    why: CLOSED_AT + i for i, why in enumerate(CLOSE_REASONS)
}


def _check_layout() -> None:
    """The literals above are the layout the names and buckets give."""
    expected = {
        "CLOSED_AT": RELEASED_AT + len(RELEASE_HOWS),
        "HISTOGRAMS_AT": CLOSED_AT + len(CLOSE_REASONS),
        "N_BUCKETS": BUCKETS,
        "SUMS_AT": HISTOGRAMS_AT + len(DURATIONS) * BUCKETS,
        "_SIZE": SUMS_AT + len(DURATIONS),
        "WAIT": DURATIONS.index("wait_time"),
        "CONNECT": DURATIONS.index("connect_time"),
        "HOLD": DURATIONS.index("hold_time"),
        "LIFETIME": DURATIONS.index("lifetime"),
        "WAIT_AT": HISTOGRAMS_AT + WAIT * BUCKETS,
        "HOLD_AT": HISTOGRAMS_AT + HOLD * BUCKETS,
        "WAIT_SUM": SUMS_AT + WAIT,
        "HOLD_SUM": SUMS_AT + HOLD,
        "EOF": RELEASED_INDEX["eof"],
        "TOTAL_HOT": _SIZE,
    }
    actual = globals()
    wrong: dict[str, tuple[object, object]] = {
        k: (actual[k], v) for k, v in expected.items() if actual[k] != v
    }
    # A live key keeps its sums in this order (records.KeyState, KeyExtras).
    order: tuple[int, ...] = (WAIT, CONNECT, HOLD, LIFETIME)
    if order != tuple(range(len(DURATIONS))):
        wrong["sums"] = (order, tuple(range(len(DURATIONS))))
    if wrong:  # a name or a bucket added without its index moved
        raise RuntimeError(f"counts layout out of date (is, should be): {wrong}")


Counts = list[Any]
"""One key's counts: ints, then the histogram sums (floats) from ``SUMS_AT``."""

_ZEROS: Counts = [0] * SUMS_AT + [0.0] * len(DURATIONS)
_EMPTY = Histogram()


_KEY_ZEROS: array[int] = array("q", bytes(8 * SUMS_AT))


def new_key_counts() -> array[int]:
    """A live key's zeroed counts: the integer part of the layout, up to
    ``SUMS_AT``, as an array (see ``records.KeyState``)."""
    return _KEY_ZEROS[:]


KeyExtras = tuple[int, int, int, int, float, float, float, float]
"""A live key's counts kept as fields (``records.KeyState``): requests,
reused, released "eof", waits in the first bucket, each on top of its entry
of the array; then the four sums, in the order of ``DURATIONS``."""


def flat_counts(ints: array[int], extras: KeyExtras) -> Counts:
    """A live key's counts (its array and fields) in the flat layout."""
    counts: Counts = ints.tolist()
    requests, reused, eof, at_once, *sums = extras
    counts[N_REQUESTS] += requests
    counts[N_REUSED] += reused
    counts[EOF] += eof
    counts[WAIT_AT] += at_once
    counts += sums
    return counts


# The core's totals count what every key counts. A keep-alive round trip
# counts four figures besides its hold time (requests, wait bucket 0, reused;
# released "eof") for its key and again in the totals, which, being one list,
# can afford to work figures out when read. So the totals keep:
TOTAL_HOT: Final = 100  # _SIZE
"""(Totals only.) Requests served at once by an idle connection (the
keep-alive hot path): each one is also a request and a wait of 0, added in
by :func:`read_totals`."""
# and never count two figures that invariants give on read:
# * reused = released (all) + acquired - created: every acquisition (of a new
#   connection or a reused one) is either still held or has ended once;
# * released "eof" = hold-time observations - the other releases: every
#   ended acquisition is timed once in the hold-time histogram.


_check_layout()


def key_counters(ints: array[int], extras: KeyExtras) -> Counters:
    """The counters of a live key, from a copy of its array and its fields:
    the flat list is built when first read (see :class:`Counters`)."""
    counters: Counters = Counters.__new__(Counters)
    counters._key = (ints, extras)
    return counters


def new_totals() -> Counts:
    """Zeroed totals: the flat layout (``Counts``), plus ``TOTAL_HOT``;
    their ``reused`` and ``"eof"`` entries stay 0 (see :func:`read_totals`)."""
    return [*_ZEROS, 0]


def read_totals(totals: Counts, acquired: int) -> Counters:
    """The counters ``totals`` stand for (a new object), ``acquired``
    connections being held now. O(1): what ``stats()`` pays for the hot path
    counting less."""
    n = totals[:_SIZE]
    hot = totals[TOTAL_HOT]
    n[N_REQUESTS] += hot
    n[WAIT_AT] += hot
    released = sum(n[HOLD_AT : HOLD_AT + BUCKETS])
    n[EOF] = released - sum(n[RELEASED_AT:CLOSED_AT])  # its own entry is 0
    n[N_REUSED] = released + acquired - n[N_CREATED]
    return Counters(n)


COUNTER_NAMES: tuple[str, ...] = (
    "requests",
    "created",
    "reused",
    "connect_errors",
    "rejected",
    "wait_timeouts",
)
"""The names of the scalar counters of ``HostStats`` and ``PoolStats``
(``requests``, ``created``...), in the order of their indices here
(``N_REQUESTS``...); exporters iterate over them."""


def bucket_index(which: int, seconds: float) -> int:
    """The index in ``Counters.n`` of ``seconds`` in histogram ``which``
    (the order of ``DURATIONS``)."""
    return HISTOGRAMS_AT + which * BUCKETS + bucket_of(seconds)


def _scalar(index: int, doc: str) -> property:
    def get(self: Counters) -> int:
        value: int = self.n[index]
        return value

    def set_(self: Counters, value: int) -> None:
        self.n[index] = value

    return property(get, set_, doc=doc)


class Counters:
    """Counters that only go up. ``copy()`` before handing one out.

    ``n`` is the counts list it wraps (see the module docstring). One made
    by :func:`key_counters` (a live key's, in ``stats()``) holds the key's
    array and fields instead, and builds ``n`` from them when first read:
    a snapshot copies every key's counts, but is read for a few hosts.
    """

    __slots__ = ("_key", "n")

    _key: tuple[array[int], KeyExtras]
    n: Counts

    requests = _scalar(N_REQUESTS, "Requests that arrived.")
    created = _scalar(N_CREATED, "Connections opened.")
    reused = _scalar(N_REUSED, "Acquisitions served by an idle connection.")
    connect_errors = _scalar(N_CONNECT_ERRORS, "Connection attempts that failed.")
    rejected = _scalar(N_REJECTED, "Requests refused at once (block=False).")
    wait_timeouts = _scalar(N_WAIT_TIMEOUTS, "Requests that waited too long.")

    def __init__(self, counts: Counts | None = None) -> None:
        self.n = _ZEROS[:] if counts is None else counts

    def __getattr__(self, name: str) -> Any:
        # Only for a slot not set: ``n`` of a key_counters() not read yet.
        if name != "n":
            raise AttributeError(name)
        ints, extras = self._key
        n = self.n = flat_counts(ints, extras)
        del self._key
        return n

    @property
    def released(self) -> dict[str, int]:
        """Ended acquisitions by how they ended (a new dict)."""
        return dict(zip(RELEASE_HOWS, self.n[RELEASED_AT:CLOSED_AT], strict=True))

    @property
    def closed(self) -> dict[str, int]:
        """Closed connections by reason (a new dict)."""
        return dict(zip(CLOSE_REASONS, self.n[CLOSED_AT:HISTOGRAMS_AT], strict=True))

    def bump_released(self, how: str) -> None:
        self.n[RELEASED_INDEX[how]] += 1

    def bump_closed(self, reason: str) -> None:
        self.n[CLOSED_INDEX[reason]] += 1

    def histogram(self, which: int) -> Histogram:
        """A snapshot of duration histogram ``which`` (order of ``DURATIONS``)."""
        start = HISTOGRAMS_AT + which * BUCKETS
        counts = tuple(self.n[start : start + BUCKETS])
        observed = sum(counts)
        if not observed:
            return _EMPTY  # immutable, so shared: most hosts never waited
        return Histogram(BOUNDS, counts, observed, self.n[SUMS_AT + which])

    def copy(self) -> Counters:
        return Counters(self.n[:])

    def add(self, other: Counters) -> None:
        self.n = list(map(operator.add, self.n, other.n))

    def __eq__(self, other: object) -> bool:
        # Sums are floats, added up in another order per key than in total.
        if not isinstance(other, Counters):
            return NotImplemented
        sums = zip(self.n[SUMS_AT:], other.n[SUMS_AT:], strict=True)
        return self.n[:SUMS_AT] == other.n[:SUMS_AT] and all(
            math.isclose(a, b, abs_tol=1e-9) for a, b in sums
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        # Every scalar, nonzero entries of the mappings: a failed equality in
        # a test must show where the counters differ.
        scalars = ", ".join(f"{name}={getattr(self, name)}" for name in COUNTER_NAMES)
        released = {k: v for k, v in self.released.items() if v}
        closed = {k: v for k, v in self.closed.items() if v}
        return f"Counters({scalars}, released={released}, closed={closed})"
