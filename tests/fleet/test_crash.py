"""A worker killed with SIGKILL while it holds slots and others wait for them."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from aioconnpool.testing import RedisServer

from .harness import (
    CountingServer,
    Workers,
    check_fleet_left,
    fleet_residue,
    settled_residue,
    until,
)
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
    await check_fleet_left(redis_server.url, "crash")


@pytest.mark.slow
@pytest.mark.parametrize("on_unavailable", ["wait", "local"])
async def test_a_worker_paused_past_its_lease_uses_no_slot_it_lost(
    redis_server: RedisServer,
    counting_server: CountingServer,
    workers: Workers,
    on_unavailable: str,
) -> None:
    """SIGSTOP one worker of three for twice its lease, in the middle of a
    call to Redis: the others get its slots; when it wakes, it notices, and
    starts nothing on slots it no longer holds (the server never sees more
    than the limit). Redis itself is fine: its brief pause only makes sure
    that the worker has a call in flight when it stops, as a GC pause or a
    frozen VM would catch it."""
    specs = [
        WorkerSpec(
            redis_url=redis_server.url,
            port=counting_server.port,
            hosts=["p.test"],
            name="paused-worker",
            limit_per_host=2,
            lease_ttl=LEASE_TTL,
            on_unavailable=on_unavailable,
            redis_timeout=1.0,
            path="/?delay=0.03",
            requests=1_000_000,  # until told to stop
            concurrency=4,
            timeout=20,
            linger=True,
            seed=i,
        )
        for i in range(3)
    ]
    crawlers = await workers.start(specs)
    for w in crawlers:
        w.send("go")
    await until(
        lambda: counting_server.total >= 60, timeout=20, what="the crawl to start"
    )
    sleeper = crawlers[0]
    redis_server.pause()
    try:
        # Longer than a heartbeat interval (the sleeper has a call waiting
        # on Redis), shorter than redis_timeout (nobody sees an outage).
        await asyncio.sleep(LEASE_TTL / 3 + 0.1)
        sleeper.pause()
    finally:
        redis_server.resume()
    try:
        mark = counting_server.total
        await asyncio.sleep(2 * LEASE_TTL)
        # The others went on with its slots.
        assert counting_server.total > mark + 20
    finally:
        sleeper.resume()
    await asyncio.sleep(2 * LEASE_TTL)
    for w in crawlers:
        w.send("stop")
    summaries = [await w.finished(timeout=30) for w in crawlers]
    residue = await settled_residue(redis_server.url, "paused-worker")
    assert residue.of_live() == []
    for w in crawlers:
        await w.close()

    assert counting_server.peak == {"p.test": 2}, [s.fleet for s in summaries]
    for s in summaries:
        assert s.failed == {}, s.samples
        assert s.local == {"acquired": 0, "connecting": 0, "waiting": 0}
        assert s.fleet["mine"] == s.fleet["waiting_here"] == 0, s.fleet
    assert summaries[0].fleet["session"] != sleeper.session
    await check_fleet_left(redis_server.url, "paused-worker")
