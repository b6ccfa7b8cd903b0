"""What the core remembers of keys that hold nothing any more.

A crawler touches millions of hosts; keeping a live entry for each would make
memory grow with every host ever seen. A drained key's state is dropped and
only its counters are kept here, most recent last, up to a cap; the oldest
are then summed into one ``forgotten`` aggregate so that totals stay exact.
The group index (``PoolKey`` -> full keys) covers live and remembered keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator

from ._counters import Counters

__all__ = ["KeyHistory"]


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
        self._counters: OrderedDict[Hashable, Counters] = OrderedDict()
        self._groups: dict[Hashable, set[Hashable]] = {}
        self._forgotten = Counters()
        self._forgotten_keys = 0

    def revive(self, key: Hashable) -> Counters:
        """The counters of ``key``, which becomes live (new ones if unknown)."""
        counters = self._counters.pop(key, None)
        if counters is None:
            counters = Counters()
            group = self._group(key)
            members = self._groups.get(group)
            if members is None:
                self._groups[group] = {key}
            else:
                members.add(key)
        return counters

    def retire(self, key: Hashable, counters: Counters) -> None:
        """``key`` drained: remember its counters, forgetting the oldest."""
        self._counters[key] = counters
        while len(self._counters) > self._cap:
            old, old_counters = self._counters.popitem(last=False)
            self._forgotten.add(old_counters)
            self._forgotten_keys += 1
            group = self._group(old)
            members = self._groups[group]
            members.discard(old)
            if not members:
                del self._groups[group]

    def get(self, key: Hashable) -> Counters | None:
        return self._counters.get(key)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._counters)

    def members(self, group: Hashable) -> frozenset[Hashable]:
        return frozenset(self._groups.get(group, ()))

    @property
    def forgotten(self) -> tuple[int, Counters]:
        return self._forgotten_keys, self._forgotten
