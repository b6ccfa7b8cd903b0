"""Adaptive per-host limits against real loopback servers: one whose latency
climbs past 4 requests at once (and recovers), one that answers fast 500s,
one nobody listens on. Only limit figures are asserted, never speed."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aioconnpool import (
    AdaptiveLimit,
    LimitAdjusted,
    PoolConnector,
    PoolEvent,
    PoolFullError,
    PoolKey,
)
from aioconnpool._aiohttp.adaptive import AdaptiveProtocol, adaptive_connection_class
from aioconnpool._aiohttp.fleet_gate import FleetConnection
from aioconnpool._aiohttp.protocol import PoolProtocol
from aioconnpool._aiohttp.release_paths import PoolConnection
from aioconnpool.testing import RedisServer
from tests.conftest import url

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]
MakeServer = Callable[..., Awaitable[TestServer]]


class KneeServer:
    """Answers in ``base`` seconds while at most 4 requests are in flight;
    past that each extra one adds ``2 * base`` to every answer, until
    ``recovered``."""

    def __init__(self, base: float = 0.01) -> None:
        self.base = base
        self.in_flight = 0
        self.most = 0
        self.recovered = False
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            n = self.in_flight
            slow = n > 4 and not self.recovered
            await asyncio.sleep(self.base * (1 + 2 * (n - 4)) if slow else self.base)
        finally:
            self.in_flight -= 1
        return web.Response(text="ok", status=self.status)


async def knee_server(aiohttp_server: MakeServer, knee: KneeServer) -> TestServer:
    app = web.Application()
    app.router.add_get("/", knee.handle)

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="no")

    app.router.add_get("/fail", fail)
    return await aiohttp_server(app)


def limits_of(events: list[PoolEvent]) -> list[int]:
    return [e.limit for e in events if isinstance(e, LimitAdjusted)]


async def hammer(
    session: aiohttp.ClientSession, target: str, *, workers: int, each: int
) -> list[int]:
    statuses: list[int] = []

    async def worker() -> None:
        for _ in range(each):
            async with session.get(target) as resp:
                await resp.read()
                statuses.append(resp.status)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return statuses


async def test_the_limit_settles_near_the_knee_and_comes_back_up(
    aiohttp_server: MakeServer, make_session: Build
) -> None:
    knee = KneeServer()
    server = await knee_server(aiohttp_server, knee)
    session, conn = make_session(limit_per_host="auto")
    events: list[PoolEvent] = []
    conn.add_listener(events.append)
    target = url(server, "/", host="knee.test")
    key = PoolKey("knee.test", server.port or 0, False)

    await hammer(session, target, workers=16, each=25)
    host = conn.stats().hosts[key]
    settled = limits_of(events)
    assert len(settled) >= 4, "the limit kept still on a server with a knee"
    # Near 4: never far past the knee, and around it once it was found.
    assert max(settled) <= 7
    assert 3 <= statistics.median(settled[len(settled) // 2 :]) <= 5
    assert host.adaptive_limit is not None
    assert 3 <= host.adaptive_limit <= 6
    assert host.limit == host.adaptive_limit
    assert host.min_rtt is not None
    assert host.min_rtt >= knee.base
    assert host.gradient is not None
    assert 0.5 <= host.gradient <= 1.0
    assert host.adaptive_samples > 0
    assert host.adaptive_overloads == 0
    # The server recovers: the limit climbs back up (16 workers of demand).
    knee.recovered = True
    for _ in range(8):  # rounds of 10 windows; one or two are enough
        await hammer(session, target, workers=16, each=13)
        host = conn.stats().hosts[key]
        if host.adaptive_limit is not None and host.adaptive_limit >= 10:
            break
    assert host.adaptive_limit is not None
    assert host.adaptive_limit >= 10
    assert max(limits_of(events)) >= 10
    assert knee.most <= 16
    as_dict = json.loads(json.dumps(conn.stats().to_dict()))
    assert as_dict["hosts"][str(key)]["adaptive_limit"] == host.adaptive_limit
    assert as_dict["adaptive"]["max"] == 16


async def test_fast_500s_do_not_push_the_limit_up(
    aiohttp_server: MakeServer, make_session: Build
) -> None:
    knee = KneeServer(base=0.0)
    knee.status = 500
    server = await knee_server(aiohttp_server, knee)
    session, conn = make_session(limit_per_host=AdaptiveLimit(max=16))
    events: list[PoolEvent] = []
    conn.add_listener(events.append)
    target = url(server, "/", host="fail.test")
    statuses = await hammer(session, target, workers=16, each=20)
    assert set(statuses) == {500}
    limits = [4, *limits_of(events)]
    assert all(b < a for a, b in itertools.pairwise(limits))
    host = conn.stats(target)
    assert host.adaptive_limit == 1
    assert host.min_rtt is None  # errors are not speed
    assert host.adaptive_overloads == host.adaptive_samples > 0
    assert knee.most <= 4


async def test_an_idle_host_keeps_its_limit(
    aiohttp_server: MakeServer, make_session: Build
) -> None:
    knee = KneeServer(base=0.0)
    server = await knee_server(aiohttp_server, knee)
    session, conn = make_session(limit_per_host="auto")
    target = url(server, "/", host="idle.test")
    # Two at a time of the 4 allowed: fast, but the limit is not used.
    await hammer(session, target, workers=1, each=200)
    host = conn.stats(target)
    assert host.adaptive_samples >= 180
    assert host.adaptive_limit == 4
    assert host.limit_adjustments == 0


async def test_a_fixed_host_limit_wins(
    aiohttp_server: MakeServer, make_session: Build
) -> None:
    knee = KneeServer(base=0.0)
    server = await knee_server(aiohttp_server, knee)
    session, conn = make_session(
        limit_per_host="auto", host_limits={"fixed.test": 2, "free.test": None}
    )
    for host_name, limit in (("fixed.test", 2), ("free.test", None)):
        target = url(server, "/", host=host_name)
        await hammer(session, target, workers=8, each=10)
        host = conn.stats(target)
        assert host.limit == limit
        assert host.adaptive_limit is None
        assert host.adaptive_samples == 0
    fresh = url(server, "/", host="new.test")
    assert conn.stats(fresh).limit == 4
    await hammer(session, fresh, workers=1, each=1)
    conn.set_host_limit("new.test", 7)  # out of adaptive control
    assert conn.stats(fresh).limit == 7
    conn.remove_host_limit("new.test")  # back under it
    assert conn.stats(fresh).limit == 4
    stats = conn.stats()
    assert stats.limit_per_host is None
    assert stats.adaptive == AdaptiveLimit()
    assert "limit_per_host=AdaptiveLimit(min=1, max=16" in repr(conn)


async def test_lowering_drains_and_raising_grants_at_once(
    aiohttp_server: MakeServer, make_session: Build
) -> None:
    gate = asyncio.Event()
    held = 0
    all_held = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        nonlocal held
        held += 1
        if held == 4:
            all_held.set()
        await gate.wait()
        return web.Response(text="ok")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/fail", fail)
    server = await aiohttp_server(app)
    session, conn = make_session(
        limit_per_host=AdaptiveLimit(window=1, initial=5, max=8)
    )
    base = url(server, "", host="drain.test")

    async def fetch(path: str) -> int:
        async with session.get(base + path) as resp:
            await resp.read()
            return resp.status

    slow_ones = [asyncio.create_task(fetch("/slow")) for _ in range(4)]
    await all_held.wait()
    assert await fetch("/fail") == 503  # one window: overload, 5 -> 3
    host = conn.stats(base)
    assert (host.limit, host.acquired) == (3, 4)  # nothing closed: they drain
    assert host.closed["error"] == 0
    queued = asyncio.create_task(fetch("/slow"))
    await asyncio.sleep(0.05)
    assert conn.stats(base).waiting == 1
    gate.set()
    assert await asyncio.gather(*slow_ones, queued) == [200] * 5
    host = conn.stats(base)
    assert host.acquired == 0
    assert host.limit is not None
    assert host.limit >= 3
    assert conn.stats().closed["error"] == 0


async def test_connection_errors_count_as_overload(make_session: Build) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    session, conn = make_session(limit_per_host=AdaptiveLimit(window=1, initial=8))
    target = f"http://refused.test:{port}/"
    for _ in range(3):
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(target)
    host = conn.stats(target)
    assert host.adaptive_overloads == host.adaptive_samples == 3
    assert host.adaptive_limit == 3  # 8 -> 6 -> 4 -> 3


async def silent_server(aiohttp_server: MakeServer) -> TestServer:
    """A server that takes requests and never answers (within a test)."""

    async def never(request: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.Response()

    app = web.Application()
    app.router.add_get("/", never)
    return await aiohttp_server(app)


async def test_cancelled_requests_say_nothing_about_the_host(
    aiohttp_server: MakeServer, make_session: Build
) -> None:
    server = await silent_server(aiohttp_server)
    session, conn = make_session(limit_per_host=AdaptiveLimit(window=1))
    target = url(server, "/", host="cancel.test")
    task = asyncio.create_task(session.get(target))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert conn.stats(target).adaptive_samples == 0


async def test_read_timeouts_count_as_overload(
    aiohttp_server: MakeServer, make_session: Build
) -> None:
    server = await silent_server(aiohttp_server)
    session, conn = make_session(limit_per_host=AdaptiveLimit(window=1))
    target = url(server, "/", host="timeout.test")
    with pytest.raises(asyncio.TimeoutError):
        await session.get(target, timeout=aiohttp.ClientTimeout(sock_read=0.05))
    host = conn.stats(target)
    assert (host.adaptive_samples, host.adaptive_overloads) == (1, 1)
    assert host.adaptive_limit == 3


def test_connectors_without_adaptive_limits_run_none_of_it() -> None:
    async def build() -> tuple[Any, Any, Any]:
        conn = PoolConnector(limit_per_host=3)
        try:
            return conn._factory.func, conn._connection_class, conn._adaptive
        finally:
            await conn.close()

    factory, connection, gate = asyncio.run(build())
    assert (factory, connection, gate) == (PoolProtocol, PoolConnection, None)
    assert "_create_connection" not in vars(PoolConnector)


def test_the_connection_class_keeps_the_fleet_release() -> None:
    made = adaptive_connection_class(FleetConnection)
    assert issubclass(made, FleetConnection)
    assert made is adaptive_connection_class(FleetConnection)
    assert made.__name__ == "AdaptiveFleetConnection"
    assert issubclass(AdaptiveProtocol, PoolProtocol)


async def test_prometheus_and_opentelemetry_show_the_adaptive_figures(
    aiohttp_server: MakeServer, make_session: Build
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import CollectorRegistry, generate_latest

    from aioconnpool.otel import instrument
    from aioconnpool.prometheus import PoolCollector
    from tests.test_otel import points

    knee = KneeServer(base=0.0)
    server = await knee_server(aiohttp_server, knee)
    session, conn = make_session(limit_per_host=AdaptiveLimit(window=2))
    _plain_session, plain = make_session(limit_per_host=2)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = instrument(conn, meter_provider=provider)
    try:
        target = url(server, "/fail", host="m.test")
        await hammer(session, target, workers=1, each=2)  # one window: 4 -> 3
        host = conn.stats(target)
        assert (host.adaptive_limit, host.gradient, host.min_rtt) == (3, 0.75, None)
        registry = CollectorRegistry()
        registry.register(PoolCollector({"a": conn, "b": plain}))
        text = (await asyncio.to_thread(generate_latest, registry)).decode()
        labels = f'connector="a",host="m.test",port="{server.port}",scheme="http"'
        assert f"aioconnpool_adaptive_limit{{{labels}}} 3.0" in text
        assert f"aioconnpool_adaptive_gradient{{{labels}}} 0.75" in text
        assert "aioconnpool_adaptive_min_rtt_seconds{" not in text  # none yet
        assert 'aioconnpool_pool_limit_adjustments_total{connector="a"} 1.0' in text
        assert 'aioconnpool_pool_limit_adjustments_total{connector="b"}' not in text
        # A success gives the host a baseline.
        await hammer(session, url(server, "/", host="m.test"), workers=1, each=2)
        text = (await asyncio.to_thread(generate_latest, registry)).decode()
        assert f"aioconnpool_adaptive_min_rtt_seconds{{{labels}}} " in text
        data = reader.get_metrics_data()
        host = conn.stats(target)
        [limit] = points(data, "aioconnpool.adaptive.limit")
        assert limit.value == host.adaptive_limit
        assert limit.attributes["server.address"] == "m.test"
        [gradient] = points(data, "aioconnpool.adaptive.gradient")
        assert gradient.value == host.gradient
        [min_rtt] = points(data, "aioconnpool.adaptive.min_rtt")
        assert min_rtt.value == host.min_rtt
    finally:
        handle.close()
        provider.shutdown()


async def test_errors_name_the_adaptive_limit(
    aiohttp_server: MakeServer, make_session: Build
) -> None:
    server = await silent_server(aiohttp_server)
    session, _conn = make_session(limit_per_host=AdaptiveLimit(initial=1), block=False)
    target = url(server, "/", host="full.test")
    held = asyncio.create_task(session.get(target))
    await asyncio.sleep(0.05)
    with pytest.raises(PoolFullError, match=r"\(adaptive limit_per_host=1\)"):
        await session.get(target)
    held.cancel()
    with pytest.raises(asyncio.CancelledError):
        await held


async def test_a_paused_host_stays_held_whatever_it_learns(
    aiohttp_server: MakeServer, make_session: Build
) -> None:
    gate = asyncio.Event()
    arrived = asyncio.Event()

    async def busy(request: web.Request) -> web.Response:
        arrived.set()
        await gate.wait()
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/", busy)
    server = await aiohttp_server(app)
    session, conn = make_session(limit_per_host=AdaptiveLimit(window=1))
    target = url(server, "/", host="paused.test")

    async def fetch() -> int:
        async with session.get(target) as resp:
            await resp.read()
            return resp.status

    sent = asyncio.create_task(fetch())
    await arrived.wait()
    conn.pause_host(target, 30, reason="maintenance")
    assert conn.stats(target).limit == 0
    gate.set()
    assert await sent == 503  # overload: the learned limit drops to 3
    host = conn.stats(target)
    assert (host.adaptive_limit, host.limit) == (3, 0)  # still held
    conn.resume_host(target)
    await asyncio.sleep(0)
    assert conn.stats(target).limit == 3


async def test_with_a_fleet_slots_are_given_back_and_limits_learned(
    aiohttp_server: MakeServer, redis_server: RedisServer
) -> None:
    from tests.test_fleet import connector

    knee = KneeServer(base=0.0)
    server = await knee_server(aiohttp_server, knee)
    conn = connector(
        redis_server.url, fleet_limit=8, limit_per_host=AdaptiveLimit(window=2)
    )
    assert conn._connection_class.__name__ == "AdaptiveFleetConnection"
    async with aiohttp.ClientSession(connector=conn) as session:
        target = url(server, "/fail", host="fleet.test")
        statuses = await hammer(session, target, workers=1, each=4)
        assert statuses == [500] * 4
        stats = conn.stats()
        host = stats.hosts[PoolKey("fleet.test", server.port or 0, False)]
        assert (host.adaptive_limit, host.adaptive_overloads) == (2, 4)  # 4, 3, 2
        assert stats.fleet is not None
        assert all(h.mine == 0 for h in stats.fleet.hosts.values())
