"""Where did my connection go? Every way an acquisition ends, with stats.

Each scenario uses a host of its own, so its figures stand alone; the
output shows that host's stats while the response is held and after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
from _loopback import brief, run, wait_until

from aioconnpool import PoolConnector
from aioconnpool.testing import LoopbackResolver

Scenario = Callable[[aiohttp.ClientSession, PoolConnector, str], Awaitable[None]]


# --8<-- [start:eof]
async def read_to_the_end(
    session: aiohttp.ClientSession, connector: PoolConnector, base: str
) -> None:
    resp = await session.get(f"{base}/big")
    print("  held:   ", brief(connector.stats(base)))
    await resp.read()  # the body's last byte gives the connection back


# --8<-- [end:eof]


# --8<-- [start:small]
async def small_body_not_read(
    session: aiohttp.ClientSession, connector: PoolConnector, base: str
) -> None:
    resp = await session.get(f"{base}/small")  # body came with the headers
    print("  held:   ", brief(connector.stats(base)))
    assert resp.status == 200  # never read, never released: already back


# --8<-- [end:small]


# --8<-- [start:release]
async def released_early(
    session: aiohttp.ClientSession, connector: PoolConnector, base: str
) -> None:
    async with session.get(f"{base}/big") as resp:
        print("  held:   ", brief(connector.stats(base)))
        assert resp.status == 200  # leaving the block releases, body unread


# --8<-- [end:release]


# --8<-- [start:close]
async def closed_by_caller(
    session: aiohttp.ClientSession, connector: PoolConnector, base: str
) -> None:
    resp = await session.get(f"{base}/big")
    print("  held:   ", brief(connector.stats(base)))
    resp.close()


# --8<-- [end:close]


# --8<-- [start:server]
async def server_says_close(
    session: aiohttp.ClientSession, connector: PoolConnector, base: str
) -> None:
    async with session.get(f"{base}/close") as resp:  # Connection: close
        await resp.read()


# --8<-- [end:server]


# --8<-- [start:error]
async def broken_body(
    session: aiohttp.ClientSession, connector: PoolConnector, base: str
) -> None:
    async with session.get(f"{base}/reset") as resp:  # server drops mid-body
        print("  held:   ", brief(connector.stats(base)))
        try:
            await resp.read()
        except aiohttp.ClientPayloadError as exc:
            print("  raised: ", type(exc).__name__)


# --8<-- [end:error]


# --8<-- [start:cancelled]
async def cancelled_while_reading(
    session: aiohttp.ClientSession, connector: PoolConnector, base: str
) -> None:
    async def fetch() -> None:
        async with session.get(f"{base}/slow?delay=5") as resp:  # no answer yet
            await resp.read()

    task = asyncio.create_task(fetch())
    await wait_until(lambda: connector.stats(base).acquired == 1)
    print("  held:   ", brief(connector.stats(base)))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# --8<-- [end:cancelled]


# --8<-- [start:redirect]
async def redirected(
    session: aiohttp.ClientSession, connector: PoolConnector, base: str
) -> None:
    async with session.get(f"{base}/redirect") as resp:  # 302 -> /small
        await resp.read()
    print("  history:", [r.status for r in resp.history], "->", resp.status)


# --8<-- [end:redirect]


SCENARIOS: dict[str, Scenario] = {
    "eof.test": read_to_the_end,
    "small.test": small_body_not_read,
    "release.test": released_early,
    "close.test": closed_by_caller,
    "server.test": server_says_close,
    "error.test": broken_body,
    "cancelled.test": cancelled_while_reading,
    "redirect.test": redirected,
}


async def main(port: int) -> None:
    connector = PoolConnector(
        limit=10, limit_per_host=2, resolver=LoopbackResolver(suffix=".test")
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        for host, scenario in SCENARIOS.items():
            base = f"http://{host}:{port}"
            print(f"{host} ({scenario.__name__})")
            await scenario(session, connector, base)
            await asyncio.sleep(0.05)  # let a closed socket's callbacks run
            print("  after:  ", brief(connector.stats(base)))


if __name__ == "__main__":
    run(main)
