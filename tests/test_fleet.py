"""Fleet-wide limits in one process: several connectors sharing a real Redis,
against a loopback server that counts its own concurrent requests per host.

The multi-process scenarios (crashes, Redis restarts, storms) are in
``tests/fleet/``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from aioconnpool import PoolConnector
from aioconnpool.cli import main as cli_main
from aioconnpool.fleet import (
    FleetTimeoutError,
    FleetUnavailableError,
    RedisFleet,
    fleet_status,
)
from aioconnpool.testing import LoopbackResolver, RedisServer, free_port


@dataclass
class Counting:
    """Requests in progress per Host header, and the peak of each."""

    now: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    served: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def until(self, host: str, n: int) -> None:
        """Wait until ``n`` requests to ``host`` are in progress."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.now.get(host, 0) >= n)


@pytest.fixture
async def counting() -> AsyncIterator[tuple[Counting, int]]:
    seen = Counting()
    seen.gate.set()

    async def handler(request: web.Request) -> web.Response:
        host = request.host.split(":")[0]
        seen.now[host] = seen.now.get(host, 0) + 1
        seen.peak[host] = max(seen.peak.get(host, 0), seen.now[host])
        async with seen.changed:
            seen.changed.notify_all()
        try:
            await asyncio.sleep(float(request.query.get("delay", "0.005")))
            await seen.gate.wait()
        finally:
            seen.now[host] -= 1
        seen.served += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield seen, port
    finally:
        seen.gate.set()
        await runner.cleanup()


def connector(
    url: str, *, name: str = "t", fleet_limit: int = 2, **kw: object
) -> PoolConnector:
    fleet_kw = {k: kw.pop(k) for k in list(kw) if k in FLEET_KW}
    fleet = RedisFleet(url, name=name, limit_per_host=fleet_limit, **fleet_kw)  # type: ignore[arg-type]
    return PoolConnector(fleet=fleet, resolver=LoopbackResolver(), **kw)  # type: ignore[arg-type]


FLEET_KW = {
    "host_limits",
    "lease_ttl",
    "on_unavailable",
    "acquire_timeout",
    "redis_timeout",
    "cluster",
}


