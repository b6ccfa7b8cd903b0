"""The fleet's listener: one subscription per process, to its session's
wake channel (grants published by other processes' releases) and to the
fleet's pacing channel (pauses and resumes). A missed message costs at most
one heartbeat (``_heartbeat``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from ._connect import CALL_FAILED, UNREACHABLE, open_slot_node

if TYPE_CHECKING:
    from ._redis import RedisFleet

__all__ = ["close_quietly", "listen"]


async def listen(fleet: RedisFleet) -> None:
    """Grants for our waiting requests, published by other processes'
    releases. A missed message is picked up by the next heartbeat."""
    subscribed = ""
    pubsub = None
    node = None  # in a cluster: the client of the node subscribed on
    c = fleet._config
    prefix = f"{c.prefix}wake:"
    pace = f"{c.prefix}pace"
    try:
        while not fleet._closed:
            try:
                if pubsub is None:
                    if c.cluster:
                        node = await open_slot_node(
                            fleet._redis, c, timeout=c.redis_timeout
                        )
                        pubsub = node.pubsub()
                    else:
                        pubsub = fleet._redis.pubsub()
                    # Pauses announced by other processes; those set
                    # before this subscription are asked for once.
                    await pubsub.subscribe(pace)
                    fleet._pacing.relist()
                if subscribed != fleet._session:
                    if subscribed:
                        await pubsub.unsubscribe(prefix + subscribed)
                    subscribed = fleet._session
                    await pubsub.subscribe(prefix + subscribed)
                    # Anything granted before the subscription is picked
                    # up by asking once.
                    fleet._poll_waiting()
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=0.2
                )
            except CALL_FAILED:
                # (After a cluster failover, the next subscription goes
                # to the slot's new primary.)
                await close_quietly(pubsub, node)
                pubsub, node, subscribed = None, None, ""
                await asyncio.sleep(min(1.0, fleet._config.lease_ttl / 3))
                continue
            if message is None or message.get("type") != "message":
                continue
            if message["channel"] == pace:
                fleet._pacing.message(str(message["data"]))
                continue
            if message["channel"] != prefix + fleet._session:
                continue  # an old session's
            host_name, _, ticket_id = str(message["data"]).rpartition(" ")
            host = fleet._by_name.get(host_name)
            if host is not None and fleet._state == "connected":
                fleet._granted(host, ticket_id, stored=True)
    finally:
        await close_quietly(pubsub, node)


async def close_quietly(*clients: Any) -> None:
    """Close a subscription and its node client, which may be broken."""
    for client in clients:
        if client is not None:
            with contextlib.suppress(*UNREACHABLE):
                await client.aclose()
