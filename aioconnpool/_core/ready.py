"""The ready queue: keys whose first waiter could run if the total limit allowed it.

When a total slot frees, the longest-waiting request among keys that still
have per-key room must get it. Scanning every waiting key for that (as
aiohttp's ``_release_waiter`` does, shuffling them all on each release) costs
time in the number of keys. Instead the ready keys sit in a heap ordered by
their first waiter's arrival number: the winner is the top, in O(log k).

A key's place goes stale when its first waiter changes or it stops being
ready; rather than search the heap, each key carries the token of its one
valid entry, and entries with another token are skipped when popped. Stale
entries are compacted away once they outnumber live ones three to one: every
stale entry comes from one push, so this is amortised O(1) per push.

A heap entry is ``(first waiter's number, token)``, and the key an entry
stands for is found by its token (``_keys``, live tokens only). An entry
holding the key itself would be a tuple the garbage collector tracks for as
long as it lies in the heap (its key is tracked); a tuple of two ints it
stops tracking at its first pass. A crawl queued over thousands of hosts
keeps one entry per host: that many objects fewer for every full
collection to walk.

One case costs nothing at all: the only ready key serving its own first
waiter (a release handing its connection straight over, in
``Releases.release``). Its entry then stands for a waiter that left; rather
than re-key it at once, the release marks it ``moved``, and the entry is
re-keyed only if another key must be compared with it (a push) or the key is
popped. With one ready key there is nothing to compare: the queued sweep on
one host never pays for it.
"""

from __future__ import annotations

import heapq
import itertools

from .records import KeyState

__all__ = ["ReadyQueue"]


def _first_seq(ks: KeyState) -> int:
    """The number of ``ks``'s first waiter, which must exist."""
    first = ks.first_waiter
    if first is None:
        raise RuntimeError(f"{ks.key!r} has no request waiting")
    return first.seq


class ReadyQueue:
    __slots__ = ("_heap", "_keys", "_tokens", "count", "moved")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int]] = []
        # The ready keys by the token of their one live entry.
        self._keys: dict[int, KeyState] = {}
        # How many keys are ready: read-only outside, and read directly by
        # the core's release path rather than through len().
        self.count = 0
        self._tokens = itertools.count()
        # The only ready key, whose entry's first waiter has left (set by the
        # release path, without a call; see the module docstring).
        self.moved: KeyState | None = None

    def __len__(self) -> int:
        """How many keys are ready (stale heap entries not counted)."""
        return self.count

    def __contains__(self, ks: object) -> bool:
        return isinstance(ks, KeyState) and ks.ready_token >= 0

    @property
    def heap_size(self) -> int:
        """Entries in the heap, stale ones included (for tests and benchmarks)."""
        return len(self._heap)

    def entries(self) -> list[tuple[int, KeyState]]:
        """The live entries, as (first waiter's number, key), in no order
        (for tests)."""
        keys = self._keys
        return [(seq, keys[token]) for seq, token in self._heap if token in keys]

    def push(self, ks: KeyState) -> None:
        """Mark ``ks`` ready under its current first waiter (which must exist)."""
        if self.moved is not None:
            self._settle()
        old = ks.ready_token
        if old < 0:
            self.count += 1
        else:  # re-keyed: its old entry goes stale
            del self._keys[old]
        token = next(self._tokens)
        ks.ready_token = token
        self._keys[token] = ks
        heapq.heappush(self._heap, (_first_seq(ks), token))
        self._compact()

    def _settle(self) -> None:
        """Re-key the ``moved`` key: it is the only ready key, so its entry
        is the heap's only live one and the heap becomes that one entry
        (every other entry was stale), in O(1)."""
        ks = self.moved
        assert ks is not None
        self.moved = None
        token = next(self._tokens)
        ks.ready_token = token
        self._keys = {token: ks}
        self._heap = [(_first_seq(ks), token)]

    def discard(self, ks: KeyState) -> None:
        """``ks`` is no longer ready (no waiter, or no per-key room)."""
        if self.moved is ks:
            self.moved = None
        token = ks.ready_token
        if token >= 0:
            ks.ready_token = -1
            del self._keys[token]
            self.count -= 1
            self._compact()

    def pop(self) -> KeyState:
        """Remove and return the ready key whose first waiter arrived first."""
        if self.moved is not None:
            self._settle()
        keys = self._keys
        while True:
            _seq, token = heapq.heappop(self._heap)
            if token in keys:  # else stale: skipped
                ks = keys[token]
                del keys[token]
                ks.ready_token = -1
                self.count -= 1
                return ks

    def clear(self) -> None:
        self.moved = None
        for ks in self._keys.values():
            ks.ready_token = -1
        self._keys.clear()
        self._heap.clear()
        self.count = 0

    def _compact(self) -> None:
        if len(self._heap) > 4 * self.count + 64:
            keys = self._keys
            self._heap = [e for e in self._heap if e[1] in keys]
            heapq.heapify(self._heap)
