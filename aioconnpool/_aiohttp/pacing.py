"""The glue's side of per-host pacing: a gate in front of ``connect()``.

The pure pacer (``aioconnpool._core.pacing``) decides when each request to a
paced host may start; this gate carries that out. ``PoolConnector`` builds
one only when pacing is configured (``delay_per_host``, ``host_delays``) or
first asked for (``pause_host``, ``backoff_middleware``), and only then
installs :meth:`PacingGate.connect` as the connector's ``connect``: a
connector without pacing runs exactly the code it ran before, with no check
per request.

A request waiting on pacing awaits a future here, before the pool's own
``connect()``, so it holds no slot of ``limit`` and other hosts go ahead.
One loop timer is armed, for the pacer's earliest due host (never one per
request). The gate holds its connector weakly: the connector holds it (its
``connect``), and a cycle would keep an unclosed connector from warning.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import weakref
from typing import TYPE_CHECKING, Any

from aiohttp.connector import Connection

from .._core.pacing import GO, LATE, WAITING, Pacer, PaceTicket
from .._errors import PacingDeadlineError, PoolClosedError
from .._keys import PoolKey, pool_key_of
from .fleet_pacing import FleetPacingBackend

if TYPE_CHECKING:
    from aiohttp.client import ClientTimeout
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace

    from .connector import PoolConnector

__all__ = ["PLACE", "PacingGate", "Place"]


class Place:
    """A request's place in its host's pacing queue, kept across retries
    (``backoff_middleware`` sets one in :data:`PLACE` around a request):
    ``seq`` from ``Pacer.take_seq``; ``retry`` once it was sent."""

    __slots__ = ("retry", "seq")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.retry = False


PLACE: contextvars.ContextVar[Place | None] = contextvars.ContextVar(
    "aioconnpool_pacing_place", default=None
)


def _deadline(timeout: ClientTimeout, now: float) -> float | None:
    """The latest a request may start: its connect or total timeout (the
    sooner), counted from now."""
    limits = [t for t in (timeout.total, timeout.connect) if t]
    return now + min(limits) if limits else None


class PacingGate:
    """Waits each request out its host's pacing, then runs ``connect()``."""

    def __init__(self, connector: PoolConnector, pacer: Pacer[PoolKey]) -> None:
        self._connector = weakref.ref(connector)
        self._loop = connector._loop
        self.pacer = pacer
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._held: set[PoolKey] = set()  # paused hosts the pool holds
        # With a fleet that paces (fleet_pacing): its head asks for a
        # fleet-wide start, and pauses are shared.
        fleet = getattr(connector, "_fleet", None)
        self.fleet = fleet if isinstance(fleet, FleetPacingBackend) else None

    async def connect(
        self, req: ClientRequest, traces: list[Trace] | None, timeout: ClientTimeout
    ) -> Connection:
        connector = self._connector()
        assert connector is not None  # it is calling us
        run = type(connector).connect
        key = pool_key_of(req.connection_key)
        loop = self._loop
        now = loop.time()
        place = PLACE.get()
        pacer = self.pacer
        if place is None:
            ticket, released = pacer.arrive(key, now, _deadline(timeout, now))
        else:
            ticket, released = pacer.arrive(
                key, now, _deadline(timeout, now), place.seq, retry=place.retry
            )
        if ticket is None:  # not paced
            return await run(connector, req, traces, timeout)
        self._carry_out(released)
        if ticket.state == LATE:
            raise self._late_error(ticket, now)
        if ticket.state == WAITING:
            future = loop.create_future()
            ticket.token = future
            try:
                await future
            except BaseException:
                self._carry_out(pacer.cancel(ticket, loop.time()))
                raise
        try:
            if self.fleet is not None:
                await self._fleet_start(ticket, key)
            conn = await run(connector, req, traces, timeout)
        except BaseException:
            self._carry_out(pacer.ended(ticket, loop.time(), sent=False))
            raise
        if self.fleet is not None:
            try:
                await self._fleet_confirm(ticket, key)
            except BaseException:
                conn.release()
                self._carry_out(pacer.ended(ticket, loop.time(), sent=False))
                raise
        self._carry_out(pacer.ended(ticket, loop.time(), sent=True))
        return conn

    def pause(
        self, key: PoolKey, seconds: float, reason: str, *, share: bool = True
    ) -> None:
        if share and self.fleet is not None:
            self.fleet.share_pause(key, seconds, reason)
        now = self._loop.time()
        released, late = self.pacer.pause(key, now + seconds, reason, now)
        for ticket in late:
            future: Any = ticket.token
            if future is not None and not future.done():
                future.set_exception(self._late_error(ticket, now))
        if key not in self._held:
            # Requests of the host that passed this gate before the pause
            # (all of them, for a host not paced until now) may be queued in
            # the pool: hold them there too.
            connector = self._connector()
            if connector is not None:
                self._held.add(key)
                connector._hold(key, True)
        self._carry_out(released)

    def resume(self, key: PoolKey, *, share: bool = True) -> None:
        if share and self.fleet is not None:
            self.fleet.share_resume(key)
        self._carry_out(self.pacer.resume(key, self._loop.time()))

    def fleet_paused(self, key: PoolKey, seconds: float, reason: str) -> None:
        """Another process of the fleet paused ``key``: pause it here too
        (stats, events, waiting requests), unless this pause is known."""
        figures = self.pacer.figures(key)
        until = self._loop.time() + seconds
        if (
            figures is not None
            and figures.paused_until is not None
            and figures.paused_until >= until - 0.05
        ):
            return  # known (to within a round trip)
        self.pause(key, seconds, reason, share=False)

    async def _fleet_start(self, ticket: PaceTicket, key: PoolKey) -> None:
        """Wait for this request's fleet-wide start (the local pacer let it
        go); refused when it would fall after the request's deadline."""
        fleet = self.fleet
        assert fleet is not None
        wait, reserved = await fleet.reserve_start(key, ticket.gap, ticket.deadline)
        if not reserved:
            now = self._loop.time()
            self.pacer.refused_late(ticket, now, now + wait)
            raise self._late_error(ticket, now)
        if wait > 0:
            await asyncio.sleep(wait)

    async def _fleet_confirm(self, ticket: PaceTicket, key: PoolKey) -> None:
        """The request has its connection: confirm its start fleet-wide, as
        the local pacer counts a start once the connection is there
        (``ended``). Waits (holding the connection) only when another
        start came late; rare and short."""
        fleet = self.fleet
        assert fleet is not None
        while True:
            wait, ok = await fleet.confirm_start(key, ticket.gap, ticket.deadline)
            if not ok:
                now = self._loop.time()
                self.pacer.refused_late(ticket, now, now + wait)
                raise self._late_error(ticket, now)
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def close(self) -> None:
        self._held.clear()  # the pool is closing: nothing left to let go
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for ticket in self.pacer.close(self._loop.time()):
            future: Any = ticket.token
            if future is not None and not future.done():
                future.set_exception(PoolClosedError("Connector is closed."))
        self._deliver()

    # ----------------------------------------------------------- internals

    def _carry_out(self, released: list[PaceTicket]) -> None:
        """Wake the tickets let go; a ticket whose task was cancelled before
        the wake-up reached it ends unsent, which may let the next one go
        (a worklist, not recursion)."""
        work = released
        while work:
            ticket = work.pop()
            future: Any = ticket.token
            if future is not None and not future.done():
                future.set_result(None)
            elif ticket.state == GO and future is not None:
                work.extend(self.pacer.ended(ticket, self._loop.time(), sent=False))
        if self._held:
            self._let_go_of_ended_pauses()
        self._deliver()
        self._arm()

    def _let_go_of_ended_pauses(self) -> None:
        """Release the pool's hold on hosts whose pause ended (run or
        resumed): a scan of the paused hosts only, after each pacer step."""
        connector = self._connector()
        for key in list(self._held):
            hs = self.pacer.host_state(key)
            if hs is None or hs.paused_until is None:
                self._held.discard(key)
                if connector is not None and not connector._core.closed:
                    connector._hold(key, False)

    def _deliver(self) -> None:
        connector = self._connector()
        if connector is not None and connector._pending_events:
            connector._deliver()

    def _arm(self) -> None:
        """One loop timer, for the earliest due host; moved only earlier (a
        timer that fires early finds nothing due and re-arms)."""
        when = self.pacer.next_due()
        if when is None:
            return
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        self._carry_out(self.pacer.due(self._loop.time()))

    def _late_error(self, ticket: PaceTicket, now: float) -> PacingDeadlineError:
        key: PoolKey = ticket.key  # type: ignore[assignment]
        deadline = ticket.deadline
        left = 0.0 if deadline is None else max(deadline - now, 0.0)
        figures = self.pacer.figures(key)
        why = f"delay {self.pacer.delay_of(key):g} s"
        if figures is not None:
            why += f", {figures.waiting} waiting on pacing"
            if figures.paused_until is not None:
                why += (
                    f", paused for {figures.paused_until - now:.3g} s more "
                    f"({figures.pause_reason})"
                )
        return PacingDeadlineError(
            f"Pacing of {key} would start this request in "
            f"{ticket.start - now:.3g} s, after its ClientTimeout deadline "
            f"(in {left:.3g} s): {why}",
            key,
            left,
            start=ticket.start,
            deadline=deadline,
        )
