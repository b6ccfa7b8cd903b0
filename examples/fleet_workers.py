"""Three workers, one budget per host: fleet-wide limits on Redis.

Each worker has its own connector, as separate processes would (the fleet
does not care whether they share a process or a machine): three connectors
with ``limit_per_host=8`` would open 24 connections to a host, and the fleet
holds them to 4 (1 for ``slow.test``), counted across all of them.

    python examples/fleet_workers.py [REDIS_URL]

Without ``REDIS_URL``, it starts a throwaway ``redis-server`` on loopback
(``aioconnpool.testing.RedisServer``; Debian: ``apt-get install
redis-server``).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from _loopback import run

from aioconnpool import PoolConnector
from aioconnpool.fleet import RedisFleet
from aioconnpool.testing import LoopbackResolver, RedisServer

WORKERS = 3
REQUESTS = 20  # per worker and host


# --8<-- [start:fleet]
def make_connector(redis_url: str) -> PoolConnector:
    fleet = RedisFleet(
        redis_url,
        name="news-crawl",  # every key lives under aioconnpool:{news-crawl}:
        limit_per_host=4,  # at most 4 connections per host, fleet-wide
        host_limits={"slow.test": 1},
        lease_ttl=10.0,  # a dead worker's slots return within ~13 s
        on_unavailable="local",  # Redis down: go on with the local limits
    )
    return PoolConnector(
        limit=100,
        limit_per_host=8,
        fleet=fleet,
        resolver=LoopbackResolver(suffix=".test"),
    )


# --8<-- [end:fleet]


class Busy:
    """Requests sent and not yet answered, per host, across all workers: what
    the server sees at once. Each holds a fleet slot."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    def trace_config(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()

        async def sent(session: object, context: object, params: Any) -> None:
            host = params.url.host
            self.now[host] = self.now.get(host, 0) + 1
            self.peak[host] = max(self.peak.get(host, 0), self.now[host])

        async def answered(session: object, context: object, params: Any) -> None:
            self.now[params.url.host] -= 1

        config.on_request_headers_sent.append(sent)
        config.on_request_end.append(answered)
        return config


async def worker(port: int, redis_url: str, busy: Busy) -> None:
    """One worker: REQUESTS requests to each host, all at once."""
    connector = make_connector(redis_url)
    async with aiohttp.ClientSession(
        connector=connector, trace_configs=[busy.trace_config()]
    ) as session:

        async def fetch(host: str) -> None:
            async with session.get(f"http://{host}:{port}/slow?delay=0.01") as resp:
                await resp.read()

        hosts = ("a.test", "slow.test")
        await asyncio.gather(*(fetch(h) for _ in range(REQUESTS) for h in hosts))


async def main(port: int, redis_url: str) -> dict[str, int]:
    # --8<-- [start:main]
    busy = Busy()
    await asyncio.gather(*(worker(port, redis_url, busy) for _ in range(WORKERS)))
    for host, peak in sorted(busy.peak.items()):
        print(f"{host}: at most {peak} at once across {WORKERS} workers")
    # --8<-- [end:main]
    return busy.peak


def _with_redis(port: int) -> object:
    if len(sys.argv) > 1:
        return main(port, sys.argv[1])

    async def own_redis() -> dict[str, int]:
        with tempfile.TemporaryDirectory() as tmp:
            redis = RedisServer(Path(tmp))
            try:
                return await main(port, redis.url)
            finally:
                redis.stop()

    return own_redis()


if __name__ == "__main__":
    run(_with_redis)  # type: ignore[arg-type]
