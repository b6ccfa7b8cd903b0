"""What a process of a fleet knows of each host and of each of its waiting
requests, and what the next script call carries for a host (``_redis``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aioconnpool import PoolKey

__all__ = ["CANCELLED", "SENT", "UNSENT", "Host", "Ticket", "ops_for"]

# Ticket states.
UNSENT = 0  # its acquire waits for the next call
SENT = 1  # in Redis: queued, or granted and not yet seen
CANCELLED = 2  # gave up after its acquire was sent: a cancel is owed


class Ticket:
    """One request of this process waiting for a fleet slot."""

    __slots__ = ("future", "id", "state")

    def __init__(self, ticket_id: str, future: asyncio.Future[None]) -> None:
        self.id = ticket_id
        self.future = future
        self.state = UNSENT


@dataclass(slots=True)
class Host:
    """One host as this process sees it."""

    key: PoolKey
    name: str  # its name in Redis: str(key)
    limit: int
    held: int = 0  # slots this process holds (fleet grants and local ones)
    tickets: dict[str, Ticket] = field(default_factory=dict)  # waiting here
    # What the next call carries for this host.
    acquires: list[str] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    takes: list[str] = field(default_factory=list)
    releases: int = 0
    register: bool = False  # re-register `held` (after a resync)
    poll: bool = False  # ask even with nothing to say (grants may be waiting)
    # The fleet's figures as of the last reply.
    fleet_acquired: int = 0
    fleet_waiting: int = 0
    reply_at: float = float("-inf")  # loop time of the last reply about it

    def has_news(self) -> bool:
        return bool(
            self.acquires or self.cancels or self.releases or self.register or self.poll
        )


def ops_for(host: Host) -> list[str]:
    """What the next script call carries for ``host`` (pairs of an op letter
    and its argument, as ``_script.lua`` reads them), taken from its queues,
    which are left empty."""
    ops: list[str] = []
    if host.register:
        ops += ("S", str(host.held))
        host.register = False
    for ticket_id in host.takes:
        ops += ("K", ticket_id)
    host.takes.clear()
    for ticket_id in host.cancels:
        ops += ("C", ticket_id)
        # Redis answers for it now: a grant stored for it is given
        # back by this cancel, and one announced later is ignored.
        host.tickets.pop(ticket_id, None)
    host.cancels.clear()
    # Read and cleared in one step: a release from a garbage-collected
    # connection (FleetConnection.__del__) may come in between.
    released, host.releases = host.releases, 0
    if released:
        ops += ("R", str(released))
    # What Redis must count for us here once the above is applied
    # (grants it stored that we have not taken aside): counting
    # fewer shows writes it lost (a failover), answered BEHIND at
    # once, not only when a release of ours goes below zero. Read
    # after the releases: one that a collected connection makes
    # meanwhile lowers this and goes with the next call, so a count
    # too low (never too high) is all such a race can send.
    ops += ("V", str(host.held))
    for ticket_id in host.acquires:
        ops += ("A", ticket_id)
        ticket = host.tickets.get(ticket_id)
        if ticket is not None:
            ticket.state = SENT
    host.acquires.clear()
    host.poll = False
    return ops
