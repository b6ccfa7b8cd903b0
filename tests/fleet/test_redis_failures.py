"""Redis fails under a running crawl of four processes: killed and restarted
empty, or stalled (SIGSTOP). The server's own count never goes over the
limit, no request outlives its timeout, and the books are exact afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from aioconnpool.testing import RedisServer

from .harness import (
    CountingServer,
    Workers,
    check_fleet_left,
    settled_residue,
    until,
)
from .worker import Summary, WorkerSpec

HOSTS = ["a.test", "b.test", "c.test"]
LIMIT = 2
LEASE_TTL = 1.5
TIMEOUT = 5.0  # ClientTimeout(total=...) of every request
LATE = 1.0  # how far past its timeout a request may end on a busy machine
# Back to normal this long after Redis is: a heartbeat finds it, then a grace
# period of one lease (after a restart), then the queue moves.
RECOVERY = 2 * LEASE_TTL + 1.0


async def crawl_through(
    disruption: Callable[[], Awaitable[None]],
    *,
    redis_server: RedisServer,
    server: CountingServer,
    workers: Workers,
    name: str,
    on_unavailable: str,
) -> tuple[list[Summary], float]:
    """Four workers crawl; ``disruption`` runs in the middle; they go on until
    well after it. Returns their summaries and when (wall clock) the fleet
    should have been back to normal. Checks that nothing of the live sessions
    is left in Redis before they close, and nothing at all after."""
    specs = [
        WorkerSpec(
            redis_url=redis_server.url,
            port=server.port,
            hosts=HOSTS,
            name=name,
            limit_per_host=LIMIT,
            lease_ttl=LEASE_TTL,
            on_unavailable=on_unavailable,
            redis_timeout=0.5,
            requests=1_000_000,  # until told to stop
            concurrency=6,
            timeout=TIMEOUT,
            linger=True,
            seed=i,
        )
        for i in range(4)
    ]
    crawlers = await workers.start(specs)
    for w in crawlers:
        w.send("go")
    await until(lambda: server.total >= 150, timeout=20, what="the crawl to start")
    await disruption()
    normal_from = time.time() + RECOVERY
    await asyncio.sleep(RECOVERY)
    mark = server.total
    await until(
        lambda: server.total >= mark + 200,
        timeout=10,
        what="the crawl to go on after Redis came back",
    )
    for w in crawlers:
        w.send("stop")
    summaries = [await w.finished(timeout=TIMEOUT + 10) for w in crawlers]
    residue = await settled_residue(redis_server.url, name)
    assert {s.fleet["session"] for s in summaries} <= residue.live
    assert residue.of_live() == []
    for w in crawlers:
        await w.close()
    await check_fleet_left(redis_server.url, name)
    return summaries, normal_from


def check_crawl(
    summaries: list[Summary], server: CountingServer, normal_from: float
) -> None:
    # The independent count: never over the limit, whatever Redis did.
    assert set(server.peak) == set(HOSTS)
    assert all(peak <= LIMIT for peak in server.peak.values()), server.peak
    for s in summaries:
        assert s.max_duration <= TIMEOUT + LATE, s.max_duration
        late = [r for r in s.requests if r[0] > normal_from and r[2] != "ok"]
        assert late == [], (late[:5], s.samples)
        assert s.outcomes["ok"] > 50
        # Exact local books, nothing held or awaited.
        assert s.local == {"acquired": 0, "connecting": 0, "waiting": 0}
        assert s.fleet["state"] == "connected", s.fleet
        assert s.fleet["mine"] == s.fleet["waiting_here"] == 0, s.fleet
        # Every worker noticed the outage, and warned once per outage.
        assert s.fleet["outages"] >= 1, s.fleet
        unreachable = [m for m in s.warnings if "cannot be reached" in m]
        assert len(unreachable) == s.fleet["outages"], s.warnings


def timeouts_only(summaries: list[Summary]) -> None:
    for s in summaries:
        assert all("Timeout" in kind for kind in s.failed), s.samples


@pytest.mark.slow
@pytest.mark.parametrize("on_unavailable", ["wait", "raise"])
async def test_redis_killed_and_restarted_empty_mid_crawl(
    redis_server: RedisServer,
    counting_server: CountingServer,
    workers: Workers,
    on_unavailable: str,
) -> None:
    async def restart() -> None:
        redis_server.kill()
        await asyncio.sleep(1.0)
        redis_server.restart()  # empty: the fleet's state is gone

    summaries, normal_from = await crawl_through(
        restart,
        redis_server=redis_server,
        server=counting_server,
        workers=workers,
        name=f"restart-{on_unavailable}",
        on_unavailable=on_unavailable,
    )
    check_crawl(summaries, counting_server, normal_from)
    for s in summaries:
        assert any("lost the fleet's state" in m for m in s.warnings) or any(
            "is back" in m for m in s.warnings
        ), s.warnings
    if on_unavailable == "wait":
        timeouts_only(summaries)
        # Requests waited through the outage and the grace period.
        assert max(s.max_duration for s in summaries) > 1.0
        return
    # "raise": requests during the outage failed, naming the host and Redis.
    refused = sum(s.outcomes.get("FleetUnavailableError", 0) for s in summaries)
    assert refused > 0
    for s in summaries:
        assert all(
            kind == "FleetUnavailableError" or "Timeout" in kind for kind in s.failed
        ), s.samples
        assert set(s.unavailable_hosts) <= set(HOSTS)
        if "FleetUnavailableError" in s.outcomes:
            assert s.unavailable_addresses == [redis_server.url]
            for message in s.samples["FleetUnavailableError"]:
                assert f"127.0.0.1:{redis_server.port}" in message
                assert any(host in message for host in HOSTS), message


@pytest.mark.slow
async def test_redis_paused_then_resumed_mid_crawl(
    redis_server: RedisServer, counting_server: CountingServer, workers: Workers
) -> None:
    async def stall() -> None:
        redis_server.pause()
        try:
            await asyncio.sleep(3.0)  # > 2 x lease_ttl: every lease runs out
        finally:
            redis_server.resume()

    summaries, normal_from = await crawl_through(
        stall,
        redis_server=redis_server,
        server=counting_server,
        workers=workers,
        name="pause",
        on_unavailable="wait",
    )
    check_crawl(summaries, counting_server, normal_from)
    timeouts_only(summaries)
    assert max(s.max_duration for s in summaries) > 1.0  # waited through it
