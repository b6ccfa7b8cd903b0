"""The fleet on a real Redis Cluster (``RedisFleet(cluster=True)``): the
limit holds across connectors, the whole fleet lives on one shard, waiters
are woken through the cluster's pub/sub, and ``fleet status --cluster``
reads it. The failover scenario, with worker processes, is in
``tests/fleet/test_cluster.py``."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from aioconnpool.cli.main import main as cli_main
from aioconnpool.fleet import FleetUnavailableError, RedisFleet, fleet_status
from aioconnpool.testing import RedisClusterServers

from .test_fleet import Counting, connector, counting, fetch

__all__ = ["counting"]  # the fixture, used by name


def keys_by_node(cluster: RedisClusterServers, pattern: str) -> dict[int, int]:
    """Port -> how many keys matching ``pattern`` each primary holds."""
    found = {}
    for node in cluster.live_nodes():
        if "role:master" not in cluster.command(node, "INFO", "replication"):
            continue
        keys = cluster.command(node, "--scan", "--pattern", pattern).split()
        if keys:
            found[node.port] = len(keys)
    return found


async def test_a_cluster_fleet_holds_the_limit_on_one_shard_and_wakes_waiters(
    redis_cluster: RedisClusterServers, counting: tuple[Counting, int]
) -> None:
    seen, port = counting
    # A heartbeat every 10 s: a waiter that was not woken through pub/sub
    # would wait that long for its grant.
    lease_ttl = 30.0
    connectors = [
        connector(
            redis_cluster.url,
            name="shard-test",
            fleet_limit=2,
            limit_per_host=8,
            cluster=True,
            lease_ttl=lease_ttl,
        )
        for _ in range(3)
    ]
    sessions = [aiohttp.ClientSession(connector=c) for c in connectors]
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        urls = [f"http://a.test:{port}/?delay=0.02", f"http://b.test:{port}/"]
        jobs = [fetch(sessions[i % 3], urls[i % 2]) for i in range(120)]
        assert await asyncio.gather(*jobs) == ["ok"] * 120
        elapsed = loop.time() - started
        # Each connector alone would allow 8: the fleet held all three to 2.
        assert seen.peak == {"a.test": 2, "b.test": 2}
        # 60 requests of 20 ms, two at a time, went one after another
        # through grants handed across connectors: woken, not polled.
        assert elapsed < lease_ttl / 3, elapsed
        for c in connectors:
            st = c.stats()
            assert st.fleet is not None
            assert st.fleet.state == "connected"
            assert st.fleet.outages == st.fleet.lapses == 0
            assert st.acquired == st.connecting == st.waiting == 0
        # Every key of the fleet is on the primary of its hash tag's slot.
        primary = redis_cluster.primary_of("aioconnpool:{shard-test}:epoch")
        where = keys_by_node(redis_cluster, "aioconnpool:{shard-test}:*")
        assert list(where) == [primary.port], where
        status = await fleet_status(redis_cluster.url, name="shard-test", cluster=True)
        assert len(status.sessions) == 3
        assert {h.host for h in status.hosts} == {
            f"http://a.test:{port}",
            f"http://b.test:{port}",
        }
    finally:
        for s in sessions:
            await s.close()
    status = await fleet_status(redis_cluster.url, name="shard-test", cluster=True)
    assert status.sessions == []  # closing left the fleet at once
    assert all(h.held == 0 and h.waiting == 0 for h in status.hosts)


async def test_fleet_status_command_on_a_cluster(
    redis_cluster: RedisClusterServers,
    counting: tuple[Counting, int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen, port = counting
    # Any node will do: the command finds the fleet's shard.
    other = redis_cluster.nodes[-1].url
    c = connector(redis_cluster.url, name="cli-cluster", fleet_limit=1, cluster=True)
    async with aiohttp.ClientSession(connector=c) as s:
        seen.gate.clear()
        tasks = [
            asyncio.create_task(fetch(s, f"http://a.test:{port}/")) for _ in range(2)
        ]
        await asyncio.wait_for(seen.until("a.test", 1), 5)
        await asyncio.sleep(0.05)
        code = await asyncio.get_running_loop().run_in_executor(
            None,
            cli_main,
            ["fleet", "status", other, "--name", "cli-cluster", "--cluster", "--json"],
        )
        seen.gate.set()
        await asyncio.gather(*tasks)
    assert code == 0
    (host,) = json.loads(capsys.readouterr().out)["hosts"]
    assert (host["limit"], host["held"], host["waiting"]) == (1, 1, 1)


async def test_the_whole_cluster_down_then_back(
    redis_cluster: RedisClusterServers, counting: tuple[Counting, int]
) -> None:
    """Every node killed: the cluster client's own errors (no node to ask)
    are an outage like any other, named; restarted (empty, same slots), the
    fleet comes back by itself."""
    _, port = counting
    c = connector(
        redis_cluster.url,
        name="down",
        cluster=True,
        on_unavailable="raise",
        lease_ttl=1.2,
        redis_timeout=0.3,
    )
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=c) as s:
        assert await fetch(s, f"http://a.test:{port}/") == "ok"
        for node in redis_cluster.nodes:
            node.kill()
        # (The slot this process holds, and keeps while Redis answered
        # lately, may serve a request or two more: it is still its own.)
        await asyncio.sleep(1.0)
        with pytest.raises(FleetUnavailableError) as info:
            await fetch(s, f"http://a.test:{port}/")
        assert "a.test" in str(info.value)
        fleet = c.stats().fleet
        assert fleet is not None
        assert (fleet.state, fleet.outages) == ("unavailable", 1)
        for node in redis_cluster.nodes:
            node.start()  # its nodes.conf keeps the slots; the data is gone
        await loop.run_in_executor(None, redis_cluster.wait_healthy)
        deadline = loop.time() + 15
        while c.stats().fleet.state != "connected":  # type: ignore[union-attr]
            assert loop.time() < deadline, c.stats().fleet
            await asyncio.sleep(0.05)
        # Past the grace period of one lease, requests go through again.
        assert await fetch(s, f"http://a.test:{port}/") == "ok"
        assert c.stats().acquired == 0


def test_cluster_mode_names_the_redis_py_it_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aioconnpool.fleet._connect as connect

    monkeypatch.setattr(connect, "_REDIS_MAJOR", 5)
    with pytest.raises(RuntimeError, match=r"needs redis-py 6\.0 or later"):
        RedisFleet("redis://h:7000/0", name="x", limit_per_host=1, cluster=True)
    RedisFleet("redis://h:7000/0", name="x", limit_per_host=1)  # one node: fine


def test_cluster_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="Redis Cluster has database 0 only"):
        RedisFleet("redis://h:7000/3", name="x", limit_per_host=1, cluster=True)
    with pytest.raises(ValueError, match=r"not the unix socket 'unix:///tmp/r\.sock'"):
        RedisFleet("unix:///tmp/r.sock", name="x", limit_per_host=1, cluster=True)
    with pytest.raises(TypeError, match="cluster must be True or False, not 'yes'"):
        RedisFleet("redis://h", name="x", limit_per_host=1, cluster="yes")  # type: ignore[arg-type]
    fleet = RedisFleet(
        "redis://u:pw@h:7000/0", name="x", limit_per_host=1, cluster=True
    )
    assert repr(fleet).startswith("<RedisFleet 'x' at redis://***@h:7000/0 (cluster)")
    assert "pw" not in repr(fleet)
