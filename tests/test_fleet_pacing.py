"""Fleet-wide pacing and pauses: several connectors (separate ``RedisFleet``
clients, one fleet name) against a real Redis and a loopback server that
records when each request starts. Only lower bounds on gaps are asserted
(the machine is noisy); the pacing script is also tested alone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp.test_utils import TestServer

from aioconnpool import (
    HostPaused,
    HostResumed,
    PacingDeadlineError,
    PacingLate,
    PoolConnector,
    PoolEvent,
    PoolKey,
    backoff_middleware,
)
from aioconnpool._aiohttp.compat import HAS_CLIENT_MIDDLEWARES
from aioconnpool.fleet import FleetUnavailableError, RedisFleet
from aioconnpool.fleet._pacing import PACE_SCRIPT
from aioconnpool.testing import LoopbackResolver, RedisClusterServers, RedisServer
from tests.test_backoff import Site as Recorded

TOLERANCE = 0.02


class Site:
    """The backoff tests' server (``tests/test_backoff.py``): per host, the
    start time of every request, and ``plan[host]`` answers (status,
    headers) given in turn before 200s."""

    def __init__(self, recorded: Recorded, port: int) -> None:
        self.recorded = recorded
        self.plan = recorded.plan
        self.port = port

    def url(self, host: str) -> str:
        return f"http://{host}:{self.port}/"

    def key(self, host: str) -> PoolKey:
        return PoolKey(host, self.port, False)

    def starts(self, host: str) -> list[float]:
        return self.recorded.starts(host)


@pytest.fixture
async def site(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Site:
    recorded = Recorded()
    server = await aiohttp_server(recorded.app())
    assert server.port is not None
    return Site(recorded, server.port)


Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]


@pytest.fixture
async def build(redis_server: RedisServer) -> AsyncIterator[Build]:
    sessions: list[aiohttp.ClientSession] = []

    def make(
        *, name: str = "pace", middleware: bool = False, **kw: Any
    ) -> tuple[aiohttp.ClientSession, PoolConnector]:
        fleet_kw = {
            k: kw.pop(k)
            for k in ("on_unavailable", "acquire_timeout", "lease_ttl")
            if k in kw
        }
        fleet = RedisFleet(
            redis_server.url,
            name=name,
            limit_per_host=100,
            redis_timeout=0.5,
            **fleet_kw,
        )
        conn = PoolConnector(
            fleet=fleet, resolver=LoopbackResolver(suffix=".test"), **kw
        )
        # aiohttp 3.11's ClientSession takes no middlewares= at all.
        extra: dict[str, Any] = (
            {"middlewares": [backoff_middleware(conn, retries=0)]} if middleware else {}
        )
        session = aiohttp.ClientSession(connector=conn, **extra)
        sessions.append(session)
        return session, conn

    yield make
    for session in sessions:
        await session.close()


async def get(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(sorted(times))]


async def test_gaps_hold_across_connectors(build: Build, site: Site) -> None:
    (s1, c1), (s2, c2) = build(delay_per_host=0.2), build(delay_per_host=0.2)
    url = site.url("a.test")
    jobs = [get(s1 if i % 2 else s2, url) for i in range(10)]
    assert await asyncio.gather(*jobs) == [200] * 10
    starts = site.starts("a.test")
    assert len(starts) == 10
    # Each connector alone would send 5 at 0.2 s apart, side by side: the
    # fleet keeps all 10 at 0.2 s apart.
    assert min(gaps(starts)) >= 0.2 - TOLERANCE
    for c in (c1, c2):
        fleet = c.stats().fleet
        assert fleet is not None
        assert fleet.reservations == 5
        # Two per paced request (reserve, then confirm once the connection
        # is there), a third when the start before it came late (a new
        # connection's connect), plus one asking for the pauses in force
        # when it subscribed.
        assert 2 * 5 <= fleet.pace_calls <= 3 * 5 + 1
        assert fleet.local_paces == 0


async def test_jitter_and_other_hosts(build: Build, site: Site) -> None:
    (s1, _c1), (s2, _c2) = (
        build(delay_per_host=0.2, delay_jitter=0.5),
        build(delay_per_host=0.2, delay_jitter=0.5),
    )
    jobs = [
        get(s1 if i % 2 else s2, site.url("a.test" if i % 3 else "b.test"))
        for i in range(12)
    ]
    assert await asyncio.gather(*jobs) == [200] * 12
    for host in ("a.test", "b.test"):
        # A jittered gap is within delay * [0.5, 1.5]; each host on its own.
        assert min(gaps(site.starts(host))) >= 0.1 - TOLERANCE
    both = sorted(site.starts("a.test") + site.starts("b.test"))
    assert min(gaps(both)) < 0.1  # hosts do not wait for each other


async def test_deadline_refuses_without_reserving(build: Build, site: Site) -> None:
    (s1, _c1), (s2, c2) = build(delay_per_host=1.0), build(delay_per_host=1.0)
    events: list[PoolEvent] = []
    c2.add_listener(events.append)
    url = site.url("a.test")
    assert await get(s1, url) == 200
    # The other connector's first request would start a second later: past
    # its 0.3 s deadline, it fails at once, reserving nothing.
    started = time.monotonic()
    with pytest.raises(PacingDeadlineError, match="after its ClientTimeout deadline"):
        await s2.get(url, timeout=aiohttp.ClientTimeout(total=0.3))
    assert time.monotonic() - started < 0.3
    assert c2.stats().pacing_late == 1  # counted and reported as locally
    assert [e.start - e.at for e in events if isinstance(e, PacingLate)] == [
        pytest.approx(1.0, abs=0.2)
    ]
    assert await get(s2, url) == 200
    starts = site.starts("a.test")
    assert len(starts) == 2
    # The refused request took no slot: the next came one gap later.
    assert 1.0 - TOLERANCE <= starts[1] - starts[0] < 1.9


async def test_backoff_pause_holds_fleet_wide(build: Build, site: Site) -> None:
    if not HAS_CLIENT_MIDDLEWARES:
        with pytest.raises(RuntimeError, match=r"needs aiohttp >= 3\.12"):
            build(middleware=True)
        return
    s1, c1 = build(middleware=True)
    s2, c2 = build()
    events: list[PoolEvent] = []
    c2.add_listener(events.append)
    # The other connector joined the fleet (a request of its own).
    assert await get(s2, site.url("c.test")) == 200
    site.plan["a.test"].append((429, {"Retry-After": "1"}))
    assert await get(s1, site.url("a.test")) == 429
    paused_at = time.monotonic()
    for _ in range(50):
        if c2.stats(site.key("a.test")).paused_until is not None:
            break
        await asyncio.sleep(0.01)
    host = c2.stats(site.key("a.test"))
    assert host.pause_reason == "429"
    # Another host goes at once; the paused one waits the pause out.
    assert await get(s2, site.url("b.test")) == 200
    assert site.starts("b.test")[0] - paused_at < 0.5
    assert await get(s2, site.url("a.test")) == 200
    assert site.starts("a.test")[1] - paused_at >= 1.0 - 0.1
    assert any(isinstance(e, HostPaused) and e.reason == "429" for e in events)
    assert any(isinstance(e, HostResumed) for e in events)
    f1, f2 = c1.stats().fleet, c2.stats().fleet
    assert f1 is not None
    assert f2 is not None
    assert f1.pauses_sent == 1
    assert f2.pauses_received >= 1
    # The fleet section showed it while it lasted (ended now: gone).
    assert f2.paused == {}
    json.dumps(c2.stats().to_dict())


async def test_resume_ends_a_pause_fleet_wide(build: Build, site: Site) -> None:
    _s1, c1 = build()
    s2, c2 = build()
    assert await get(s2, site.url("c.test")) == 200  # joined, subscribed
    c1.pause_host(site.url("a.test"), 30, reason="maintenance")
    key = site.key("a.test")
    for _ in range(50):
        if c2.stats(key).paused_until is not None:
            break
        await asyncio.sleep(0.01)
    assert c2.stats(key).pause_reason == "maintenance"
    for c in (c1, c2):
        fleet = c.stats().fleet
        assert fleet is not None
        assert [(k, reason) for k, (_, reason) in fleet.paused.items()] == [
            (key, "maintenance")
        ]
    assert json.loads(json.dumps(c2.stats().to_dict()))["fleet"]["paused"] == {
        str(key): [pytest.approx(c2.stats(key).paused_until, abs=0.2), "maintenance"]
    }
    waiting = asyncio.ensure_future(get(s2, site.url("a.test")))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    c1.resume_host(site.url("a.test"))
    assert await asyncio.wait_for(waiting, 2) == 200
    assert c2.stats(key).paused_until is None
    for c in (c1, c2):
        fleet = c.stats().fleet
        assert fleet is not None
        assert fleet.paused == {}


async def test_a_late_joiner_learns_the_pauses(
    build: Build, site: Site, redis_server: RedisServer
) -> None:
    s1, c1 = build()
    assert await get(s1, site.url("c.test")) == 200
    c1.pause_host(site.url("a.test"), 30, reason="503")
    await asyncio.sleep(0.1)  # sent
    s2, c2 = build()
    assert await get(s2, site.url("c.test")) == 200  # joins: asks the pauses
    for _ in range(50):
        if c2.stats(site.key("a.test")).paused_until is not None:
            break
        await asyncio.sleep(0.01)
    assert c2.stats(site.key("a.test")).pause_reason == "503"


async def test_redis_down_local(
    build: Build, site: Site, redis_server: RedisServer
) -> None:
    s1, c1 = build(delay_per_host=0.1)
    assert await get(s1, site.url("a.test")) == 200
    redis_server.kill()
    # The fleet goes on local pacing alone: requests still go, still paced
    # here, counted.
    assert (
        await asyncio.gather(*[get(s1, site.url("a.test")) for _ in range(3)])
        == [200] * 3
    )
    fleet = c1.stats().fleet
    assert fleet is not None
    assert fleet.state == "unavailable"
    assert fleet.local_paces >= 1
    assert min(gaps(site.starts("a.test"))) >= 0.1 - TOLERANCE


async def test_redis_down_raise(
    build: Build, site: Site, redis_server: RedisServer
) -> None:
    s1, _c1 = build(delay_per_host=0.1, on_unavailable="raise")
    assert await get(s1, site.url("a.test")) == 200
    redis_server.kill()
    with pytest.raises(FleetUnavailableError, match=r"127\.0\.0\.1.*a\.test"):
        await get(s1, site.url("a.test"))


async def test_redis_down_wait(
    build: Build, site: Site, redis_server: RedisServer
) -> None:
    # (A short lease: Redis comes back empty, and the fleet's limits wait
    # one lease of grace before granting again.)
    s1, c1 = build(delay_per_host=0.1, on_unavailable="wait", lease_ttl=1.0)
    assert await get(s1, site.url("a.test")) == 200
    redis_server.kill()
    # Bounded by the request's deadline: never past its timeout.
    started = time.monotonic()
    with pytest.raises((PacingDeadlineError, asyncio.TimeoutError)):
        await s1.get(site.url("a.test"), timeout=aiohttp.ClientTimeout(total=0.5))
    assert time.monotonic() - started < 1.5
    # Back: the waiting request goes on.
    waiting = asyncio.ensure_future(get(s1, site.url("a.test")))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    redis_server.start()
    assert await asyncio.wait_for(waiting, 5) == 200
    fleet = c1.stats().fleet
    assert fleet is not None
    assert fleet.local_paces == 0


# ----------------------------------------------------- the script alone

PREFIX = "aioconnpool:{script}:"


def call(client: redis.Redis, *ops: tuple[str, ...], origin: str = "me") -> Any:
    args: list[str] = [PREFIX, origin, str(len(ops))]
    for op in ops:
        args += op
    return client.eval(PACE_SCRIPT, 1, f"{PREFIX}pace", *args)


def test_script_gcra(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        gap = "200000"  # 0.2 s in microseconds
        first, second, third = call(
            client,
            ("R", "h", gap, "-1", "-"),
            ("R", "h", gap, "-1", "-"),
            ("R", "h", gap, "-1", "-"),
        )
        assert first == [0, 1, 0, ""]
        # Each start one gap after the previous, in Redis time.
        assert 199_000 <= second[0] <= 200_000
        assert second[1] == 1
        assert 399_000 <= third[0] <= 400_000
        # Past its deadline: refused, and nothing reserved.
        (late,) = call(client, ("R", "h", gap, "100000", "-"))
        assert late[1] == 0
        assert late[0] > 100_000
        (again,) = call(client, ("R", "h", gap, "-1", "-"))
        assert again[1] == 1
        assert abs(again[0] - late[0]) < 10_000
        # The key expires once its last start has passed (plus a second).
        ttl = client.pttl(f"{PREFIX}p:h")
        assert 1000 < ttl <= 1800
        # Another host is not held back.
        (other,) = call(client, ("R", "other", gap, "-1", "-"))
        assert other[:2] == [0, 1]
    finally:
        client.close()


def test_script_confirm_catches_a_late_start(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        gap = "300000"  # 0.3 s
        first, second = call(
            client, ("R", "h", gap, "-1", "-"), ("R", "h", gap, "-1", "-")
        )
        assert first[:2] == [0, 1]
        assert 290_000 <= second[0] <= 300_000
        # The first request is sent later than its slot (a slow connect,
        # a process woken late): its confirmed start counts from then.
        time.sleep(0.1)
        (confirmed,) = call(client, ("C", "h", gap, "-1", "-"))
        assert confirmed[:2] == [0, 1]
        # The second, woken at its slot, may not go yet: the gap counts from
        # the first's real start.
        time.sleep(0.2)
        (held,) = call(client, ("C", "h", gap, "-1", "-"))
        assert held[1] == 2
        assert 50_000 <= held[0] <= 110_000
        # Past its deadline: refused.
        (late,) = call(client, ("C", "h", gap, "10000", "-"))
        assert late[1] == 0
        time.sleep(held[0] / 1e6)
        (ok,) = call(client, ("C", "h", gap, "-1", "-"))
        assert ok[:2] == [0, 1]
        # Later reservations count from the confirmed starts.
        (third,) = call(client, ("R", "h", gap, "-1", "-"))
        assert 290_000 <= third[0] <= 300_000
    finally:
        client.close()


def test_script_pauses(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    sub = client.pubsub()  # type: ignore[no-untyped-call]
    try:
        sub.subscribe(f"{PREFIX}pace")
        kjson = json.dumps(["h.test", 80, False])
        (paused,) = call(client, ("P", "h", "1000", "429", kjson))
        assert 990_000 <= paused[0] <= 1_000_000
        # A shorter pause does not shorten it.
        (kept,) = call(client, ("P", "h", "10", "503", kjson))
        assert kept[0] > 900_000
        assert kept[3] == "429"
        (res,) = call(client, ("R", "h", "0", "-1", "-"))
        assert res[1] == 1
        assert res[0] > 900_000
        assert res[2] > 900_000
        assert res[3] == "429"
        # Listed for those who join later.
        listed = call(client, ("L", "-", "-", "-", "-"))
        assert listed[0][0] == 1
        assert listed[1][0] == kjson
        assert listed[1][2] == "429"
        (ended,) = call(client, ("U", "h", "-", "-", kjson))
        assert ended == [0, 1, 0, ""]
        assert call(client, ("L", "-", "-", "-", "-")) == [[0, 1, 0, ""]]
        messages = []
        for _ in range(20):
            m = sub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if m is not None:
                messages.append(json.loads(m["data"]))
            if len(messages) == 3:
                break
        assert [m["op"] for m in messages] == ["P", "P", "U"]
        assert messages[0]["o"] == "me"
        assert messages[0]["k"] == kjson
        assert messages[1]["r"] == "429"  # the pause in force, not the shorter
    finally:
        sub.close()
        client.close()


async def test_on_a_redis_cluster(
    redis_cluster: RedisClusterServers, site: Site
) -> None:
    def make() -> tuple[aiohttp.ClientSession, PoolConnector]:
        fleet = RedisFleet(
            redis_cluster.url, name="paced-shard", limit_per_host=100, cluster=True
        )
        conn = PoolConnector(
            fleet=fleet,
            resolver=LoopbackResolver(suffix=".test"),
            delay_per_host=0.15,
        )
        return aiohttp.ClientSession(connector=conn), conn

    (s1, c1), (s2, c2) = make(), make()
    try:
        url = site.url("a.test")
        jobs = [get(s1 if i % 2 else s2, url) for i in range(6)]
        assert await asyncio.gather(*jobs) == [200] * 6
        assert min(gaps(site.starts("a.test"))) >= 0.15 - TOLERANCE
        # A pause reaches the other connector through the cluster's pub/sub.
        c1.pause_host(site.url("b.test"), 30, reason="503")
        for _ in range(100):
            if c2.stats(site.key("b.test")).paused_until is not None:
                break
            await asyncio.sleep(0.02)
        assert c2.stats(site.key("b.test")).pause_reason == "503"
        # The pacing keys live on the fleet's shard.
        primary = redis_cluster.primary_of("aioconnpool:{paced-shard}:epoch")
        for node in redis_cluster.live_nodes():
            if "role:master" not in redis_cluster.command(node, "INFO", "replication"):
                continue
            keys = redis_cluster.command(
                node, "--scan", "--pattern", "aioconnpool:{paced-shard}:p:*"
            ).split()
            assert bool(keys) == (node.port == primary.port), node.port
    finally:
        await s1.close()
        await s2.close()