async def fetch(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        return await resp.text()


async def test_three_connectors_share_one_limit(
    redis_server: RedisServer, counting: tuple[Counting, int]
) -> None:
    seen, port = counting
    connectors = [
        connector(redis_server.url, fleet_limit=2, limit_per_host=8) for _ in range(3)
    ]
    sessions = [aiohttp.ClientSession(connector=c) for c in connectors]
    try:
        urls = [f"http://a.test:{port}/", f"http://b.test:{port}/?delay=0.01"]
        jobs = [fetch(sessions[i % 3], urls[i % 2]) for i in range(240)]
        assert await asyncio.gather(*jobs) == ["ok"] * 240
        # Each connector alone would allow 8: the fleet held all three to 2.
        assert seen.peak == {"a.test": 2, "b.test": 2}
        st = connectors[0].stats()
        assert st.fleet is not None
        assert st.fleet.state == "connected"
        assert st.acquired == st.connecting == 0
        (key,) = [k for k in st.fleet.hosts if k.host == "a.test"]
        host = st.fleet.hosts[key]
        assert host.limit == 2
        assert host.mine == 0
        assert host.waiting_here == 0
        assert st.fleet.round_trips > 0
        assert st.fleet.round_trip.count == st.fleet.round_trips
        # At most one round trip per acquisition and one per release.
        trips = [c.stats().fleet for c in connectors]
        assert sum(f.round_trips for f in trips if f is not None) <= 2 * 240
        json.dumps(st.to_dict())
    finally:
        for s in sessions:
            await s.close()
    status = await fleet_status(redis_server.url, name="t")
    assert status.sessions == []  # closing left the fleet at once
    assert all(h.held == 0 and h.waiting == 0 for h in status.hosts)


async def test_host_limits_override_and_none_means_no_fleet_limit(
    redis_server: RedisServer, counting: tuple[Counting, int]
) -> None:
    seen, port = counting
    conns = [
        connector(
            redis_server.url,
            fleet_limit=3,
            host_limits={"slow.test": 1, "free.test": None},
        )
        for _ in range(2)
    ]
    sessions = [aiohttp.ClientSession(connector=c) for c in conns]
    try:
        jobs = [
            fetch(sessions[i % 2], f"http://{h}:{port}/")
            for i in range(60)
            for h in ("slow.test", "free.test", "other.test")
        ]
        await asyncio.gather(*jobs)
        assert seen.peak["slow.test"] == 1
        assert seen.peak["other.test"] == 3
        assert seen.peak["free.test"] > 3  # no fleet limit: the local pools only
        fleet = conns[0].stats().fleet
        assert fleet is not None
        assert {k.host for k in fleet.hosts} == {"slow.test", "other.test"}
    finally:
        for s in sessions:
            await s.close()


async def test_a_request_waiting_on_the_fleet_holds_no_local_slot(
    redis_server: RedisServer, counting: tuple[Counting, int]
) -> None:
    seen, port = counting
    holder = connector(redis_server.url, fleet_limit=1)
    waiter = connector(redis_server.url, fleet_limit=1, limit=1)
    async with (
        aiohttp.ClientSession(connector=holder) as hs,
        aiohttp.ClientSession(connector=waiter) as ws,
    ):
        seen.gate.clear()
        held = asyncio.create_task(fetch(hs, f"http://a.test:{port}/"))
        await asyncio.wait_for(seen.until("a.test", 1), 5)
        blocked = asyncio.create_task(fetch(ws, f"http://a.test:{port}/"))
        await asyncio.sleep(0.1)
        assert not blocked.done()
        assert waiter.stats().acquired == 0  # waiting on the fleet, not locally
        # The waiter's connector has limit=1 in total, yet another host goes.
        seen.gate.set()
        other = await asyncio.wait_for(fetch(ws, f"http://b.test:{port}/"), 5)
        assert other == "ok"
        assert await held == "ok"
        assert await blocked == "ok"


async def test_cancelled_waiters_leave_nothing_behind(
    redis_server: RedisServer, counting: tuple[Counting, int]
) -> None:
    seen, port = counting
    conns = [connector(redis_server.url, fleet_limit=1) for _ in range(2)]
    sessions = [aiohttp.ClientSession(connector=c) for c in conns]
    try:
        seen.gate.clear()
        tasks = [
            asyncio.create_task(fetch(sessions[i % 2], f"http://a.test:{port}/"))
            for i in range(20)
        ]
        for i, task in enumerate(tasks):
            if i % 3 == 0:
                await asyncio.sleep(0)
            if i % 2:
                task.cancel()
        await asyncio.sleep(0.05)
        for task in tasks[::4]:
            task.cancel()  # some waiting, some maybe just granted
        seen.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(r == "ok" or isinstance(r, asyncio.CancelledError) for r in results)
        assert seen.peak["a.test"] == 1
        for c in conns:
            st = c.stats()
            assert st.acquired == st.connecting == st.waiting == 0
            fleet = st.fleet
            assert fleet is not None
            assert all(
                h.mine == 0 and h.waiting_here == 0 for h in fleet.hosts.values()
            )
        # Let the last releases and cancels reach Redis.
        for _ in range(50):
            status = await fleet_status(redis_server.url, name="t")
            if all(h.held == 0 and h.waiting == 0 for h in status.hosts):
                break
            await asyncio.sleep(0.02)
        assert all(h.held == 0 and h.waiting == 0 for h in status.hosts), status
    finally:
        for s in sessions:
            await s.close()


async def test_acquire_timeout_names_the_host(
    redis_server: RedisServer, counting: tuple[Counting, int]
) -> None:
    seen, port = counting
    a = connector(redis_server.url, fleet_limit=1)
    b = connector(redis_server.url, fleet_limit=1, acquire_timeout=0.2)
    async with (
        aiohttp.ClientSession(connector=a) as sa,
        aiohttp.ClientSession(connector=b) as sb,
    ):
        seen.gate.clear()
        held = asyncio.create_task(fetch(sa, f"http://a.test:{port}/"))
        await asyncio.wait_for(seen.until("a.test", 1), 5)
        with pytest.raises(FleetTimeoutError, match=r"a\.test.*fleet limit 1"):
            await fetch(sb, f"http://a.test:{port}/")
        seen.gate.set()
        assert await held == "ok"
        assert await fetch(sb, f"http://a.test:{port}/") == "ok"
        assert b.stats().acquired == 0


async def test_unreachable_redis_raise_names_host_and_masks_password(
    counting: tuple[Counting, int],
) -> None:
    _, port = counting
    url = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    c = connector(url, on_unavailable="raise", redis_timeout=0.5)
    async with aiohttp.ClientSession(connector=c) as s:
        with pytest.raises(FleetUnavailableError) as info:
            await fetch(s, f"http://a.test:{port}/")
        err = info.value
        assert err.host.host == "a.test"
        assert "hunter2" not in str(err)
        assert "hunter2" not in err.address
        assert "a.test" in str(err)
        assert "127.0.0.1" in str(err)
        fleet = c.stats().fleet
        assert fleet is not None
        assert fleet.state == "unavailable"
        assert fleet.outages == 1
        assert "hunter2" not in repr(fleet)
        assert "hunter2" not in repr(c._fleet)
        # Still unavailable: refused at once, no second outage counted.
        with pytest.raises(FleetUnavailableError):
            await fetch(s, f"http://a.test:{port}/")
        assert c.stats().acquired == 0


async def test_unreachable_redis_local_goes_on_and_warns_once(
    counting: tuple[Counting, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, port = counting
    url = f"redis://:pw-secret@127.0.0.1:{free_port()}/0"
    c = connector(url, on_unavailable="local", redis_timeout=0.5)
    with caplog.at_level(logging.WARNING, logger="aioconnpool.fleet"):
        async with aiohttp.ClientSession(connector=c) as s:
            results = await asyncio.gather(
                *(fetch(s, f"http://a.test:{port}/") for _ in range(10))
            )
            assert results == ["ok"] * 10
            fleet = c.stats().fleet
            assert fleet is not None
            assert fleet.outages == 1
            assert fleet.local_grants == 10
    warnings = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(warnings) == 1
    assert "pw-secret" not in caplog.text


async def test_unreachable_redis_wait_is_bounded(
    counting: tuple[Counting, int],
) -> None:
    _, port = counting
    url = f"redis://127.0.0.1:{free_port()}/0"
    c = connector(url, on_unavailable="wait", redis_timeout=0.3, acquire_timeout=1.0)
    async with aiohttp.ClientSession(connector=c) as s:
        started = time.monotonic()
        with pytest.raises(FleetTimeoutError):
            await fetch(s, f"http://a.test:{port}/")
        assert time.monotonic() - started < 5
        assert c.stats().acquired == 0


async def test_scripts_are_loaded_again_after_script_flush(
    redis_server: RedisServer, counting: tuple[Counting, int]
) -> None:
    _, port = counting
    c = connector(redis_server.url, fleet_limit=2)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        async with aiohttp.ClientSession(connector=c) as s:
            assert await fetch(s, f"http://a.test:{port}/") == "ok"
            await client.script_flush()
            assert await fetch(s, f"http://a.test:{port}/") == "ok"
            fleet = c.stats().fleet
            assert fleet is not None
            assert fleet.outages == 0
    finally:
        await client.aclose()


async def test_a_paused_process_starts_a_new_session(
    redis_server: RedisServer, counting: tuple[Counting, int]
) -> None:
    """Paused longer than its lease (here the loop blocked), a process does not
    start a request on a grant it got meanwhile: it re-registers first."""
    seen, port = counting
    a = connector(redis_server.url, fleet_limit=1, lease_ttl=0.6)
    b = connector(redis_server.url, fleet_limit=1, lease_ttl=0.6)
    async with (
        aiohttp.ClientSession(connector=a) as sa,
        aiohttp.ClientSession(connector=b) as sb,
    ):
        assert await fetch(sb, f"http://a.test:{port}/") == "ok"  # b has a lease
        seen.gate.clear()
        held = asyncio.create_task(fetch(sa, f"http://a.test:{port}/"))
        await asyncio.wait_for(seen.until("a.test", 1), 5)
        waiting = asyncio.create_task(fetch(sb, f"http://a.test:{port}/"))
        await asyncio.sleep(0.05)
        first = b.stats().fleet
        assert first is not None
        time.sleep(1.0)  # the whole process stalls past its lease  # noqa: ASYNC251
        seen.gate.set()
        assert await held == "ok"
        assert await waiting == "ok"
        assert seen.peak["a.test"] == 1
        fleet = b.stats().fleet
        assert fleet is not None
        assert fleet.lapses >= 1
        assert fleet.session != first.session


def test_bad_input_names_the_value_and_masks_the_password() -> None:
    with pytest.raises(
        ValueError, match=r"'http://\*\*\*@h:1/0' must start with redis://"
    ):
        RedisFleet("http://u:pw@h:1/0", name="x", limit_per_host=1)
    with pytest.raises(ValueError, match="not a valid URL") as info:
        RedisFleet("redis://u:pw@h:99999/0", name="x", limit_per_host=1)
    assert "pw" not in str(info.value)
    assert "99999" in str(info.value)
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"limit_per_host must be >= 1, got {bad}"):
            RedisFleet("redis://h", name="x", limit_per_host=bad)
    for wrong in ("3", True, 2.0):
        with pytest.raises(TypeError, match="limit_per_host must be an int"):
            RedisFleet("redis://h", name="x", limit_per_host=wrong)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"on_unavailable must be one of.*'sometimes'"):
        RedisFleet("redis://h", name="x", limit_per_host=1, on_unavailable="sometimes")
    with pytest.raises(ValueError, match=r"name must be.*'a\{b\}'"):
        RedisFleet("redis://h", name="a{b}", limit_per_host=1)
    with pytest.raises(
        ValueError, match="lease_ttl must be a finite number > 0, got -1"
    ):
        RedisFleet("redis://h", name="x", limit_per_host=1, lease_ttl=-1)
    with pytest.raises(ValueError, match=r"host_limits\['a.test'\] must be >= 1"):
        RedisFleet("redis://h", name="x", limit_per_host=1, host_limits={"a.test": 0})
    with pytest.raises(ValueError, match="database 'zero'"):
        RedisFleet("redis://h/zero", name="x", limit_per_host=1)
    with pytest.raises(TypeError, match="fleet must be a fleet backend"):
        PoolConnector(fleet="redis://h")


async def test_one_fleet_per_connector() -> None:
    fleet = RedisFleet("redis://127.0.0.1:1/0", name="x", limit_per_host=1)
    c = PoolConnector(fleet=fleet)
    try:
        with pytest.raises(RuntimeError, match="already belongs to a connector"):
            PoolConnector(fleet=fleet)
    finally:
        await c.close()


async def test_fleet_status_command(
    redis_server: RedisServer,
    counting: tuple[Counting, int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen, port = counting
    c = connector(redis_server.url, name="cli-fleet", fleet_limit=2)
    async with aiohttp.ClientSession(connector=c) as s:
        seen.gate.clear()
        tasks = [
            asyncio.create_task(fetch(s, f"http://a.test:{port}/")) for _ in range(3)
        ]
        await asyncio.wait_for(seen.until("a.test", 2), 5)
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        code = await loop.run_in_executor(
            None,
            cli_main,
            ["fleet", "status", redis_server.url, "--name", "cli-fleet", "--json"],
        )
        seen.gate.set()
        await asyncio.gather(*tasks)
    assert code == 0
    shown = json.loads(capsys.readouterr().out)
    (host,) = shown["hosts"]
    assert host["host"] == f"http://a.test:{port}"
    assert host["limit"] == 2
    assert host["held"] == 2
    assert host["waiting"] == 1
    (session,) = shown["sessions"]
    assert session["lease_left"] > 0
    assert list(host["holders"]) == [session["session"]]


async def test_exporters_show_the_fleet(
    redis_server: RedisServer, counting: tuple[Counting, int]
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import CollectorRegistry, generate_latest

    from aioconnpool.otel import instrument
    from aioconnpool.prometheus import PoolCollector

    seen, port = counting
    c = connector(redis_server.url, fleet_limit=2)
    registry = CollectorRegistry()
    registry.register(PoolCollector(c))
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instrumentation = instrument(c, meter_provider=provider)
    try:
        async with aiohttp.ClientSession(connector=c) as s:
            seen.gate.clear()
            tasks = [
                asyncio.create_task(fetch(s, f"http://a.test:{port}/"))
                for _ in range(3)
            ]
            await asyncio.wait_for(seen.until("a.test", 2), 5)
            await asyncio.sleep(0.05)
            text = generate_latest(registry).decode()
            labels = f'host="a.test",port="{port}",scheme="http"'
            assert f"aioconnpool_fleet_limit{{{labels}}} 2.0" in text
            assert f"aioconnpool_fleet_mine{{{labels}}} 2.0" in text
            assert f"aioconnpool_fleet_waiting_here{{{labels}}} 1.0" in text
            assert "aioconnpool_fleet_up 1.0" in text
            assert "aioconnpool_fleet_outages_total 0.0" in text
            assert 'aioconnpool_fleet_round_trip_seconds_bucket{le="+Inf"}' in text
            data = reader.get_metrics_data()
            assert data is not None
            found = {
                m.name: [p.value for p in m.data.data_points]  # type: ignore[union-attr]
                for rm in data.resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics
            }
            assert found["aioconnpool.fleet.mine"] == [2]
            assert found["aioconnpool.fleet.limit"] == [2]
            seen.gate.set()
            await asyncio.gather(*tasks)
    finally:
        instrumentation.close()
        provider.shutdown()
