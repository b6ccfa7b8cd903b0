"""Fleet-wide pacing: the gaps between request starts and the pauses of a
host hold across every process of the fleet (``_pace.lua`` has the data).

How one process takes part:

* **GCRA in Redis time.** The local pacer still orders a host's requests in
  this process and lets one at a time go (its head). That head then asks
  Redis for its start: ``start = max(now, tat, pause_until)`` and ``tat =
  start + gap`` (the gap the local pacer drew, jitter included), and waits
  ``start - now`` from when the reply arrives (later than the script ran:
  conservative). A start past the request's deadline is not reserved:
  the request fails with ``PacingDeadlineError``. A cancelled request's
  reserved start is simply wasted: the next one comes a gap later, never
  sooner.
* **Confirmed.** Once the request has its connection, it confirms its start
  (op ``C``): the gap counts from the previous *confirmed* start, so a
  start that came late (a process woken late, a slow connect) delays the
  next one instead of squeezing it. The local pacer counts a start the same
  way (``Pacer.ended``).
* **Batched.** Reservations, confirmations, pauses and resumes of one loop
  turn, for every host, go in one call of ``_pace.lua``; the next starts
  when it returns. That is two round trips per paced request (a third after
  a late start; fewer when several hosts go in the same turn), beside the
  limits' calls, never within them: a reservation is a moment, not a slot
  held, so it needs no session.
* **Pauses.** ``pause_host`` (or ``backoff_middleware``'s ``Retry-After``)
  stores the pause's end in Redis and announces it on the fleet's channel;
  every other process pauses the host locally too (stats, events), and any
  reservation honours the stored end anyway. ``resume_host`` ends it
  fleet-wide the same way. A process that (re)subscribes asks for the
  pauses in force.
* **Failures** follow ``on_unavailable``: ``"local"`` paces on local
  pacing alone (counted in ``FleetStats.local_paces``), ``"wait"`` waits
  for Redis up to the request's deadline and ``acquire_timeout``,
  ``"raise"`` fails with ``FleetUnavailableError``. Pauses set during an
  outage hold locally only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from aioconnpool import PoolClosedError, PoolKey

from ._errors import FleetTimeoutError, FleetUnavailableError

if TYPE_CHECKING:
    from ._redis import RedisFleet

__all__ = ["FleetPacing"]

log = logging.getLogger("aioconnpool.fleet")

PACE_SCRIPT = resources.files(__package__).joinpath("_pace.lua").read_text("utf-8")

OnPause = Callable[[PoolKey, float, str], None]
OnResume = Callable[[PoolKey], None]


class _Outage(Exception):
    """A reservation's call failed: decide again by ``on_unavailable``."""


@dataclass(slots=True)
class _Op:
    kind: str  # R, P, U, L
    key: PoolKey | None = None
    gap: float = 0.0
    deadline: float | None = None  # loop time (R)
    seconds: float = 0.0  # P
    reason: str = ""  # P
    future: asyncio.Future[tuple[float, bool]] | None = None  # R

    def words(self, now: float) -> tuple[str, str, str, str, str]:
        name = "-" if self.key is None else str(self.key)
        kjson = "-" if self.key is None else json.dumps(list(self.key))
        if self.kind in ("R", "C"):
            # The deadline as microseconds from now: measured when sent, so
            # a reservation refused for it would really have been late.
            within = -1 if self.deadline is None else max(self.deadline - now, 0.0)
            gap, within_us = str(int(self.gap * 1e6)), str(int(within * 1e6))
            return (self.kind, name, gap, within_us, "-")
        if self.kind == "P":
            return ("P", name, f"{self.seconds * 1000:.3f}", self.reason, kjson)
        if self.kind == "U":
            return ("U", name, "-", "-", kjson)
        return ("L", "-", "-", "-", "-")


