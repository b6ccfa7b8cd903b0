"""Adaptive per-host limits: a host failing fast loses concurrency, a calm
host that does not use its limit keeps it."""

from __future__ import annotations

import aiohttp
from _loopback import run

from aioconnpool import AdaptiveLimit, LimitAdjusted, PoolConnector, PoolEvent
from aioconnpool.testing import LoopbackResolver


async def fetch(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


async def main(port: int) -> None:
    # --8<-- [start:adaptive]
    connector = PoolConnector(
        limit_per_host=AdaptiveLimit(min=1, max=16),  # or "auto": the same
        resolver=LoopbackResolver(suffix=".test"),
    )

    def record(event: PoolEvent) -> None:
        if isinstance(event, LimitAdjusted):
            print(
                f"{event.key.host}: {event.previous} -> {event.limit} "
                f"({event.reason}, gradient {event.gradient})"
            )

    connector.add_listener(record)
    async with aiohttp.ClientSession(connector=connector) as session:
        # A host answering 500 at once: fast, but overloaded.
        failing = f"http://failing.test:{port}/throttle?status=500&times=99&after="
        for _ in range(60):
            await fetch(session, failing)
        # A healthy host, one request at a time: its limit is not in use.
        for _ in range(60):
            await fetch(session, f"http://calm.test:{port}/small")
        for host in ("failing.test", "calm.test"):
            stats = connector.stats(f"http://{host}:{port}")
            print(
                f"{host}: limit {stats.adaptive_limit}, "
                f"{stats.adaptive_samples} samples, "
                f"{stats.adaptive_overloads} overloads, "
                f"baseline known: {stats.min_rtt is not None}"
            )
    # --8<-- [end:adaptive]


if __name__ == "__main__":
    run(main)
