"""The fleet's heartbeat: one task per process that renews the lease,
picks up grants whose wake-up message was missed, notices a lapsed lease,
and brings the fleet back after an outage (see ``_redis``)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ._connect import CALL_FAILED, UNREACHABLE, reopen_cluster
from ._listener import close_quietly

if TYPE_CHECKING:
    from ._redis import RedisFleet

__all__ = ["beat", "recover"]

log = logging.getLogger("aioconnpool.fleet")


async def beat(fleet: RedisFleet) -> None:
    """Renew the lease, pick up grants whose wake-up was missed, and
    bring the fleet back after an outage."""
    interval = fleet._config.lease_ttl / 3
    loop = fleet._loop
    assert loop is not None
    while not fleet._closed:
        await asyncio.sleep(
            interval if fleet._state == "connected" else min(interval, 1.0)
        )
        if fleet._state == "unavailable":
            await recover(fleet)
            continue
        fleet._forget_unused_hosts()
        holding = any(h.held or h.tickets for h in fleet._hosts.values())
        if not holding:
            continue
        if fleet._lease_until and loop.time() > fleet._lease_until:
            fleet._lapsed()
            continue
        fleet._renew = True
        fleet._poll_waiting()


async def recover(fleet: RedisFleet) -> None:
    """Try Redis again; on success, resync under a new session."""
    try:
        if fleet._config.cluster:
            # The client does not retry (see _connect), so it does not
            # look for the slot's new primary by itself either, and its
            # pools may hold connections to nodes that restarted: start
            # a fresh one from the nodes it knew.
            fresh = await reopen_cluster(
                fleet._redis,
                fleet._config,
                timeout=fleet._config.redis_timeout,
                errors=UNREACHABLE,
            )
            old = fleet._redis
            fleet._use(fresh)
            await close_quietly(old)
        # A keyed read, not PING: in a cluster it must reach the shard
        # that serves the fleet (PING would ask every node).
        await asyncio.wait_for(
            fleet._redis.exists(f"{fleet._config.prefix}epoch"),
            fleet._config.redis_timeout * 2,
        )
    except CALL_FAILED:
        return
    log.warning(
        "Fleet %r: Redis at %s is back; re-registering this process's slots",
        fleet._config.name,
        fleet._config.address,
    )
    fleet._state = "connected"
    fleet._resync()
    # (Pauses shared meanwhile are asked for by the listener, whose
    # subscription broke with the outage.)
    fleet._pacing.back()
