"""What the core remembers of keys that hold nothing any more.

A crawler touches millions of hosts; keeping a live entry for each would make
memory grow with every host ever seen. A drained key's state is dropped and
only its counts (``counters``) are kept here, most recent last, up to a
cap; the oldest are then summed into one ``forgotten`` aggregate so that
totals stay exact.
The group index (``PoolKey`` -> full keys) covers live and remembered keys.
Nearly every group has one key (a host's pools differ only by TLS context or
proxy), so the index maps a group to that key itself, and to a set only once
a second key joins: one tracked object less per host. A group that is a
NamedTuple is indexed as a plain tuple, which the collector stops tracking
(see ``revive``): one more.

The keys themselves are kept the same way (``_plain``): aiohttp's
``ConnectionKey`` is a NamedTuple, which CPython's collector tracks for as
long as it lives, while a plain tuple of strings, numbers and ``None`` is
untracked at the collector's first pass over it. A plain tuple is equal to the
NamedTuple it came from and hashed alike, so a lookup by the full key finds it;
but what iterating the history (or ``members``) hands out, and what the
``group`` and ``limit_for`` functions are called with for a drained key, is
that plain tuple: they must read it by position. As NamedTuples, 10,000
drained hosts (the default history) were 10,000 more objects for every full
collection to walk (3-7 ms each on the benchmark machine).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from .counters import Counters, Counts

__all__ = ["KeyHistory"]

_NONE = object()


def _plain(key: Hashable) -> Hashable:
    """``key`` as the history keeps it: an instance of a tuple subclass (a
    NamedTuple) as a plain tuple of its fields, anything else as it is."""
    if isinstance(key, tuple) and key.__class__ is not tuple:
        return tuple(key)
    return key


class _Members(set[Hashable]):
    """The keys of a group that has several (a set no key can be mistaken for)."""


class KeyHistory:
    __slots__ = (
        "_cap",
        "_counters",
        "_forgotten",
        "_forgotten_keys",
        "_group",
        "_groups",
    )

    def __init__(self, cap: int, group: Callable[[Hashable], Hashable]) -> None:
        self._cap = cap
        self._group = group
        # Frozen as tuples: a tuple of numbers is untracked by CPython's
        # collector after its first pass, while a list of 99 counts is walked
        # item by item by every full collection (20,000 of them: +19 ms).
        self._counters: OrderedDict[Hashable, tuple[Any, ...]] = OrderedDict()
        self._groups: dict[Hashable, Hashable | _Members] = {}
        self._forgotten = Counters()
        self._forgotten_keys = 0

    def revive(self, key: Hashable) -> tuple[Any, ...] | None:
        """The counts of ``key``, which becomes live (``None`` if unknown)."""
        frozen = self._counters.pop(key, None)
        if frozen is not None:
            return frozen
        group = self._group(key)
        if isinstance(group, tuple):
            # Indexed by a plain tuple of the group's fields: equal to the
            # group and hashed alike, so a lookup by the group finds it. The
            # collector stops tracking a plain tuple of strings and numbers
            # at its first pass, but never a NamedTuple (the connector's
            # PoolKey): one object per host fewer for each full collection.
            group = tuple(group)
        key = _plain(key)  # the index outlives the live key: untracked
        members = self._groups.get(group, _NONE)
        if members is _NONE:
            self._groups[group] = key
        elif isinstance(members, _Members):
            members.add(key)
        elif members != key:
            self._groups[group] = _Members((members, key))
        return None

    def retire(self, key: Hashable, counters: Counts) -> None:
        """``key`` drained: remember its counts, forgetting the oldest."""
        self._counters[_plain(key)] = tuple(counters)
        while len(self._counters) > self._cap:
            old, old_counters = self._counters.popitem(last=False)
            self._forgotten.add(Counters(list(old_counters)))
            self._forgotten_keys += 1
            group = self._group(old)
            members = self._groups[group]
            if not isinstance(members, _Members):
                del self._groups[group]
                continue
            members.discard(old)
            if len(members) == 1:
                self._groups[group] = next(iter(members))

    def get(self, key: Hashable) -> tuple[Any, ...] | None:
        """The frozen counts of a drained ``key`` (see ``counters``)."""
        return self._counters.get(key)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._counters)

    def members(self, group: Hashable) -> frozenset[Hashable]:
        members = self._groups.get(group, _NONE)
        if members is _NONE:
            return frozenset()
        if isinstance(members, _Members):
            return frozenset(members)
        return frozenset((members,))

    @property
    def forgotten(self) -> tuple[int, Counters]:
        return self._forgotten_keys, self._forgotten
