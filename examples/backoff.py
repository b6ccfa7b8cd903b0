"""Backoff: a host answers 429 with Retry-After, the pool pauses it."""

from __future__ import annotations

import asyncio

import aiohttp
from _loopback import run

from aioconnpool import (
    HostPaused,
    HostResumed,
    PoolConnector,
    PoolEvent,
    backoff_middleware,
)
from aioconnpool.testing import LoopbackResolver


async def fetch(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


def show(event: PoolEvent) -> None:
    if isinstance(event, HostPaused):
        print(f"  paused  {event.key.host} ({event.reason})")
    elif isinstance(event, HostResumed):
        print(f"  resumed {event.key.host}")


async def main(port: int) -> None:
    # --8<-- [start:backoff]
    connector = PoolConnector(
        delay_per_host=0.1, resolver=LoopbackResolver(suffix=".test")
    )
    backoff = backoff_middleware(connector, retries=2)  # aiohttp >= 3.12
    connector.add_listener(show)
    async with aiohttp.ClientSession(
        connector=connector, middlewares=[backoff]
    ) as session:
        # busy.test answers its first request 429 with Retry-After: 1.
        busy = f"http://busy.test:{port}/throttle?after=1"
        calm = f"http://calm.test:{port}/small"
        statuses = await asyncio.gather(
            *(fetch(session, busy) for _ in range(3)),
            *(fetch(session, calm) for _ in range(3)),
        )
        print("statuses:", statuses)
        print(
            f"throttled {backoff.throttled}, retried {backoff.retried}, "
            f"pauses {connector.stats().pauses}"
        )
    # --8<-- [end:backoff]


if __name__ == "__main__":
    run(main)
