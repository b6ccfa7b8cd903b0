"""The idle side of the pool: which released connections are kept, which one
is reused next, and which are closed -- by age, by use, by caps, or by time.

Idle connections do not count against the limits; what bounds them is this
module's policy, decided when a connection comes back (``put``), when one is
wanted (``take``) and when time passes (``expire``):

* ``max_requests`` / ``max_age``: a connection that has served that many
  requests, or lived that long, is closed instead of kept or reused;
* ``max_per_key`` (urllib3's ``pool_maxsize``): a key already keeping that many
  idle connections discards the one coming back (``"pool_full"``);
* ``max_total``: over that many idle connections in all, the one idle longest
  is closed (``"pool_full"``); the core's socket budget closes the same way
  (:meth:`IdleStore.evict`, ``"fd_budget"``);
* ``max_keys`` (urllib3's ``pool_connections``): at most that many keys keep
  idle connections; a new one makes the least recently used key close its
  idle connections (``"evicted"``);
* ``keepalive``: idle longer than that is ``"expired"``;
* ``lifo``: reuse the most recently released connection first (surplus
  connections then stay unused and expire), instead of the oldest (FIFO, as
  aiohttp does).

Every decision is O(1) except those that close connections, which cost in
proportion to what they close (and ``max_per_key``'s count, in proportion to
that cap). Closings are ``(record, reason)`` pairs, appended to the caller's
list (``put`` returns a list of its own, or ``None`` when it closed
nothing); the core counts them and tells the connector. A store with none
of the caps or retirements above (``plain``, the default) pays one test per
``put`` and ``take`` for all of them.

A key's idle connections, oldest first, are a ring the records link
themselves (``ConnRecord.newer`` / ``older``), entered at ``KeyState.idle``
(the oldest; its ``older`` is the newest): a crawler keeps one idle
connection on each of thousands of hosts, and a mapping per key would be one
more object per host for every full collection of the garbage collector to
walk. A record leaves the ring with both links cleared, so a ring is never
left as a cycle for the collector.

All idle connections, whatever their key, are a second ring the same way
(``ConnRecord.pool_newer`` / ``pool_older``, entered at the oldest), in the
order they went idle: ``idle_since`` never decreases along it, so expiry and
eviction take from the oldest end and stop early. It used to be an
``OrderedDict`` keyed by connection: every keep-alive release and reuse
then hashed the connection into it and out again, about 800 machine
instructions per request on the hot host (callgrind: the core's ``acquire``
and ``release``, with all they call), and every idle connection cost an
entry and a node besides its record (60-90 bytes, ``bench/core_scaling.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

from .records import ACQUIRED, IDLE, ConnRecord, KeyState

__all__ = ["IdleStore", "idle_count"]

Closings = list[tuple[ConnRecord, str]]


def idle_count(ks: KeyState) -> int:
    """The idle connections ``ks`` keeps (a walk round its ring)."""
    first = ks.idle
    if first is None:
        return 0
    count = 1
    rec = first.newer
    while rec is not first:
        count += 1
        rec = rec.newer  # type: ignore[union-attr]
    return count


def _unlink(ks: KeyState, rec: ConnRecord) -> None:
    """Take ``rec`` out of its key's ring of idle connections."""
    newer, older = rec.newer, rec.older
    if newer is rec:  # the only one
        ks.idle = None
    else:
        newer.older = older  # type: ignore[union-attr]
        older.newer = newer  # type: ignore[union-attr]
        if ks.idle is rec:
            ks.idle = newer
    rec.newer = rec.older = None


