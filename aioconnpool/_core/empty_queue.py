"""The shared empty waiter queue (``NO_WAITERS``).

Its own module, never compiled (see ``setup.py``): mypyc's native modules
crash the garbage collector with a Python subclass of ``OrderedDict``
defined in them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class _NothingYet(OrderedDict[Any, Any]):
    """The shared, always empty queue of a key that has none of its own.

    A crawler has thousands of live keys, most of them with an empty waiter
    queue at a given moment; sharing one empty mapping spares each key a
    tracked object. Whoever adds to a key's queue gives it its own first
    (``PoolCore.acquire``); a stray write here raises instead of leaking
    into every key.
    """

    def __setitem__(self, key: Any, value: Any) -> None:
        raise TypeError("the shared empty queue is read-only")


NO_WAITERS: OrderedDict[Any, None] = _NothingYet()
