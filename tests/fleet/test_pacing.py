"""Fleet-wide pacing across OS processes: the gap between two request starts
to a host holds across every worker of the fleet, as the server sees it."""

from __future__ import annotations

import itertools

from aioconnpool.testing import RedisServer

from .harness import CountingServer, Workers
from .worker import WorkerSpec

TOLERANCE = 0.02
GAP = 0.15


async def test_two_processes_keep_the_gap_between_them(
    redis_server: RedisServer, counting_server: CountingServer, workers: Workers
) -> None:
    # Two workers, six requests each, three at a time, to one paced host.
    shape = {"hosts": ["a.test"], "requests": 6, "concurrency": 3}
    summaries = await workers.run(
        [
            WorkerSpec(
                redis_server.url,
                counting_server.port,
                name="paced",
                delay_per_host=GAP,
                path="/?delay=0.001",
                seed=seed,
                **shape,  # type: ignore[arg-type]
            )
            for seed in (0, 1)
        ]
    )
    assert [s.outcomes for s in summaries] == [{"ok": 6}] * 2
    starts = sorted(counting_server.starts["a.test"])
    assert len(starts) == 12
    # Each process alone keeps the gap between its own starts; side by side
    # they would send two at a time. The fleet keeps all twelve apart.
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= GAP - TOLERANCE, gaps
