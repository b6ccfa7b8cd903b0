"""requests / urllib3 pool settings, redone with PoolConnector.

Each section is one classic HTTPAdapter setup and its asyncio equivalent,
run against loopback hosts; the output shows what the pool did.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import aiohttp
from _loopback import brief, run, wait_until

from aioconnpool import PoolConnector, PoolFullError, PoolTimeoutError
from aioconnpool.testing import LoopbackResolver

LOOPBACK = LoopbackResolver(suffix=".test")


async def fetch(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


# --8<-- [start:maxsize]
async def pool_maxsize(port: int) -> None:
    # requests: HTTPAdapter(pool_maxsize=2)  (pool_block=False, the default)
    connector = PoolConnector(max_idle_per_host=2, resolver=LOOPBACK)
    url = f"http://api.test:{port}/slow?delay=0.1"
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(fetch(session, url) for _ in range(4)))
        print("  api.test:", brief(connector.stats(url)))


# --8<-- [end:maxsize]


# --8<-- [start:block]
async def pool_block(port: int) -> None:
    # requests: HTTPAdapter(pool_maxsize=2, pool_block=True)
    connector = PoolConnector(limit_per_host=2, resolver=LOOPBACK)
    url = f"http://api.test:{port}/slow?delay=0.3"
    async with aiohttp.ClientSession(connector=connector) as session:
        requests = [asyncio.create_task(fetch(session, url)) for _ in range(4)]
        await wait_until(lambda: connector.stats(url).acquired == 2)
        print("  during:  ", brief(connector.stats(url)))
        await asyncio.gather(*requests)
        print("  after:   ", brief(connector.stats(url)))


# --8<-- [end:block]


# --8<-- [start:connections]
async def pool_connections(port: int) -> None:
    # requests: HTTPAdapter(pool_connections=2)
    connector = PoolConnector(max_hosts=2, resolver=LOOPBACK)
    async with aiohttp.ClientSession(connector=connector) as session:
        for host in ("a.test", "b.test", "c.test"):
            await fetch(session, f"http://{host}:{port}/small")
        for host in ("a.test", "b.test", "c.test"):
            print(f"  {host}:", brief(connector.stats(f"http://{host}:{port}")))


# --8<-- [end:connections]


# --8<-- [start:nonblocking]
async def refuse_when_full(port: int) -> None:
    # requests: HTTPAdapter(pool_block=True) with pool_timeout=0 (never waits)
    connector = PoolConnector(limit_per_host=1, block=False, resolver=LOOPBACK)
    url = f"http://api.test:{port}/slow?delay=0.3"
    async with aiohttp.ClientSession(connector=connector) as session:
        first = asyncio.create_task(fetch(session, url))
        await wait_until(lambda: connector.stats(url).acquired == 1)
        try:
            await fetch(session, url)
        except PoolFullError as exc:
            print("  refused:", type(exc).__name__, "for", exc.key.host)
        print("  first:  ", await first)
        print("  api.test:", brief(connector.stats(url)))


# --8<-- [end:nonblocking]


# --8<-- [start:timeout]
async def pool_timeout(port: int) -> None:
    # urllib3: PoolManager(maxsize=1, block=True, timeout=...) waiting at most
    # 0.1 s for a connection (its pool_timeout)
    connector = PoolConnector(limit_per_host=1, acquire_timeout=0.1, resolver=LOOPBACK)
    url = f"http://api.test:{port}/slow?delay=0.5"
    async with aiohttp.ClientSession(connector=connector) as session:
        first = asyncio.create_task(fetch(session, url))
        await wait_until(lambda: connector.stats(url).acquired == 1)
        try:
            await fetch(session, url)
        except PoolTimeoutError as exc:
            print("  gave up:", type(exc).__name__, exc.key.host, exc.timeout)
        await first
        print("  api.test:", brief(connector.stats(url)))


# --8<-- [end:timeout]


# --8<-- [start:mount]
async def mount(port: int) -> None:
    # requests:
    #   session.mount("http://", HTTPAdapter(pool_maxsize=4, pool_block=True))
    #   session.mount("http://slow.test", HTTPAdapter(pool_maxsize=1, pool_block=True))
    #   session.mount("http://api.test", HTTPAdapter(pool_maxsize=8, pool_block=True))
    connector = PoolConnector(
        limit_per_host=4,
        host_limits={"slow.test": 1, "api.test": 8},
        resolver=LOOPBACK,
    )
    try:
        for host in ("slow.test", "api.test", "other.test"):
            print(f"  {host} limit:", connector.stats(f"http://{host}:{port}").limit)
        connector.set_host_limit("slow.test", 2)  # at runtime
        print("  host_limits:", connector.host_limits)
        slow = connector.stats(f"http://slow.test:{port}")
        print("  slow.test limit now:", slow.limit)
        connector.remove_host_limit("slow.test")
        print("  removed:", connector.host_limits)
    finally:
        await connector.close()


# --8<-- [end:mount]


async def main(port: int) -> None:
    # --8<-- [start:logging]
    # The pool logs in urllib3's words to the "aioconnpool" logger.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  log: %(levelname)s %(message)s"))
    logging.getLogger("aioconnpool").addHandler(handler)
    # --8<-- [end:logging]
    try:
        for section in (
            pool_maxsize,
            pool_block,
            pool_connections,
            refuse_when_full,
            pool_timeout,
            mount,
        ):
            print(f"{section.__name__}:")
            await section(port)
    finally:
        logging.getLogger("aioconnpool").removeHandler(handler)


if __name__ == "__main__":
    run(main)
