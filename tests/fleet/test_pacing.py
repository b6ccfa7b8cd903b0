"""Fleet-wide pacing across OS processes: the gap between two request starts
to a host holds across every worker of the fleet, as the server sees it."""

from __future__ import annotations

import itertools

from aioconnpool.testing import RedisServer

from .harness import CountingServer, Workers
from .worker import WorkerSpec

TOLERANCE = 0.02


async def test_two_processes_keep_the_gap_between_them(
    redis_server: RedisServer, counting_server: CountingServer, workers: Workers
) -> None:
    specs = [
        WorkerSpec(
            redis_url=redis_server.url,
            port=counting_server.port,
            hosts=["a.test"],
            name="paced",
            limit_per_host=10,
            requests=6,
            concurrency=3,
            delay_per_host=0.15,
            path="/?delay=0.001",
            seed=i,
        )
        for i in range(2)
    ]
    summaries = await workers.run(specs)
    assert [s.outcomes for s in summaries] == [{"ok": 6}] * 2
    starts = sorted(counting_server.starts["a.test"])
    assert len(starts) == 12
    # Each process alone keeps 0.15 s between its own starts; side by side
    # they would send two at a time. The fleet keeps all twelve apart.
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.15 - TOLERANCE, gaps
