"""Crawl politeness: per-host pacing, and a host that asks for a pause."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict

import aiohttp
from _loopback import run

from aioconnpool import Acquired, PoolConnector, PoolEvent
from aioconnpool.testing import LoopbackResolver


async def fetch(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        return await resp.text()


async def main(port: int) -> None:
    # --8<-- [start:pacing]
    connector = PoolConnector(
        limit=10,
        delay_per_host=0.2,  # at least 0.2 s between two starts to one host
        host_delays={"slow.test": 0.5},  # host_limits patterns
        delay_jitter=0.5,  # each gap drawn from 0.5x .. 1.5x the delay
        resolver=LoopbackResolver(suffix=".test"),
    )
    # When each request got its connection: its start.
    starts: dict[str, list[float]] = defaultdict(list)

    def record(event: PoolEvent) -> None:
        if isinstance(event, Acquired):
            starts[event.key.host].append(event.at)

    connector.add_listener(record)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Ten requests to each host, all issued at once.
        hosts = ("a.test", "slow.test")
        urls = [f"http://{host}:{port}/small" for host in hosts for _ in range(10)]
        await asyncio.gather(*(fetch(session, url) for url in urls))
        stats = connector.stats()
        print(f"{stats.requests} requests, {stats.paced} waited on pacing")
        for host in hosts:
            delay = connector.stats(f"http://{host}:{port}").delay
            shortest = min(b - a for a, b in itertools.pairwise(starts[host]))
            print(
                f"{host}: delay {delay} s, gaps >= {delay * 0.5:g} s: "
                f"{shortest >= delay * 0.5}"
            )
    # --8<-- [end:pacing]


if __name__ == "__main__":
    run(main)
