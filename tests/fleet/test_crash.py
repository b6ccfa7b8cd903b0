"""A worker killed with SIGKILL while it holds slots and others wait for them."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from aioconnpool.testing import RedisServer

from .harness import CountingServer, Workers, fleet_residue, until
from .worker import WorkerSpec

LEASE_TTL = 1.5
SLACK = 0.3  # scheduling on a busy machine: a Redis call, a connect, a request


@pytest.mark.slow
async def test_a_killed_holders_slots_come_back_within_the_lease(
    redis_server: RedisServer, counting_server: CountingServer, workers: Workers
) -> None:
    common = WorkerSpec(
        redis_url=redis_server.url,
        port=counting_server.port,
        hosts=["k.test"],
        name="crash",
        limit_per_host=2,
        lease_ttl=LEASE_TTL,
    )
    (victim,) = await workers.start(
        [replace(common, path="/?delay=60", requests=2, timeout=120)]
    )
    victim.send("go")
    await until(
        lambda: counting_server.now.get("k.test") == 2,
        timeout=10,
        what="the victim to hold both slots",
    )
    waiters = await workers.start(
        [
            replace(common, requests=20, concurrency=4, timeout=30, seed=i)
            for i in range(3)
        ]
    )
    for w in waiters:
        w.send("go")
    sessions = {w.session for w in waiters}

    async def all_queued() -> bool:
        residue = await fleet_residue(redis_server.url, "crash")
        return sessions <= {s for q in residue.queue.values() for s in q}

    for _ in range(500):
        if await all_queued():
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the waiters never queued in Redis")
    residue = await fleet_residue(redis_server.url, "crash")
    assert [h for h in residue.held.values() if h] == [{victim.session: 2}]
    assert counting_server.served == {}  # nobody else got in

    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    await victim.reap()
    await until(
        lambda: len(counting_server.starts["k.test"]) >= 4,
        timeout=LEASE_TTL * 4,
        what="the dead slots to come back",
    )
    first, second = (t - killed_at for t in counting_server.starts["k.test"][2:4])
    # The victim renewed its lease every lease_ttl/3 while it held slots, so
    # its slots came back no sooner than about lease_ttl * 2/3 after the
    # kill, and no later than lease_ttl plus one heartbeat of the waiters.
    bound = LEASE_TTL + LEASE_TTL / 3
    assert LEASE_TTL / 3 < first <= second <= bound + SLACK, (first, second)

    summaries = [await w.finished(timeout=30) for w in waiters]
    for w in waiters:
        await w.close()
    assert [s.outcomes for s in summaries] == [{"ok": 20}] * 3
    assert counting_server.served == {"k.test": 60}
    assert counting_server.peak == {"k.test": 2}
    for s in summaries:
        assert s.local == {"acquired": 0, "connecting": 0, "waiting": 0}
        assert s.fleet["mine"] == s.fleet["waiting_here"] == 0
        assert s.fleet["outages"] == 0
    # The dead session was collected, the others left when they closed.
    residue = await fleet_residue(redis_server.url, "crash")
    assert residue.sessions == frozenset()
    assert residue.entries() == []
