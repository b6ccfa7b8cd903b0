"""How a fleet reaches Redis: one server (or a Sentinel-managed primary
behind one address), or a Redis Cluster.

In a cluster, every key of a fleet shares the hash tag ``{NAME}``, so the
whole fleet lives in one slot, on one shard. That is what lets each step of
the protocol stay one atomic script over many hosts at once; the price is
that one fleet's load goes to one shard, which at a few hundredths of a
round trip per request is far below what a shard serves. Different fleets
(names) spread over the shards.

The wake channel is published with ``PUBLISH``, which a cluster forwards to
every node, so a process subscribes on one node: the primary of the fleet's
slot, reached with a plain client (redis-py's asyncio ``RedisCluster`` has
no pub/sub before 8.x, and the subscription must follow a failover anyway,
which the listener does by subscribing anew).
"""

from __future__ import annotations

from typing import Any

from yarl import URL

try:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster
except ImportError as exc:  # pragma: no cover - the [redis] extra is missing
    raise ImportError(
        "aioconnpool.fleet needs redis-py: pip install 'aioconnpool[redis]'"
    ) from exc

from ._config import FleetConfig

__all__ = ["open_client", "open_slot_node"]


def _options(timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": True,
    }


def open_client(config: FleetConfig, *, timeout: float) -> Any:
    """The client every script call goes through: a ``Redis``, or with
    ``cluster=True`` a ``RedisCluster`` that finds the fleet's shard from
    the node in ``config.url`` and follows it through failovers (MOVED)."""
    if config.cluster:
        return RedisCluster.from_url(config.url, **_options(timeout))
    return aioredis.Redis.from_url(config.url, **_options(timeout))


async def open_slot_node(client: Any, config: FleetConfig, *, timeout: float) -> Any:
    """A plain ``Redis`` client to the primary that serves the fleet's slot
    now (``client`` is a ``RedisCluster``): for pub/sub, and for reads that
    a cluster client cannot make in one transaction. The URL's password,
    TLS and options are kept; only the address changes."""
    await client.initialize()
    node = client.get_node_from_key(f"{config.prefix}epoch")
    url = URL(config.url).with_host(str(node.host)).with_port(int(node.port))
    return aioredis.Redis.from_url(str(url), **_options(timeout))
