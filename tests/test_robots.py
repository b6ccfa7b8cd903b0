"""robots.txt Crawl-delay applied as a floor, against a loopback server."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from aioconnpool import PoolConnector
from aioconnpool.robots import apply_robots
from aioconnpool.testing import LoopbackResolver

ROBOTS = "User-agent: *\nCrawl-delay: 1\nDisallow: /private\n"


async def serve(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    starts: list[float],
    robots: dict[str, tuple[int, str]],
) -> TestServer:
    async def robots_txt(request: web.Request) -> web.Response:
        status, text = robots[request.host.split(":")[0]]
        return web.Response(status=status, text=text)

    async def page(request: web.Request) -> web.Response:
        starts.append(time.monotonic())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/robots.txt", robots_txt)
    app.router.add_get("/page", page)
    return await aiohttp_server(app)


async def test_crawl_delay_becomes_the_hosts_delay(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    starts: list[float] = []
    server = await serve(aiohttp_server, starts, {"r.test": (200, ROBOTS)})
    conn = PoolConnector(delay_per_host=0.1, resolver=LoopbackResolver(suffix=".test"))
    async with aiohttp.ClientSession(connector=conn) as session:
        base = f"http://r.test:{server.port}"
        rules = await apply_robots(session, conn, base + "/page")
        assert not rules.can_fetch("*", base + "/private")
        assert rules.can_fetch("*", base + "/page")
        assert conn.stats(base).delay == 1.0
        assert conn.host_delays == {f"http://r.test:{server.port}": 1.0}

        async def get() -> None:
            async with session.get(base + "/page") as resp:
                await resp.read()

        await asyncio.gather(get(), get())
    assert starts[1] - starts[0] >= 1.0 - 0.01


async def test_a_crawl_delay_below_the_delay_in_force_changes_nothing(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    server = await serve(aiohttp_server, [], {"s.test": (200, ROBOTS)})
    conn = PoolConnector(delay_per_host=2.0, resolver=LoopbackResolver(suffix=".test"))
    async with aiohttp.ClientSession(connector=conn) as session:
        base = f"http://s.test:{server.port}"
        await apply_robots(session, conn, base)
        assert conn.stats(base).delay == 2.0
        assert conn.host_delays == {}


async def test_missing_or_forbidden_robots(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    robots = {"none.test": (404, ""), "no.test": (403, ""), "down.test": (503, "")}
    server = await serve(aiohttp_server, [], robots)
    conn = PoolConnector(resolver=LoopbackResolver(suffix=".test"))
    async with aiohttp.ClientSession(connector=conn) as session:
        found = {}
        for host in robots:
            base = f"http://{host}:{server.port}"
            rules = await apply_robots(session, conn, base)
            found[host] = rules.can_fetch("*", base + "/page")
            assert conn.stats(base).delay == 0.0
    assert found == {"none.test": True, "no.test": False, "down.test": False}
    assert "connect" not in vars(conn)  # nothing applied: no pacing


async def test_set_host_delay_changes_the_next_starts(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    starts: list[float] = []
    server = await serve(aiohttp_server, starts, {})
    conn = PoolConnector(resolver=LoopbackResolver(suffix=".test"))
    async with aiohttp.ClientSession(connector=conn) as session:
        base = f"http://d.test:{server.port}"
        conn.set_host_delay("d.test", 0.3)
        assert conn.stats(base).delay == 0.3

        async def get() -> None:
            async with session.get(base + "/page") as resp:
                await resp.read()

        await asyncio.gather(get(), get(), get())
        assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.3 - 0.01
        conn.set_host_delay("d.test", 0)
        assert conn.stats(base).delay == 0.0