class FleetPacing:
    """The pacing half of a ``RedisFleet`` (which owns the Redis client,
    the loop, the outage state and the pub/sub listener)."""

    def __init__(self, fleet: RedisFleet, origin: str) -> None:
        self._fleet = fleet
        self.origin = origin
        self._ops: list[_Op] = []
        self._sending: list[_Op] = []  # the call in flight's
        self._caller: asyncio.Task[None] | None = None
        self._back: asyncio.Future[None] | None = None
        self._on_pause: OnPause | None = None
        self._on_resume: OnResume | None = None
        self.script: Any = None
        self.calls = 0
        self.reservations = 0
        self.local_paces = 0
        self.pauses_sent = 0
        self.pauses_received = 0
        # The fleet-wide pauses this process knows of: host -> (end on the
        # loop's clock, reason), for FleetStats.paused.
        self._paused: dict[PoolKey, tuple[float, str]] = {}

    def listen(self, on_pause: OnPause, on_resume: OnResume) -> None:
        self._on_pause = on_pause
        self._on_resume = on_resume

    # --------------------------------------------------------- requests

    async def reserve(
        self, key: PoolKey, gap: float, deadline: float | None, *, kind: str = "R"
    ) -> tuple[float, bool]:
        """``kind`` "R": reserve a start; "C": confirm one (see _pace.lua)."""
        fleet = self._fleet
        loop = fleet._loop
        assert loop is not None
        while True:
            if fleet._closed:
                raise PoolClosedError("Connector is closed.")
            fleet._ensure_started()
            if fleet._state == "unavailable":
                mode = fleet._config.on_unavailable
                if mode == "local":
                    self.local_paces += 1
                    return 0.0, True
                if mode == "raise":
                    raise self._unavailable_error(key)
                late = await self._wait_back(key, deadline)
                if late is not None:
                    return late, False
                continue
            future: asyncio.Future[tuple[float, bool]] = loop.create_future()
            self._ops.append(_Op(kind, key, gap=gap, deadline=deadline, future=future))
            self._call_soon()
            try:
                return await future
            except _Outage:
                continue

    def pause(self, key: PoolKey, seconds: float, reason: str) -> None:
        if self._send(_Op("P", key, seconds=seconds, reason=reason)):
            self._known(key, seconds, reason)

    def resume(self, key: PoolKey) -> None:
        self._paused.pop(key, None)
        self._send(_Op("U", key))

    def paused(self) -> dict[PoolKey, tuple[float, str]]:
        """The fleet-wide pauses in force, as this process knows them."""
        loop = self._fleet._loop
        now = -math.inf if loop is None else loop.time()
        for key in [k for k, (until, _) in self._paused.items() if until <= now]:
            del self._paused[key]
        return dict(self._paused)

    def relist(self) -> None:
        """Ask for the pauses in force (after a (re)subscription)."""
        self._send(_Op("L"))

    def _send(self, op: _Op) -> bool:
        """Queue ``op`` for the next call; False when it cannot go (closed,
        or Redis cannot be reached: a pause then holds here only)."""
        fleet = self._fleet
        if fleet._closed or fleet._loop is None:
            return False
        fleet._ensure_started()
        if fleet._state != "connected":
            return False
        if op.kind == "P":
            self.pauses_sent += 1
        self._ops.append(op)
        self._call_soon()
        return True

    def _known(self, key: PoolKey, seconds: float, reason: str) -> None:
        loop = self._fleet._loop
        assert loop is not None
        until = loop.time() + seconds
        if key not in self._paused or self._paused[key][0] < until:
            self._paused[key] = (until, reason)

    # ---------------------------------------------------- fleet's events

    def unavailable(self) -> None:
        """Redis cannot be reached: waiting reservations decide again."""
        ops, self._ops = self._ops, []
        for op in ops:
            if op.future is not None and not op.future.done():
                op.future.set_exception(_Outage())

    def back(self) -> None:
        """Redis answers again: reservations waiting for it go on."""
        if self._back is not None and not self._back.done():
            self._back.set_result(None)
        self._back = None

    def message(self, data: str) -> None:
        """A pause or resume announced by another process."""
        try:
            msg = json.loads(data)
            if msg["o"] == self.origin:
                return
            key = PoolKey(*json.loads(msg["k"]))
        except (ValueError, KeyError, TypeError):
            log.warning(
                "Fleet %r: ignored a malformed pause message %r",
                self._fleet._config.name,
                data,
            )
            return
        self._apply(msg["op"], key, int(msg["left"]) / 1e6, str(msg["r"]))

    def close(self) -> list[asyncio.Task[None]]:
        """Fail what waits; return the call in flight, for the fleet to
        await. It is not cancelled: a Redis call cut in the middle leaves a
        connection to close behind the loop's back (bounded by twice
        ``redis_timeout`` like every call)."""
        ops, self._ops = [*self._sending, *self._ops], []
        for op in ops:
            if op.future is not None and not op.future.done():
                op.future.set_exception(PoolClosedError("Connector is closed."))
        if self._back is not None and not self._back.done():
            self._back.set_exception(PoolClosedError("Connector is closed."))
            self._back.exception()  # retrieved: nobody may be waiting
        return [] if self._caller is None else [self._caller]

    # ---------------------------------------------------------- internals

    def _apply(
        self, op: str, key: PoolKey, seconds: float, reason: str, *, count: bool = True
    ) -> None:
        """Tell the connector of a pause (or its end). A callback that raises
        is logged: it must not end the listener or leave reservations
        unanswered."""
        if op == "P" and seconds > 0:
            self._known(key, seconds, reason)
        elif op == "U":
            self._paused.pop(key, None)
        try:
            if op == "P" and seconds > 0 and self._on_pause is not None:
                if count:
                    self.pauses_received += 1
                self._on_pause(key, seconds, reason)
            elif op == "U" and self._on_resume is not None:
                self._on_resume(key)
        except Exception:
            log.exception(
                "Fleet %r: applying a shared pause of %s failed",
                self._fleet._config.name,
                key,
            )

    async def _wait_back(self, key: PoolKey, deadline: float | None) -> float | None:
        """``on_unavailable="wait"``: wait for Redis. Returns how late the
        request would be when its deadline comes first (else ``None``)."""
        fleet = self._fleet
        loop = fleet._loop
        assert loop is not None
        if self._back is None:
            self._back = loop.create_future()
        limits = [fleet._config.acquire_timeout]
        if deadline is not None:
            limits.append(max(deadline - loop.time(), 0.0))
        bound = min((x for x in limits if x is not None), default=None)
        try:
            await asyncio.wait_for(asyncio.shield(self._back), bound)
        except asyncio.TimeoutError:
            if deadline is not None and loop.time() >= deadline - 0.001:
                return loop.time() - deadline
            limit = fleet._config.acquire_timeout
            assert limit is not None
            raise FleetTimeoutError(
                f"Timed out after {limit:g} s (acquire_timeout) waiting for "
                f"Redis at {fleet._config.address} to pace a request to {key} "
                f"in fleet {fleet._config.name!r} (on_unavailable='wait')",
                key,
                limit,
            ) from None
        return None

    def _unavailable_error(self, key: PoolKey) -> FleetUnavailableError:
        c = self._fleet._config
        return FleetUnavailableError(
            f"Fleet {c.name!r}: Redis at {c.address} cannot be reached; no "
            f"fleet-wide start for {key} (on_unavailable='raise')",
            host=key,
            address=c.address,
        )

    def _call_soon(self) -> None:
        if self._caller is None:
            loop = self._fleet._loop
            assert loop is not None
            self._caller = loop.create_task(self._calls())

    async def _calls(self) -> None:
        fleet = self._fleet
        try:
            while self._ops and fleet._state == "connected" and not fleet._closed:
                ops, self._ops = self._ops, []
                await self._call(ops)
        finally:
            self._caller = None

    async def _call(self, ops: list[_Op]) -> None:
        fleet = self._fleet
        loop = fleet._loop
        assert loop is not None
        now = loop.time()
        args = [fleet._config.prefix, self.origin, str(len(ops))]
        for op in ops:
            args += op.words(now)
        self.calls += 1
        self._sending = ops
        try:
            reply = await fleet._timed_call(
                self.script, keys=[f"{fleet._config.prefix}pace"], args=args
            )
        except Exception as exc:  # what _redis calls "the call failed"
            if fleet._closed:
                return  # (close() failed the waiting)
            waiting = [op for op in ops if op.future is not None]
            if not waiting:
                # Only pauses or a listing: nobody waits on this call. The
                # pauses hold here only (as in an outage); the next call
                # that a request makes tells whether Redis is down.
                return
            # Asked for again once decided: a lapse (the calls go on, under
            # a new session for the limits) or an outage (on_unavailable).
            self._ops[:0] = waiting
            fleet._call_failed(exc)
            return
        finally:
            self._sending = []
        self._applied(ops, reply)

    def _applied(self, ops: list[_Op], reply: list[Any]) -> None:
        at = 0
        for op in ops:
            wait_us, ok, left_us, reason = reply[at]
            at += 1
            if op.kind in ("R", "C"):
                assert op.future is not None
                assert op.key is not None
                if left_us > 0:
                    # A pause this process may not know of yet (a message
                    # missed, or sent before it subscribed): show it here
                    # (the gate ignores one it knows already).
                    self._apply(
                        "P", op.key, int(left_us) / 1e6, str(reason), count=False
                    )
                if not op.future.done():  # else cancelled: the start is wasted
                    if ok and op.kind == "R":
                        self.reservations += 1
                    op.future.set_result((int(wait_us) / 1e6, bool(ok)))
            elif op.kind == "L":
                for entry in reply[at : at + int(wait_us)]:
                    key = PoolKey(*json.loads(entry[0]))
                    self._apply("P", key, int(entry[1]) / 1e6, str(entry[2]))
                at += int(wait_us)
