"""The ``limit=25, limit_per_host=5`` puzzle: two hosts, five responses held,
and stats that surprise."""

from __future__ import annotations

import aiohttp
from _loopback import brief, run

from aioconnpool import PoolConnector
from aioconnpool.testing import LoopbackResolver


async def main(port: int) -> None:
    # --8<-- [start:puzzle]
    connector = PoolConnector(
        limit=25, limit_per_host=5, resolver=LoopbackResolver(suffix=".test")
    )
    a, b = f"http://a.test:{port}", f"http://b.test:{port}"
    async with aiohttp.ClientSession(connector=connector) as session:
        a1 = await session.get(f"{a}/small")  # small body: not read
        a2 = await session.get(f"{a}/small")  # small body: not read
        bs = [await session.get(f"{b}/big") for _ in range(3)]  # not read

        print("holding 5 responses")
        print("  a.test:", brief(connector.stats(a)))
        print("  b.test:", brief(connector.stats(b)))
        print("  pool:  ", brief(connector.stats()))

        for resp in (a1, a2, *bs):
            resp.release()
        print("after release()")
        print("  a.test:", brief(connector.stats(a)))
        print("  b.test:", brief(connector.stats(b)))
        print("  pool:  ", brief(connector.stats()))
    # --8<-- [end:puzzle]


if __name__ == "__main__":
    run(main)
