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

import asyncio
import contextlib
from typing import Any

from yarl import URL

try:
    import redis
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisClusterException, RedisError
except ImportError as exc:  # pragma: no cover - the [redis] extra is missing
    raise ImportError(
        "aioconnpool.fleet needs redis-py: pip install 'aioconnpool[redis]'"
    ) from exc

from ._config import FleetConfig

__all__ = [
    "CALL_FAILED",
    "UNREACHABLE",
    "check_cluster_support",
    "open_client",
    "open_slot_node",
    "reopen_cluster",
]

# What "Redis cannot be reached" looks like. A cluster client adds its own
# errors outside RedisError's tree (no node reachable, a slot not covered).
UNREACHABLE = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)
# What a call to Redis may raise, all taken as "Redis cannot be used now":
# the above, and a client library's own bug (redis-py 5.0's cluster client
# can raise UnboundLocalError after a failed reconnection). Such an error
# must not end the task that calls Redis or the heartbeat that brings it
# back; it is reported like an outage, with its type and message.
CALL_FAILED = (Exception,)

_REDIS_MAJOR = int(redis.__version__.split(".", 1)[0])


def _options(timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": True,
        # Never send a call again by itself: a script whose reply was lost
        # may have run, and its operations (acquire, release, take) are not
        # safe to repeat. A failed call is an outage instead, after which
        # the process registers what it really holds (see _redis).
        "retry": Retry(NoBackoff(), 0),
    }


def check_cluster_support() -> None:
    """``cluster=True`` needs redis-py 6.0 or later: 5.x's asyncio cluster
    client, without its own retries, does not come back after every node
    restarted (it fails with an UnboundLocalError of its own)."""
    if _REDIS_MAJOR < 6:
        raise RuntimeError(
            "RedisFleet(cluster=True) needs redis-py 6.0 or later "
            f"(installed: {redis.__version__}): pip install 'redis>=6'"
        )


def open_client(config: FleetConfig, *, timeout: float) -> Any:
    """The client every script call goes through: a ``Redis``, or with
    ``cluster=True`` a ``RedisCluster`` that finds the fleet's shard from
    the node in ``config.url`` and follows it through failovers (MOVED;
    those redirections are not retries: the command did not run)."""
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


async def reopen_cluster(
    client: Any,
    config: FleetConfig,
    *,
    timeout: float,
    errors: tuple[type[BaseException], ...],
) -> Any:
    """A new ``RedisCluster`` client after an outage, started from the first
    node that answers among those ``client`` knew, then the URL's own (which
    may be the one that died). A fresh client has no stale connection to a
    restarted node and a fresh map of the slots; the caller closes the old
    one. Raises the last error when no node answers."""
    known = [(str(n.host), int(n.port)) for n in client.get_nodes()]
    base = URL(config.url)
    if base.host is not None and base.port is not None:
        known.append((base.host, base.port))
    options = _options(timeout)
    error: BaseException | None = None
    for host, port in dict.fromkeys(known):
        url = str(base.with_host(host).with_port(port))
        fresh = RedisCluster.from_url(url, **options)
        try:
            await asyncio.wait_for(fresh.initialize(), timeout * 2)
        except errors as exc:
            error = exc
            with contextlib.suppress(*errors):
                await fresh.aclose()
            continue
        return fresh
    assert error is not None
    raise error
