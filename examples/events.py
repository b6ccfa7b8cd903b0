"""Pool events: a listener sees every step of every request."""

from __future__ import annotations

import asyncio
import dataclasses

import aiohttp
from _loopback import run

from aioconnpool import PoolConnector, PoolEvent
from aioconnpool.testing import LoopbackResolver

TIMES = ("at", "duration", "held", "waited", "idle_for", "lifetime")


# --8<-- [start:listener]
def show(event: PoolEvent) -> None:
    """Print an event without its times (they differ on every run)."""
    fields = {
        f.name: getattr(event, f.name)
        for f in dataclasses.fields(event)
        if f.name not in ("key", *TIMES)
    }
    print(f"  {type(event).__name__:<14} {event.key.host} {fields or ''}".rstrip())


# --8<-- [end:listener]


async def fetch(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as resp:
        return await resp.read()


async def main(port: int) -> None:
    # --8<-- [start:events]
    connector = PoolConnector(
        limit_per_host=1, resolver=LoopbackResolver(suffix=".test")
    )
    connector.add_listener(show)
    url = f"http://a.test:{port}"
    async with aiohttp.ClientSession(connector=connector) as session:
        print("one request, then another that reuses its socket:")
        for _ in range(2):
            await fetch(session, f"{url}/small")
        print("two at once with limit_per_host=1: the second queues:")
        await asyncio.gather(
            fetch(session, f"{url}/slow"), fetch(session, f"{url}/slow")
        )
        print("the server closes:")
        await fetch(session, f"{url}/close")
        connector.remove_listener(show)
    # --8<-- [end:events]


if __name__ == "__main__":
    run(main)
