"""``fleet_status()``: the whole fleet read from Redis, for
``aioconnpool fleet status`` and for tests.

Read-only. Everything is read in one MULTI/EXEC transaction per step, so each
host's holders and queue are consistent with each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._config import mask_url, validate_config
from ._connect import open_client, open_slot_node

__all__ = ["FleetHostStatus", "FleetSessionStatus", "FleetStatus", "fleet_status"]


@dataclass(frozen=True, slots=True)
class FleetSessionStatus:
    """One process's session: ``pid`` and ``hostname`` of the process,
    ``lease_left`` seconds before its lease runs out (negative: expired,
    not yet collected), ``age`` seconds since it joined."""

    session: str
    pid: int | None
    hostname: str
    lease_left: float
    age: float | None


@dataclass(frozen=True, slots=True)
class FleetHostStatus:
    """One host: the fleet ``limit`` last sent for it, the slots ``held``
    (total and per session in ``holders``) and the requests ``waiting``."""

    host: str
    limit: int
    held: int
    waiting: int
    holders: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FleetStatus:
    name: str
    address: str
    epoch: str | None
    grace_left: float
    sessions: list[FleetSessionStatus]
    hosts: list[FleetHostStatus]
    hosts_total: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "epoch": self.epoch,
            "grace_left": self.grace_left,
            "sessions": [vars_of(s) for s in self.sessions],
            "hosts": [vars_of(h) for h in self.hosts],
            "hosts_total": self.hosts_total,
        }


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


async def fleet_status(
    url: str, *, name: str, max_hosts: int = 100, cluster: bool = False
) -> FleetStatus:
    """The fleet ``name`` on the Redis at ``url`` (with ``cluster=True``,
    any node of a Redis Cluster): sessions, and the ``max_hosts`` most
    recently used hosts."""
    config = validate_config(
        url,
        name=name,
        limit_per_host=1,
        host_limits=None,
        lease_ttl=1.0,
        on_unavailable="raise",
        acquire_timeout=None,
        redis_timeout=5.0,
        cluster=cluster,
    )
    p = config.prefix
    client = open_client(config, timeout=5.0)
    if cluster:
        # Read the shard's primary directly: the reads below are one
        # transaction, on the one slot the whole fleet lives in.
        try:
            node = await open_slot_node(client, config, timeout=5.0)
        finally:
            await client.aclose()
        client = node
    try:
        async with client.pipeline(transaction=True) as pipe:
            pipe.time()
            pipe.get(f"{p}epoch")
            pipe.zrange(f"{p}sessions", 0, -1, withscores=True)
            pipe.hgetall(f"{p}sinfo")
            pipe.zrevrange(f"{p}hosts", 0, max_hosts - 1)
            pipe.zcard(f"{p}hosts")
            (
                now_pair,
                epoch,
                leases,
                infos,
                host_names,
                hosts_total,
            ) = await pipe.execute()
        now_ms = now_pair[0] * 1000 + now_pair[1] // 1000
        async with client.pipeline(transaction=True) as pipe:
            for host in host_names:
                pipe.get(f"{p}h:{host}:limit")
                pipe.hgetall(f"{p}h:{host}:holders")
                # Live sessions' waiters (see waiting_of in the script).
                pipe.hvals(f"{p}h:{host}:queued")
            per_host = await pipe.execute()
    finally:
        await client.aclose()
    grace_left = 0.0
    if epoch:
        grace_until = int(epoch.split("|", 1)[1])
        grace_left = max(0.0, (grace_until - now_ms) / 1000)
    sessions = []
    for session, expiry in leases:
        pid: int | None = None
        hostname = ""
        age: float | None = None
        info = infos.get(session, "").split()
        if len(info) == 4:
            pid, hostname, age = int(info[0]), info[1], (now_ms - int(info[3])) / 1000
        sessions.append(
            FleetSessionStatus(
                session=session,
                pid=pid,
                hostname=hostname,
                lease_left=(expiry - now_ms) / 1000,
                age=age,
            )
        )
    hosts = []
    for i, host in enumerate(host_names):
        limit, holders, waiting = per_host[3 * i : 3 * i + 3]
        held = {s: int(n) for s, n in holders.items()}
        hosts.append(
            FleetHostStatus(
                host=host,
                limit=int(limit or 0),
                held=sum(held.values()),
                waiting=sum(int(n) for n in waiting),
                holders=held,
            )
        )
    return FleetStatus(
        name=name,
        address=mask_url(url),
        epoch=epoch.split("|", 1)[0] if epoch else None,
        grace_left=grace_left,
        sessions=sessions,
        hosts=hosts,
        hosts_total=int(hosts_total),
    )
