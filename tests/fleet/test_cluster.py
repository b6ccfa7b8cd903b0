"""A Redis Cluster fails over under a running crawl of three processes: the
primary serving the fleet's slot is killed (SIGKILL), its replica takes
over, and the crawl goes on with the limit held, as the server counts it,
and exact books afterwards."""

from __future__ import annotations

import asyncio
import time

import pytest

from aioconnpool.testing import RedisClusterServers

from .harness import CountingServer, Workers, check_fleet_left, settled_residue, until
from .worker import WorkerSpec

HOSTS = ["a.test", "b.test", "c.test"]
LIMIT = 2
TIMEOUT = 15.0  # ClientTimeout(total=...): well above a failover's few seconds


@pytest.mark.slow
async def test_the_fleets_primary_fails_over_mid_crawl(
    redis_cluster: RedisClusterServers,
    counting_server: CountingServer,
    workers: Workers,
) -> None:
    name = "failover"
    epoch_key = f"aioconnpool:{{{name}}}:epoch"
    specs = [
        WorkerSpec(
            redis_url=redis_cluster.url,
            cluster=True,
            port=counting_server.port,
            hosts=HOSTS,
            name=name,
            limit_per_host=LIMIT,
            lease_ttl=3.0,
            on_unavailable="wait",
            redis_timeout=0.5,
            requests=1_000_000,  # until told to stop
            concurrency=6,
            timeout=TIMEOUT,
            linger=True,
            seed=i,
        )
        for i in range(3)
    ]
    crawlers = await workers.start(specs)
    for w in crawlers:
        w.send("go")
    await until(
        lambda: counting_server.total >= 150, timeout=20, what="the crawl to start"
    )
    old_primary = redis_cluster.primary_of(epoch_key)
    old_primary.kill()
    killed_at = time.monotonic()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, redis_cluster.wait_healthy)
    new_primary = redis_cluster.primary_of(epoch_key)
    assert new_primary is not old_primary
    took_over = time.monotonic() - killed_at
    mark = counting_server.total
    await until(
        lambda: counting_server.total >= mark + 200,
        timeout=20,
        what="the crawl to go on on the new primary",
    )
    for w in crawlers:
        w.send("stop")
    summaries = [await w.finished(timeout=TIMEOUT + 10) for w in crawlers]

    # The independent count: never over the limit, through the failover.
    assert set(counting_server.peak) == set(HOSTS)
    assert all(p <= LIMIT for p in counting_server.peak.values()), counting_server.peak
    for s in summaries:
        # Requests waited through the failover ("wait"); none failed.
        assert s.failed == {}, s.samples
        assert s.outcomes["ok"] > 50
        assert s.local == {"acquired": 0, "connecting": 0, "waiting": 0}
        assert s.fleet["state"] == "connected", s.fleet
        assert s.fleet["mine"] == s.fleet["waiting_here"] == 0, s.fleet
    # The failover was seen as an outage (calls to the dead primary failed)
    # and the fleet came back on the new one.
    assert sum(s.fleet["outages"] for s in summaries) >= 1, took_over
    residue = await settled_residue(new_primary.url, name)
    assert {s.fleet["session"] for s in summaries} <= residue.live
    assert residue.of_live() == []
    for w in crawlers:
        await w.close()
    await check_fleet_left(new_primary.url, name)