class IdleStore:
    __slots__ = (
        "_keepalive",
        "_keys",
        "_lifo",
        "_max_age",
        "_max_keys",
        "_max_per_key",
        "_max_requests",
        "_max_total",
        "_oldest",
        "_retiring",
        "count",
        "is_alive",
        "plain",
    )

    def __init__(
        self,
        *,
        keepalive: float | None,
        is_alive: Callable[[Hashable], bool],
        max_age: float | None = None,
        max_requests: int | None = None,
        max_per_key: int | None = None,
        max_total: int | None = None,
        max_keys: int | None = None,
        lifo: bool = False,
    ) -> None:
        self._keepalive = keepalive
        self.is_alive = is_alive
        self._max_age = max_age
        self._max_requests = max_requests
        self._max_per_key = max_per_key
        self._max_total = max_total
        self._max_keys = max_keys
        self._lifo = lifo
        # Whether connections retire by age or use at all: spares the hot
        # path a call when they don't.
        self._retiring = max_age is not None or max_requests is not None
        # No cap and no retirement: every released connection is kept, so a
        # waiter of its key may take it without a round trip through here.
        self.plain = (
            not self._retiring
            and max_per_key is None
            and max_total is None
            and max_keys is None
        )
        # The pool-wide ring of idle connections (see the module docstring),
        # entered at the oldest; ``count`` is its length. An attribute, not
        # a property: the socket budget's check reads it on every new
        # connection.
        self._oldest: ConnRecord | None = None
        self.count = 0
        # Keys keeping idle connections, least recently used first; kept only
        # when max_keys is set, so the hot path pays nothing otherwise.
        self._keys: OrderedDict[KeyState, None] = OrderedDict()

    def __len__(self) -> int:
        return self.count

    def records(self) -> list[ConnRecord]:
        """The idle connections, oldest first."""
        recs: list[ConnRecord] = []
        first = rec = self._oldest
        while rec is not None:
            recs.append(rec)
            rec = rec.pool_newer
            if rec is first:
                break
        return recs

    def next_expiry(self) -> float | None:
        """When the oldest idle connection's keep-alive runs out, if ever."""
        oldest = self._oldest
        if self._keepalive is None or oldest is None:
            return None
        return oldest.idle_since + self._keepalive

    def _link(self, rec: ConnRecord) -> None:
        """Enter ``rec`` in the pool-wide ring, as the newest."""
        first = self._oldest
        if first is None:  # a ring of one
            self._oldest = rec.pool_newer = rec.pool_older = rec
        else:
            newest = first.pool_older
            newest.pool_newer = rec  # type: ignore[union-attr]
            rec.pool_older = newest
            rec.pool_newer = first
            first.pool_older = rec
        self.count += 1

    def _unlink(self, rec: ConnRecord) -> None:
        """Take ``rec`` out of the pool-wide ring."""
        newer, older = rec.pool_newer, rec.pool_older
        if newer is rec:  # the only one
            self._oldest = None
        else:
            newer.pool_older = older  # type: ignore[union-attr]
            older.pool_newer = newer  # type: ignore[union-attr]
            if self._oldest is rec:
                self._oldest = newer
        rec.pool_newer = rec.pool_older = None
        self.count -= 1

    def put(self, ks: KeyState, rec: ConnRecord, now: float) -> Closings | None:
        """``rec`` (of ``ks``) was released keep-alive: keep it, or close it.

        Returns the closings this led to (``rec`` itself, or others to make
        room), or ``None`` when it closed nothing: a plain store never does,
        and allocates no list for it (every keep-alive release passes here).
        """
        closes: Closings | None = None
        if not self.plain:
            closes = []
            if not self._admit(ks, rec, now, closes):
                return closes
        rec.state = IDLE
        rec.idle_since = now
        first = ks.idle
        if first is None:  # a ring of one
            ks.idle = rec.newer = rec.older = rec
        else:  # the newest: between the newest so far and the oldest
            newest = first.older
            newest.newer = rec  # type: ignore[union-attr]
            rec.older = newest
            rec.newer = first
            first.older = rec
        self._link(rec)
        if closes is None:
            return None
        if self._max_total is not None and self.count > self._max_total:
            self.evict(self.count - self._max_total, closes, "pool_full")
        return closes or None

    def _admit(
        self, ks: KeyState, rec: ConnRecord, now: float, closes: Closings
    ) -> bool:
        """Whether ``rec`` may be kept (else it is in ``closes``); makes room
        among the keys keeping idle connections (``max_keys``)."""
        reason = self._retire_reason(rec, now) if self._retiring else None
        if (
            reason is None
            and self._max_per_key is not None
            and idle_count(ks) >= self._max_per_key
        ):
            reason = "pool_full"
        if reason is not None:
            closes.append((rec, reason))
            return False
        if self._max_keys is not None:
            keys = self._keys
            if ks in keys:
                keys.move_to_end(ks)
            else:
                while len(keys) >= self._max_keys:
                    victim = next(iter(keys))
                    self._close_key(victim, closes)
                keys[ks] = None
        return True

    def take(self, ks: KeyState, now: float, closes: Closings) -> ConnRecord | None:
        """The idle connection of ``ks`` to reuse next, now acquired; the
        ones found expired, too old or dead on the way are closed."""
        keepalive = self._keepalive
        while (first := ks.idle) is not None:
            rec = first.older if self._lifo else first  # the newest, or oldest
            assert rec is not None
            _unlink(ks, rec)
            self._unlink(rec)
            if keepalive is not None and now - rec.idle_since >= keepalive:
                closes.append((rec, "expired"))
                continue
            if self._retiring:
                reason = self._retire_reason(rec, now)
                if reason is not None:
                    closes.append((rec, reason))
                    continue
            if not self.is_alive(rec.handle):
                closes.append((rec, "server"))
                continue
            rec.state = ACQUIRED
            if self._max_keys is not None:
                self._touch(ks)
            return rec
        if self._max_keys is not None:
            self._touch(ks)
        return None

    def evict(self, count: int, closes: Closings, reason: str) -> None:
        """Close the ``count`` connections idle longest, whatever their key
        (there must be that many)."""
        for _ in range(count):
            rec = self._oldest
            assert rec is not None
            self.remove(rec)
            closes.append((rec, reason))

    def remove(self, rec: ConnRecord) -> None:
        """Take ``rec`` out of the idle pool (it is being closed)."""
        ks = rec.key
        _unlink(ks, rec)
        self._unlink(rec)
        if ks.idle is None and self._max_keys is not None:
            self._keys.pop(ks, None)

    def expire(self, now: float, closes: Closings) -> None:
        """Close the connections idle for ``keepalive`` or longer."""
        if self._keepalive is None:
            return
        deadline = now - self._keepalive
        while (rec := self._oldest) is not None:
            if rec.idle_since > deadline:
                break
            self.remove(rec)
            closes.append((rec, "expired"))

    def clear(self) -> list[ConnRecord]:
        """Empty the idle pool, returning what it held."""
        recs = self.records()
        for rec in recs:
            rec.key.idle = rec.newer = rec.older = None
            rec.pool_newer = rec.pool_older = None
        self._oldest = None
        self.count = 0
        self._keys.clear()
        return recs

    def _retire_reason(self, rec: ConnRecord, now: float) -> str | None:
        if self._max_requests is not None and rec.served >= self._max_requests:
            return "max_requests"
        if self._max_age is not None and now - rec.created_at >= self._max_age:
            return "max_age"
        return None

    def _touch(self, ks: KeyState) -> None:
        """``ks`` was just used: move it to the recent end of the LRU order."""
        if ks.idle:
            self._keys[ks] = None
            self._keys.move_to_end(ks)
        else:
            self._keys.pop(ks, None)

    def _close_key(self, ks: KeyState, closes: Closings) -> None:
        """Evict every idle connection of ``ks`` (least recently used key)."""
        del self._keys[ks]
        while (rec := ks.idle) is not None:  # oldest first
            _unlink(ks, rec)
            self._unlink(rec)
            closes.append((rec, "evicted"))
