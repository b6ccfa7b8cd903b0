"""What the dashboard shows, taken on the pool's own loop.

The pool's state belongs to the loop that runs the connector: only that
loop reads it, so a snapshot can never see a half-updated pool. The
dashboard's side (maybe another thread, with its own loop) only *asks* for a
snapshot, with ``call_soon_threadsafe``, and serves the latest one it has.

That also tells when the pool's loop is stuck: a request for a snapshot that
has not been answered for a while means the loop has not run a callback for
that long. The dashboard then keeps answering from its own thread, with the
last snapshot, how long the loop has been unresponsive, and the stack the
loop's thread is in (read from ``sys._current_frames()``, which only reads).

Snapshots are taken at most once per ``interval``, and only while someone
looks (a request in the last ``idle_after`` seconds): every viewer shares
them, and an unwatched dashboard costs nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import math
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aioconnpool import PoolConnector, PoolEvent, PoolKey

__all__ = ["LoopStatus", "Snapshot", "Snapshots", "event_to_dict"]

EVENTS_KEPT = 500  # per connector: the events tail


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every connector's ``stats().to_dict()`` and leak suspects, taken at
    once on the pool's loop; ``taken_at`` is wall-clock time, ``number``
    counts snapshots (a cache key)."""

    stats: Mapping[str, dict[str, Any]]
    leaks: Mapping[str, list[dict[str, Any]] | None]
    taken_at: float
    number: int


@dataclass(frozen=True, slots=True)
class LoopStatus:
    """Whether the pool's loop answers: ``unresponsive_for`` seconds since
    it was first asked for the snapshot it still has not taken (0 when it
    answers), and then the stack its thread is in."""

    responsive: bool
    unresponsive_for: float
    stack: list[str] | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _json_value(value: object) -> object:
    if isinstance(value, PoolKey):
        return str(value)  # a PoolKey never carries credentials
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def event_to_dict(event: PoolEvent) -> dict[str, Any]:
    """An event as JSON: its kind, host, time and own fields."""
    out: dict[str, Any] = {"kind": type(event).__name__}
    for f in dataclasses.fields(event):
        out[f.name] = _json_value(getattr(event, f.name))
    return out


class Snapshots:
    """The snapshots of ``connectors`` (name -> connector), all driven by
    ``loop``, the loop they run on."""

    def __init__(
        self,
        connectors: Mapping[str, PoolConnector],
        loop: asyncio.AbstractEventLoop,
        *,
        interval: float = 1.0,
        unresponsive_after: float = 1.0,
        idle_after: float = 10.0,
    ) -> None:
        if not connectors:
            raise ValueError("the dashboard needs at least one connector")
        for name, connector in connectors.items():
            if not isinstance(connector, PoolConnector):
                raise TypeError(
                    f"the dashboard shows PoolConnector objects, not "
                    f"{type(connector).__name__} ({name!r})"
                )
        for label, value in (
            ("interval", interval),
            ("unresponsive_after", unresponsive_after),
        ):
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(
                    f"{label} must be a number of seconds > 0, not {value!r}"
                )
        self.connectors = dict(connectors)
        self.loop = loop
        self.interval = float(interval)
        self.unresponsive_after = float(unresponsive_after)
        self.idle_after = float(idle_after)
        self._latest: Snapshot | None = None
        self._numbers = itertools.count(1)
        self._asked_at: float | None = None  # monotonic; None: nothing pending
        self._loop_thread: int | None = None
        self._watched_at = 0.0
        # The events tail: appended on the pool's loop, read anywhere
        # (deque appends and copies are atomic under the GIL).
        self._event_numbers = itertools.count(1)
        self.events: dict[str, collections.deque[tuple[int, dict[str, Any]]]] = {
            name: collections.deque(maxlen=EVENTS_KEPT) for name in self.connectors
        }
        self._listeners = {name: self._listener(name) for name in self.connectors}
        for name, connector in self.connectors.items():
            connector.add_listener(self._listeners[name])

    def _listener(self, name: str) -> Any:
        tail = self.events[name]
        numbers = self._event_numbers

        def listen(event: PoolEvent) -> None:
            tail.append((next(numbers), event_to_dict(event)))

        return listen

    def close(self) -> None:
        """Stop listening to the connectors' events (on the pool's loop or
        after it stopped)."""
        for name, connector in self.connectors.items():
            with contextlib.suppress(ValueError):  # removed already
                connector.remove_listener(self._listeners[name])

    # ------------------------------------------------- the dashboard's side

    def watched(self) -> None:
        """A viewer asked for something: keep snapshots coming."""
        self._watched_at = time.monotonic()

    def tick(self) -> None:
        """Called every ``interval`` by the dashboard: ask the pool's loop
        for a snapshot if someone looks and none is pending."""
        now = time.monotonic()
        if now - self._watched_at > self.idle_after and self._latest is not None:
            return
        if self._asked_at is not None:
            return  # still pending: the loop has not come round to it
        latest = self._latest
        if latest is not None and time.time() - latest.taken_at < self.interval / 2:
            return  # a viewer just had one taken: at most one per interval
        self._asked_at = now
        try:
            self.loop.call_soon_threadsafe(self._take)
        except RuntimeError:  # the pool's loop is closed
            self._asked_at = None

    def latest(self) -> Snapshot | None:
        return self._latest

    def loop_status(self) -> LoopStatus:
        asked = self._asked_at
        waited = 0.0 if asked is None else time.monotonic() - asked
        if waited < self.unresponsive_after:
            return LoopStatus(responsive=True, unresponsive_for=0.0, stack=None)
        return LoopStatus(
            responsive=False, unresponsive_for=round(waited, 1), stack=self._stack()
        )

    def _stack(self) -> list[str] | None:
        if self._loop_thread is None or self._loop_thread == threading.get_ident():
            return None  # unknown, or our own (then we are not blocked)
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return None
        return traceback.format_stack(frame)

    # ------------------------------------------------------ the pool's side

    def take_now(self) -> Snapshot:
        """Take a snapshot (on the pool's loop)."""
        self._loop_thread = threading.get_ident()
        stats = {name: c.stats().to_dict() for name, c in self.connectors.items()}
        leaks: dict[str, list[dict[str, Any]] | None] = {}
        for name, connector in self.connectors.items():
            try:
                found = connector.leaks()
            except RuntimeError:  # leak detection is off
                leaks[name] = None
                continue
            leaks[name] = [
                {
                    "host": str(leak.key),
                    "held_for": leak.held_for,
                    "task": leak.task,
                    "stack": leak.stack,
                }
                for leak in found
            ]
        snapshot = Snapshot(
            stats=stats, leaks=leaks, taken_at=time.time(), number=next(self._numbers)
        )
        self._latest = snapshot
        return snapshot

    def _take(self) -> None:
        try:
            self.take_now()
        finally:
            self._asked_at = None
