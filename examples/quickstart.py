"""Quick start: swap TCPConnector for PoolConnector, then read stats()."""

from __future__ import annotations

import aiohttp
from _loopback import brief, run

from aioconnpool import PoolConnector
from aioconnpool.testing import LoopbackResolver


async def main(port: int) -> None:
    # --8<-- [start:swap]
    connector = PoolConnector(  # was: aiohttp.TCPConnector(
        limit=100,
        limit_per_host=5,
        resolver=LoopbackResolver(suffix=".test"),  # *.test -> 127.0.0.1
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(3):
            async with session.get(f"http://a.test:{port}/small") as resp:
                await resp.text()
        held = await session.get(f"http://b.test:{port}/big")  # body not read yet

        print(repr(connector))
        print("pool:  ", brief(connector.stats()))
        print("a.test:", brief(connector.stats(f"http://a.test:{port}/")))
        print("b.test:", brief(connector.stats(f"http://b.test:{port}/")))
        for info in connector.connections():
            print(info.key.host, info.state, "requests served:", info.requests)
        held.release()
    # --8<-- [end:swap]


if __name__ == "__main__":
    run(main)
