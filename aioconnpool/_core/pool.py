"""The accounting core: a pure, synchronous model of a keyed connection pool.

Theory of operation
-------------------
This package knows nothing of sockets, aiohttp or the event loop. The connector
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
use count, idle caps, host LRU) is the idle store's policy: see ``idle``.

Invariants (checked by the hypothesis state machine in the tests):

1. ``acquired + connecting <= limit`` in total and per key, always, including
   when an idle connection is reused. With a socket budget (``max_open``),
   ``acquired + connecting + idle <= max_open`` too, whenever a connection is
   about to be opened: the idle connections idle longest are closed to make
   room (``"fd_budget"``), and ``acquired + connecting <= max_open`` always.
2. Per-key gauges add up to the totals; per-key counters plus the counters of
   forgotten keys add up to the total counters.
3. No waiter waits while a slot it may take is free: for every key with
   waiters, the key has no room or the total has no room.
4. ``created + reused == sum(released) + acquired``: every acquisition ends
   exactly once.

The totals are counted along with each key's counts, event by event, except
three figures they work out when read (``counters.read_totals``, O(1)):
``reused`` by invariant 4, ``released["eof"]`` as the hold-time observations
(one per ended acquisition) less the other releases, and the requests and
zero waits of the keep-alive reuses served at once, kept in one entry. So a
keep-alive round trip makes nine increments instead of twelve.

Scheduling is FIFO within a key. Across keys, a freed slot goes to the
longest-waiting request among the keys that have per-key room. To find it
without scanning, the core keeps only the *ready* keys -- those whose first
waiter could run if the total limit allowed it -- in a heap ordered by that
waiter's arrival number. Every event touches one key plus, per slot it frees,
one heap pop: O(log k) in the number of ready keys and O(1) in the number of
waiters. Stale heap entries (a key whose head changed) are skipped lazily and
compacted away when they outnumber the live ones.

Every duration the pool sees (queue wait, connect, hold, lifetime) goes into
fixed-bucket histograms per key and in total (``aioconnpool._histogram``). When someone
observes (:meth:`PoolCore.observe`), each step is also appended to a list of
:mod:`~aioconnpool._events` that the connector delivers once the call has
returned, so that a listener always sees a consistent pool.

Keys that hold nothing leave no state behind: their counters move to a bounded
history so that ``stats()`` can still report recently drained hosts, and the
oldest history entries are folded into one ``forgotten`` aggregate.

Where each step lives
--------------------
:class:`PoolCore` is the one entry point; its methods are the events, grouped
by responsibility in the classes it is built from:

* ``grants`` -- arrivals and grants: ``acquire`` (the connector's one call
  per request: ``reuse``, the keep-alive hot path with no ticket, else
  ``arrive``), ``handed_over``, ``grant_lost``, ``connect_succeeded`` /
  ``connect_failed``, ``time_out``, ``set_limit`` / ``refresh_limits``, and
  ``_slot_freed``, which hands free slots to the ready waiters;
* ``releases`` -- releases and hand-off: ``release``, ``abandon``;
* ``closes`` -- closing, expiry and retirement: ``conn_lost``, ``expire``,
  ``close``;
* ``bookkeeping`` -- the steps they share: counting, opening and retiring
  keys, keeping a connection idle;
* ``view`` -- every read (gauges, figures, records), for ``stats()``, the
  exporters and the tests; nothing there changes a field.

The data they work on are ``records`` (tickets, connection records, per-key
state, decisions), ``idle`` (the idle store), ``ready`` (the ready queue),
``counters`` and ``history``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Hashable

from .counters import new_totals
from .history import KeyHistory
from .idle import IdleStore
from .ready import ReadyQueue
from .records import ConnRecord, KeyState, Ticket, min_limit
from .releases import Releases
from .view import C, G, K

__all__ = ["PoolCore"]


class PoolCore(Releases[K, C, G]):
    """Pure bookkeeping of a keyed connection pool; see the module docstring.

    ``limit`` and the values returned by ``limit_for`` are ``None`` for
    "unlimited". ``group`` maps a full key to the coarser key stats are grouped
    by. A drained key that is a NamedTuple is kept, handed out and passed to
    ``group`` and ``limit_for`` as a plain tuple of its fields (see
    ``history``): both must read keys by position. ``is_alive`` is asked
    before an idle connection is handed out. The idle policy options are
    those of :class:`~aioconnpool._core.idle.IdleStore`; ``reuse`` is
    ``"fifo"`` or ``"lifo"``. ``max_open`` is the socket budget: the most
    connections (acquired, connecting and idle) open at once.
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
        max_open: int | None = None,
    ) -> None:
        if reuse not in ("fifo", "lifo"):
            raise ValueError(f"reuse must be 'fifo' or 'lifo', got {reuse!r}")
        if max_open is not None and max_open < 1:
            raise ValueError(f"max_open must be >= 1 or None, got {max_open!r}")
        self._max_open = max_open
        # What bounds acquired + connecting: the total limit, and the socket
        # budget (idle connections can be closed to make room; acquired and
        # connecting ones cannot). The configured limit stays as it was given.
        self._limit_given = limit
        self._limit = min_limit(limit, max_open)
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

        # Counted as every key's counts are, less what read_totals derives.
        self._totals = new_totals()
        self._history = KeyHistory(history, group)  # type: ignore[arg-type]
        self._closed = False
        self._events = None
