"""The fleet limit holds across OS processes, as the server counts it."""

from __future__ import annotations

import pytest

from aioconnpool.testing import RedisServer

from .harness import CountingServer, Workers, check_fleet_left
from .worker import Summary, WorkerSpec


def check_clean_end(summaries: list[Summary]) -> None:
    """Every worker ended with exact local books and nothing held or awaited."""
    for s in summaries:
        assert s.local == {"acquired": 0, "connecting": 0, "waiting": 0}, s.pid
        assert s.fleet["state"] == "connected", s.fleet
        assert s.fleet["mine"] == 0, s.fleet
        assert s.fleet["waiting_here"] == 0, s.fleet
        assert s.fleet["outages"] == 0, s.fleet
        assert s.warnings == [], s.warnings


@pytest.mark.slow
async def test_four_processes_one_host_peak_is_exactly_the_limit(
    redis_server: RedisServer, counting_server: CountingServer, workers: Workers
) -> None:
    specs = [
        WorkerSpec(
            redis_url=redis_server.url,
            port=counting_server.port,
            hosts=["a.test"],
            name="one-host",
            limit_per_host=3,
            requests=200,
            concurrency=8,
            local_limit_per_host=8,
            seed=i,
        )
        for i in range(4)
    ]
    summaries = await workers.run(specs)

    assert [s.outcomes for s in summaries] == [{"ok": 200}] * 4
    assert counting_server.served == {"a.test": 800}
    # 4 x 8 could have gone at once: the fleet held them to 3, and 3 were
    # reached.
    assert counting_server.peak == {"a.test": 3}
    check_clean_end(summaries)
    # Issue 14's target: at most one round trip per acquisition and one per
    # release, on average (plus a few heartbeats).
    trips = sum(s.fleet["round_trips"] for s in summaries)
    assert trips <= 2 * 800 + 4 * 10, trips
    await check_fleet_left(redis_server.url, "one-host")


@pytest.mark.slow
async def test_four_processes_fifty_hosts_never_above_the_limit(
    redis_server: RedisServer, counting_server: CountingServer, workers: Workers
) -> None:
    hosts = [f"h{i:02d}.test" for i in range(50)]
    specs = [
        WorkerSpec(
            redis_url=redis_server.url,
            port=counting_server.port,
            hosts=hosts,
            name="fifty-hosts",
            limit_per_host=2,
            requests=250,  # 5 per host and worker
            concurrency=20,
            seed=i,
        )
        for i in range(4)
    ]
    summaries = await workers.run(specs)

    assert [s.outcomes for s in summaries] == [{"ok": 250}] * 4
    assert counting_server.served == dict.fromkeys(hosts, 20)
    over = {h: n for h, n in counting_server.peak.items() if n > 2}
    assert over == {}
    assert max(counting_server.peak.values()) == 2  # the limit was reached
    check_clean_end(summaries)
    await check_fleet_left(redis_server.url, "fifty-hosts")


async def test_the_server_sees_concurrency_the_fleet_does_not_limit(
    redis_server: RedisServer, counting_server: CountingServer, workers: Workers
) -> None:
    """The control: with no fleet limit for the host (``host_limits`` None),
    the same counter sees more than the fleet limit, so the tests above would
    notice an over-admission."""
    specs = [
        WorkerSpec(
            redis_url=redis_server.url,
            port=counting_server.port,
            hosts=["free.test"],
            name="control",
            limit_per_host=2,
            host_limits={"free.test": None},
            path="/?delay=0.1",
            requests=16,
            concurrency=8,
        )
        for _ in range(2)
    ]
    summaries = await workers.run(specs)
    assert [s.outcomes for s in summaries] == [{"ok": 16}] * 2
    assert counting_server.peak["free.test"] > 2
