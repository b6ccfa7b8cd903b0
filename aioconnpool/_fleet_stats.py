"""What ``PoolStats.fleet`` shows: the fleet-wide limits seen from one process.

Plain snapshot types, filled in by a fleet backend (``aioconnpool.fleet``).
Fleet-wide figures (``acquired``, ``waiting``) are as of the last reply from
the fleet's store, not live: each acquire, release and heartbeat refreshes
them. This process's own figures (``mine``, ``waiting_here``) are exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._export import stats_to_dict
from ._histogram import Histogram
from ._keys import PoolKey

__all__ = ["FleetHostStats", "FleetStats"]


@dataclass(frozen=True, slots=True)
class FleetHostStats:
    """One host's fleet-wide limit.

    ``limit`` is the fleet limit; ``acquired`` the slots held across the
    fleet and ``waiting`` the requests queued for one across the fleet (both
    as of the last reply); ``mine`` the slots this process holds and
    ``waiting_here`` its requests waiting for one.
    """

    limit: int
    acquired: int = 0
    waiting: int = 0
    mine: int = 0
    waiting_here: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field."""
        return stats_to_dict(self)


@dataclass(frozen=True, slots=True)
class FleetStats:
    """The fleet as one process sees it.

    ``state`` is ``"connected"``, ``"unavailable"`` (the store cannot be
    reached: ``on_unavailable`` applies) or ``"closed"``; ``address`` the
    store's address with any password masked; ``session`` this process's
    current session (a new one after every outage or lapsed lease);
    ``outages`` how many times the store became unreachable; ``lapses`` how
    many times this process found its lease had run out (a pause longer than
    the lease) or the store's count of its slots short (writes lost in a
    failover), and registered its slots anew; ``local_grants`` the
    acquisitions let through on local limits alone during outages
    (``on_unavailable="local"``); ``round_trips`` the calls made to the store
    and ``round_trip`` their durations (pacing's calls included).

    Fleet-wide pacing (``delay_per_host``, ``host_delays``, pauses):
    ``pace_calls`` the calls made for it; ``reservations`` the fleet-wide
    starts reserved; ``local_paces`` the paced requests let through on
    local pacing alone during outages (``on_unavailable="local"``);
    ``pauses_sent`` the pauses this process shared with the fleet and
    ``pauses_received`` those it took from other processes; ``paused`` the
    fleet-wide pauses in force as this process knows them: host -> (end on
    the loop's clock, reason).
    """

    name: str
    address: str
    state: str
    session: str
    on_unavailable: str
    lease_ttl: float
    outages: int = 0
    lapses: int = 0
    local_grants: int = 0
    round_trips: int = 0
    round_trip: Histogram = field(default_factory=Histogram)
    pace_calls: int = 0
    reservations: int = 0
    local_paces: int = 0
    pauses_sent: int = 0
    pauses_received: int = 0
    paused: Mapping[PoolKey, tuple[float, str]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    hosts: Mapping[PoolKey, FleetHostStats] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field (``PoolKey`` keys as strings)."""
        return stats_to_dict(self)
