"""Leak detection: connections held longer than ``leak_threshold``.

As HikariCP does, each acquisition notes who took the connection (the task
and the stack outside aiohttp, asyncio and aioconnpool) -- only when the
option is on, since capturing a stack costs. A timer per acquisition fires at
the threshold: one WARNING with that origin, and the connection becomes a
suspect (``connector.leaks()``) until it is released, which logs at INFO. A
response dropped without being read or closed holds its connection until
garbage collection, possibly forever: this is how it becomes visible.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import traceback
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from .._events import LeakSuspected, PoolEvent
from .._keys import PoolKey

__all__ = ["LeakDetector", "LeakInfo"]

log = logging.getLogger("aioconnpool")

# Frames from these packages are the plumbing, not the caller: the event
# loop, aiohttp, us, and a test runner's own frames when run under pytest.
_PLUMBING = tuple(
    os.path.dirname(module.__file__ or "") + os.sep
    for module in (asyncio, __import__("aiohttp"), __import__("aioconnpool"))
) + tuple(
    os.path.dirname(spec.origin) + os.sep
    for name in ("_pytest", "pluggy", "pytest_asyncio", "pytest_aiohttp")
    if (spec := importlib.util.find_spec(name)) is not None and spec.origin
)


@dataclass(frozen=True, slots=True)
class LeakInfo:
    """A connection held past ``leak_threshold``, and where it was taken."""

    key: PoolKey
    held_for: float
    task: str | None
    stack: str | None


class _Watch:
    __slots__ = ("handle", "key", "reported", "since", "stack", "task")

    def __init__(
        self, key: PoolKey, since: float, task: str | None, stack: str | None
    ) -> None:
        self.key = key
        self.since = since
        self.task = task
        self.stack = stack
        self.reported = False
        self.handle: asyncio.TimerHandle | None = None


def _origin() -> tuple[str | None, str | None]:
    """The current task's name and the caller's stack, plumbing left out."""
    task = asyncio.current_task()
    frames = [
        frame
        for frame in traceback.extract_stack()
        if not frame.filename.startswith(_PLUMBING)
    ]
    stack = "".join(traceback.format_list(frames[-12:])) if frames else None
    return (task.get_name() if task is not None else None), stack


class LeakDetector:
    """Watches acquisitions of one connector (see the module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float,
        emit: Callable[[PoolEvent], None],
    ) -> None:
        self._loop = loop
        self._threshold = threshold
        self._emit = emit
        self._watches: dict[Hashable, _Watch] = {}

    def acquired(self, conn: Hashable, key: PoolKey) -> None:
        task, stack = _origin()
        watch = _Watch(key, self._loop.time(), task, stack)
        watch.handle = self._loop.call_at(
            watch.since + self._threshold, self._fire, conn
        )
        self._watches[conn] = watch

    def released(self, conn: Hashable) -> None:
        watch = self._watches.pop(conn, None)
        if watch is None:
            return
        if watch.handle is not None:
            watch.handle.cancel()
        if watch.reported:
            log.info(
                "Connection to %s suspected of leaking was released after %.3g s",
                watch.key,
                self._loop.time() - watch.since,
            )

    def suspects(self) -> list[LeakInfo]:
        """Connections held past the threshold now, longest held first."""
        now = self._loop.time()
        found = [
            LeakInfo(w.key, now - w.since, w.task, w.stack)
            for w in self._watches.values()
            if now - w.since >= self._threshold
        ]
        return sorted(found, key=lambda info: -info.held_for)

    def close(self) -> None:
        for watch in self._watches.values():
            if watch.handle is not None:
                watch.handle.cancel()
        self._watches.clear()

    def _fire(self, conn: Hashable) -> None:
        watch = self._watches.get(conn)
        if watch is None:
            return
        watch.handle = None
        watch.reported = True
        held = self._loop.time() - watch.since
        log.warning(
            "Connection to %s held for %.3g s (leak_threshold=%g s) by task %s, "
            "acquired at:\n%s",
            watch.key,
            held,
            self._threshold,
            watch.task,
            watch.stack or "  (no stack outside aiohttp)",
        )
        self._emit(
            LeakSuspected(watch.key, self._loop.time(), held, watch.task, watch.stack)
        )
