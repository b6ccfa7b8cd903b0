"""The glue's side of fleet-wide pacing: what a fleet backend offers for it.

With a fleet that offers it (``aioconnpool.fleet.RedisFleet``), the pacing
gate (``pacing.PacingGate``) asks the backend for a fleet-wide start after
the local pacer let a request go, and shares the pauses it is asked for;
the backend tells the gate of pauses set by other processes through the
callbacks given to ``pacing_listen`` (``FleetGatedConnector`` registers
them, holding the connector weakly). The local pacer keeps ordering each
host's requests in this process, one at a time (its head asks the fleet),
so the fleet sees this process's requests in their order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .._keys import PoolKey

__all__ = ["FleetPacingBackend"]


@runtime_checkable
class FleetPacingBackend(Protocol):
    """What fleet-wide pacing needs from a fleet backend.

    ``reserve_start`` reserves the next fleet-wide start of ``key``, ``gap``
    seconds after the previous one and no sooner than a pause ends, and
    answers ``(seconds to wait, True)``; or ``(seconds it would wait,
    False)`` without reserving when that start passes ``deadline`` (loop
    time). ``confirm_start``, once the request has its connection, checks
    that no start anywhere came less than a gap ago (a start that came late,
    or a slow connect, would otherwise squeeze the next one): ``(0, True)``
    to go, ``(seconds, True)`` to wait and ask again, ``(seconds, False)``
    past the deadline. Both follow the backend's ``on_unavailable`` when its store
    cannot be reached. ``share_pause`` / ``share_resume`` pass a pause (or
    its end) to every process of the fleet, without awaiting;
    ``pacing_listen`` gives the callbacks for those that other processes
    share (``on_pause(key, seconds, reason)``, ``on_resume(key)``).
    """

    def pacing_listen(
        self,
        on_pause: Callable[[PoolKey, float, str], None],
        on_resume: Callable[[PoolKey], None],
    ) -> None: ...

    async def reserve_start(
        self, key: PoolKey, gap: float, deadline: float | None
    ) -> tuple[float, bool]: ...

    async def confirm_start(
        self, key: PoolKey, gap: float, deadline: float | None
    ) -> tuple[float, bool]: ...

    def share_pause(self, key: PoolKey, seconds: float, reason: str) -> None: ...

    def share_resume(self, key: PoolKey) -> None: ...
