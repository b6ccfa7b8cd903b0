"""Loopback servers and a resolver that maps any test host name to 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aioconnpool import PoolConnector
from aioconnpool._core.compiled import stale_modules
from aioconnpool.testing import (
    LoopbackResolver,
    RedisClusterServers,
    RedisServer,
    RedisServerError,
)

BIG_CHUNK = b"x" * 65536
BIG_CHUNKS = 48  # 3 MiB: never arrives together with the headers


def pytest_configure(config: pytest.Config) -> None:
    stale = stale_modules()
    if stale:  # pip install -e . compiled them before the source last changed
        raise pytest.UsageError(
            f"the compiled core is older than its source: {stale}; rebuild it "
            "(make install, or pip install -e .), or delete those files to "
            "test the source as it is"
        )


class Recorder:
    """What the test server saw: request order, and hooks to observe the client."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.on_request: Callable[[web.Request], None] | None = None
        self.gate = asyncio.Event()


def make_app(rec: Recorder) -> web.Application:
    async def small(request: web.Request) -> web.Response:
        rec.order.append(request.query.get("id", request.host))
        if rec.on_request is not None:
            rec.on_request(request)
        return web.Response(text="ok")

    async def big(request: web.Request) -> web.StreamResponse:
        status = int(request.query.get("status", "200"))
        resp = web.StreamResponse(status=status)
        resp.content_length = len(BIG_CHUNK) * BIG_CHUNKS
        await resp.prepare(request)
        for _ in range(BIG_CHUNKS):
            await resp.write(BIG_CHUNK)
        return resp

    async def trickle(request: web.Request) -> web.StreamResponse:
        """Headers at once, then a body that never finishes in test time."""
        resp = web.StreamResponse()
        resp.content_length = 1_000_000
        await resp.prepare(request)
        await resp.write(b"x")
        await asyncio.sleep(30)
        return resp

    async def hang(request: web.Request) -> web.Response:
        """No answer until the gate opens (or the test ends)."""
        await rec.gate.wait()
        return web.Response(text="late")

    async def close(request: web.Request) -> web.Response:
        return web.Response(text="bye", headers={"Connection": "close"})

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/small")

    app = web.Application()
    app.router.add_get("/small", small)
    app.router.add_get("/big", big)
    app.router.add_get("/trickle", trickle)
    app.router.add_get("/hang", hang)
    app.router.add_get("/close", close)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect", redirect)
    return app


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def server(
    aiohttp_server: Callable[..., Awaitable[TestServer]], recorder: Recorder
) -> AsyncIterator[TestServer]:
    srv = await aiohttp_server(make_app(recorder))
    yield srv
    recorder.gate.set()


@pytest.fixture
def resolver() -> LoopbackResolver:
    return LoopbackResolver()


@pytest.fixture
async def make_session(
    resolver: LoopbackResolver,
) -> AsyncIterator[Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]]:
    """Build sessions over a PoolConnector; closes them all at teardown."""
    sessions: list[aiohttp.ClientSession] = []

    def build(
        session_kwargs: dict[str, Any] | None = None, **connector_kwargs: Any
    ) -> tuple[aiohttp.ClientSession, PoolConnector]:
        connector_kwargs.setdefault("resolver", resolver)
        connector = PoolConnector(**connector_kwargs)
        session = aiohttp.ClientSession(connector=connector, **(session_kwargs or {}))
        sessions.append(session)
        return session, connector

    yield build
    for session in sessions:
        await session.close()


def url(server: TestServer, path: str, host: str = "127.0.0.1") -> str:
    """A URL on the test server under any host name (the resolver maps it)."""
    return f"http://{host}:{server.port}{path}"


async def settle(rounds: int = 3) -> None:
    """Let callbacks scheduled with call_soon (wake-ups, connection_lost) run."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def table(out: str, title: str) -> dict[str, list[str]]:
    """Rows of a plain-text table by first cell: the lines after ``title:``.

    Cells are separated by two spaces or more (a cell may hold single ones).
    """
    lines = out.splitlines()
    start = lines.index(f"{title}:") + 3  # title, headers, rule
    rows: dict[str, list[str]] = {}
    for line in lines[start:]:
        if not line.strip():
            break
        if not line.strip().startswith("-"):
            cells = re.split(r"\s{2,}", line.strip())
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, stopped afterwards. Fails
    (never skips) when redis-server is missing, saying what to install."""
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except RedisServerError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterServers]:
    """A real Redis Cluster on loopback: 3 primaries with one replica each
    (node timeout 1 s), stopped afterwards. Fails (never skips) when
    redis-server or redis-cli is missing, saying what to install."""
    try:
        cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    except RedisServerError as exc:
        pytest.fail(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()
