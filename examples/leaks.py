"""Leak detection: who holds a connection past ``leak_threshold``."""

from __future__ import annotations

import asyncio

import aiohttp
from _loopback import run

from aioconnpool import LeakSuspected, PoolConnector, PoolEvent
from aioconnpool.testing import LoopbackResolver


def last_frame(stack: str | None) -> str:
    """The innermost frame of a stack: where the connection was taken."""
    lines = (stack or "").rstrip().splitlines()
    where = lines[-2].strip() if len(lines) >= 2 else "?"
    return f"{where.split(', ')[-1]}: {lines[-1].strip() if lines else '?'}"


# --8<-- [start:forgetful]
async def forgetful(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    resp = await session.get(url)  # a 3 MiB body, never read nor released
    return resp


# --8<-- [end:forgetful]


async def main(port: int) -> None:
    # --8<-- [start:leaks]
    connector = PoolConnector(
        leak_threshold=0.2, resolver=LoopbackResolver(suffix=".test")
    )
    suspects: list[LeakSuspected] = []

    def on_event(event: PoolEvent) -> None:
        if isinstance(event, LeakSuspected):
            suspects.append(event)

    connector.add_listener(on_event)
    async with aiohttp.ClientSession(connector=connector) as session:
        held = await asyncio.create_task(
            forgetful(session, f"http://big.test:{port}/big"), name="report-job"
        )
        await asyncio.sleep(0.3)  # past the threshold
        for leak in connector.leaks():
            print("held:", leak.key.host, "by task", leak.task)
            print("  acquired", last_frame(leak.stack))
        print("events:", [(type(e).__name__, e.key.host, e.task) for e in suspects])
        held.release()
        print("after release():", connector.leaks())
    # --8<-- [end:leaks]


if __name__ == "__main__":
    run(main)
