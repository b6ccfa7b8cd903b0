"""Limits and fairness, observed from inside the server while requests run."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from aioconnpool import PoolConnector
from tests.conftest import Recorder, settle, url

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]


async def test_limit_1_is_not_exceeded_by_reusing_an_idle_connection(
    server: TestServer, make_session: Build
) -> None:
    # aiohttp 3.14's TCPConnector hands out the idle connection of host A
    # while host B's connection is acquired: 2 acquired with limit=1.
    session, conn = make_session(limit=1)
    await (await session.get(url(server, "/small", host="a.test"))).read()
    held = await session.get(url(server, "/big", host="b.test"))
    second_a = asyncio.create_task(session.get(url(server, "/small", host="a.test")))
    await asyncio.sleep(0.05)
    stats = conn.stats()
    assert (stats.acquired, stats.idle, stats.waiting) == (1, 1, 1)
    assert not second_a.done()
    await held.read()
    await (await second_a).read()
    a = conn.stats(url(server, "/", host="a.test"))
    assert (a.created, a.reused) == (1, 1)
    assert conn.stats().acquired == 0


async def test_limit_per_host_holds(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    session, conn = make_session(limit_per_host=2)
    target = url(server, "/small", host="one.test")
    seen: list[int] = []
    recorder.on_request = lambda request: seen.append(
        conn.stats(target).acquired + conn.stats(target).connecting
    )

    async def fetch() -> None:
        async with session.get(target) as resp:
            await resp.read()

    await asyncio.gather(*(fetch() for _ in range(30)))
    assert len(seen) == 30
    assert max(seen) == 2
    sockets = {info.local for info in conn.connections()}
    assert len(sockets) == 2
    stats = conn.stats(target)
    assert (stats.created, stats.reused, stats.requests) == (2, 28, 30)


async def test_fifo_within_a_key(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    session, conn = make_session(limit=1)
    held = await session.get(url(server, "/big"))
    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(session.get(url(server, f"/small?id={i}"))))
        await asyncio.sleep(0.01)  # arrival order is creation order
    assert conn.stats().waiting == 6
    held.release()
    for task in tasks:
        await (await task).read()
    assert recorder.order == [str(i) for i in range(6)]


async def test_fifo_across_keys_when_the_total_limit_blocks(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    session, conn = make_session(limit=1)
    held = await session.get(url(server, "/big", host="hold.test"))
    arrivals = ["a.test", "b.test", "c.test", "a.test", "b.test", "d.test"]
    tasks = []
    for i, host in enumerate(arrivals):
        target = url(server, f"/small?id={i}-{host}", host=host)
        tasks.append(asyncio.create_task(session.get(target)))
        await asyncio.sleep(0.01)
    assert conn.stats().waiting == len(arrivals)
    held.release()
    for task in tasks:
        await (await task).read()
    assert recorder.order == [f"{i}-{host}" for i, host in enumerate(arrivals)]


async def test_a_key_at_its_own_limit_does_not_block_others(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    session, conn = make_session(limit=2, limit_per_host=1)
    held_a = await session.get(url(server, "/big", host="a.test"))
    held_b = await session.get(url(server, "/big", host="b.test"))
    blocked_a = asyncio.create_task(
        session.get(url(server, "/small?id=a2", host="a.test"))
    )
    await asyncio.sleep(0.01)
    c = asyncio.create_task(session.get(url(server, "/small?id=c1", host="c.test")))
    await asyncio.sleep(0.05)
    assert conn.stats().waiting == 2
    held_b.release()  # frees a total slot: a.test is still at its own limit
    await (await c).read()
    assert recorder.order == ["c1"]
    assert not blocked_a.done()
    held_a.release()
    await (await blocked_a).read()
    assert recorder.order == ["c1", "a2"]


async def test_256_requests_through_5_sockets(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session(limit_per_host=5)

    async def fetch(i: int) -> None:
        async with session.get(url(server, f"/small?id={i}")) as resp:
            await resp.read()

    await asyncio.gather(*(fetch(i) for i in range(256)))
    infos = conn.connections()
    assert len({info.local for info in infos}) == 5
    assert sum(info.requests for info in infos) == 256
    assert all(info.state == "idle" for info in infos)
    stats = conn.stats()
    assert (stats.created, stats.reused, stats.idle) == (5, 251, 5)


async def test_waiters_see_stats_that_add_up(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session(limit=3, limit_per_host=2)
    hosts = [f"h{i}.test" for i in range(5)]
    held = [await session.get(url(server, "/big", host=h)) for h in hosts[:3]]
    tasks = [
        asyncio.create_task(session.get(url(server, "/small", host=h)))
        for h in hosts
        for _ in range(2)
    ]
    await asyncio.sleep(0.05)
    stats = conn.stats()
    assert stats.acquired == 3
    assert stats.waiting == 10
    for field in ("acquired", "idle", "connecting", "waiting", "requests", "created"):
        assert sum(getattr(h, field) for h in stats.hosts.values()) == getattr(
            stats, field
        )
    assert all(h.available == 0 for h in stats.hosts.values() if h.waiting)
    for resp in held:
        resp.release()
    for task in tasks:
        await (await task).read()
    await settle()
    stats = conn.stats()
    assert (stats.acquired, stats.connecting, stats.waiting) == (0, 0, 0)
    assert sum(stats.released.values()) == stats.created + stats.reused
    assert Counter(stats.released)["eof"] == 10


async def test_runtime_server_sees_one_socket_per_connection(
    aiohttp_server: Callable[..., object], make_session: Build
) -> None:
    peers: list[tuple[str, int]] = []

    async def handler(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handler)
    srv: TestServer = await aiohttp_server(app)  # type: ignore[misc]
    session, conn = make_session(limit=3)

    async def fetch() -> None:
        async with session.get(url(srv, "/")) as resp:
            await resp.read()

    await asyncio.gather(*(fetch() for _ in range(12)))
    client_side = {info.local for info in conn.connections()}
    assert set(peers) == client_side
