"""Random cancels across four processes leave no lease or queue entry behind."""

from __future__ import annotations

import pytest

from aioconnpool.testing import RedisServer

from .harness import CountingServer, Workers, check_fleet_left, settled_residue
from .worker import WorkerSpec

HOSTS = ["a.test", "b.test", "c.test"]
REQUESTS = 150


@pytest.mark.slow
async def test_a_cancellation_storm_leaks_nothing(
    redis_server: RedisServer, counting_server: CountingServer, workers: Workers
) -> None:
    # Four workers queue for the same three hosts (limit 1 each, so most
    # requests wait) and cancel 40% of their requests: before they start,
    # right after their first step (the acquire just queued), or at a random
    # moment up to 50 ms later (waiting, just granted before the wake-up,
    # connecting, or reading).
    specs = [
        WorkerSpec(
            redis_url=redis_server.url,
            port=counting_server.port,
            hosts=HOSTS,
            name="storm",
            limit_per_host=1,
            lease_ttl=10.0,  # every session stays live while Redis is read
            path="/?delay=0.01",
            requests=REQUESTS,
            concurrency=12,
            cancel_rate=0.4,
            timeout=20,
            linger=True,
            seed=1000 + i,
        )
        for i in range(4)
    ]
    crawlers = await workers.start(specs)
    for w in crawlers:
        w.send("go")
    summaries = [await w.finished(timeout=60) for w in crawlers]

    for s in summaries:
        assert s.failed == {}, s.samples
        assert s.ok + s.outcomes["cancelled"] == REQUESTS
        assert s.outcomes["cancelled"] >= REQUESTS // 5
        assert s.ok > 0
        assert s.local == {"acquired": 0, "connecting": 0, "waiting": 0}
        assert s.fleet["mine"] == s.fleet["waiting_here"] == 0, s.fleet
        assert s.fleet["outages"] == s.fleet["lapses"] == 0, s.fleet

    # The workers are alive and idle: their sessions are live, and hold no
    # slot, wait in no queue and have no grant waiting to be taken.
    residue = await settled_residue(redis_server.url, "storm")
    assert {s.fleet["session"] for s in summaries} <= residue.live
    assert residue.entries() == []

    for w in crawlers:
        await w.close()
    await check_fleet_left(redis_server.url, "storm")
