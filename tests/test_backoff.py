"""The backoff middleware against a real loopback server answering 429 and
503, with and without ``Retry-After`` (lower bounds on time only).

On aiohttp 3.11, which has no client middlewares, every test checks the
clear error instead."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import itertools
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aioconnpool import (
    BackoffMiddleware,
    HostPaused,
    HostStalledError,
    PoolConnector,
    PoolEvent,
    backoff_middleware,
)
from aioconnpool._aiohttp.backoff import parse_retry_after
from aioconnpool._aiohttp.compat import HAS_CLIENT_MIDDLEWARES
from aioconnpool.testing import LoopbackResolver

TOLERANCE = 0.01


async def assert_refused() -> None:
    """What aiohttp 3.11 (no client middlewares) must answer."""
    conn = PoolConnector()
    try:
        with pytest.raises(RuntimeError, match=r"needs aiohttp >= 3\.12.*is installed"):
            backoff_middleware(conn)
    finally:
        await conn.close()


def needs_middlewares(test: Callable[..., Awaitable[None]]) -> Any:
    """On aiohttp 3.11 the test checks the clear error instead (no skips)."""
    if HAS_CLIENT_MIDDLEWARES:
        return test

    @functools.wraps(test)
    async def refused(*args: Any, **kwargs: Any) -> None:
        await assert_refused()

    return refused


class Site:
    """A server whose hosts answer ``plan[host]`` in turn (status, headers),
    then 200; it records each request's host, id and start time."""

    def __init__(self) -> None:
        self.plan: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
        self.seen: list[tuple[str, str, float]] = []

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            host = request.host.split(":")[0]
            self.seen.append((host, request.query.get("id", ""), time.monotonic()))
            if self.plan[host]:
                status, headers = self.plan[host].pop(0)
                return web.Response(status=status, text="no", headers=headers)
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/", handle)
        return app

    def starts(self, host: str) -> list[float]:
        return [at for h, _id, at in self.seen if h == host]

    def ids(self, host: str) -> list[str]:
        return [i for h, i, _at in self.seen if h == host]


@pytest.fixture
async def site(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> tuple[Site, TestServer]:
    s = Site()
    return s, await aiohttp_server(s.app())


@pytest.fixture
async def build() -> Any:
    sessions: list[aiohttp.ClientSession] = []

    def make(
        middleware: dict[str, Any] | None = None, **kwargs: Any
    ) -> tuple[aiohttp.ClientSession, PoolConnector, BackoffMiddleware]:
        conn = PoolConnector(resolver=LoopbackResolver(suffix=".test"), **kwargs)
        mw = backoff_middleware(conn, **(middleware or {}))
        session = aiohttp.ClientSession(connector=conn, middlewares=[mw])
        sessions.append(session)
        return session, conn, mw

    yield make
    for session in sessions:
        await session.close()


def target(server: TestServer, host: str, ident: object = "") -> str:
    return f"http://{host}:{server.port}/?id={ident}"


async def get(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


def test_retry_after_values() -> None:
    now = 1_000_000.0
    assert parse_retry_after("2", now) == 2.0
    assert parse_retry_after(" 120 ", now) == 120.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now) == 30.0
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now) == 0.0
    for garbage in ("soon", "-1", "1.5e3", "", "Mon, 99 Foo 2020"):
        assert parse_retry_after(garbage, now) is None


async def test_the_middleware_needs_aiohttp_3_12() -> None:
    if not HAS_CLIENT_MIDDLEWARES:
        await assert_refused()
        return
    conn = PoolConnector()
    try:
        assert isinstance(backoff_middleware(conn), BackoffMiddleware)
    finally:
        await conn.close()


@needs_middlewares
async def test_429_with_retry_after_pauses_every_queued_request(
    site: tuple[Site, TestServer], build: Any
) -> None:
    s, server = site
    s.plan["busy.test"] = [(429, {"Retry-After": "1"})]
    session, conn, mw = build(delay_per_host=0.05, middleware={"retries": 0})
    first = await get(session, target(server, "busy.test"))
    assert first == 429
    throttled_at = s.starts("busy.test")[0]
    stats = conn.stats(target(server, "busy.test"))
    assert stats.pause_reason == "429"
    queued = [get(session, target(server, "busy.test")) for _ in range(3)]
    others = [get(session, target(server, "calm.test")) for _ in range(5)]
    results = await asyncio.gather(*queued, *others)
    assert results == [200] * 8
    assert min(s.starts("busy.test")[1:]) - throttled_at >= 1.0 - TOLERANCE
    # The other host did not wait for the pause.
    assert max(s.starts("calm.test")) < min(s.starts("busy.test")[1:])
    assert (mw.throttled, mw.retried) == (1, 0)
    assert conn.stats().pauses == 1


@needs_middlewares
async def test_the_throttled_request_is_retried_after_the_pause(
    site: tuple[Site, TestServer], build: Any
) -> None:
    s, server = site
    s.plan["r.test"] = [(429, {"Retry-After": "1"})]
    session, _conn, mw = build()
    assert await get(session, target(server, "r.test")) == 200
    first, second = s.starts("r.test")
    assert second - first >= 1.0 - TOLERANCE
    assert (mw.throttled, mw.retried) == (1, 1)


@needs_middlewares
async def test_503_without_retry_after_backs_off_exponentially(
    site: tuple[Site, TestServer], build: Any
) -> None:
    s, server = site
    s.plan["e.test"] = [(503, {})] * 3
    session, conn, _mw = build(middleware={"base": 0.1, "jitter": 0.0})
    pauses: list[float] = []

    def on_event(event: PoolEvent) -> None:
        if isinstance(event, HostPaused):
            pauses.append(event.until - event.at)

    conn.add_listener(on_event)
    assert await get(session, target(server, "e.test")) == 200
    assert pauses == pytest.approx([0.1, 0.2, 0.4])
    starts = s.starts("e.test")
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g >= p - TOLERANCE for g, p in zip(gaps, pauses, strict=True))


@needs_middlewares
async def test_the_backoff_is_capped_and_jittered(
    site: tuple[Site, TestServer], build: Any
) -> None:
    s, server = site
    s.plan["c.test"] = [(503, {})] * 3
    session, conn, _mw = build(
        middleware={"base": 0.1, "max_backoff": 0.15, "jitter": 0.5}
    )
    pauses: list[float] = []
    conn.add_listener(
        lambda e: pauses.append(e.until - e.at) if isinstance(e, HostPaused) else None
    )
    assert await get(session, target(server, "c.test")) == 200
    assert len(pauses) == 3
    assert all(0.05 - 1e-9 <= p <= 0.15 + 1e-9 for p in pauses)
    assert max(pauses[1:]) <= 0.15 + 1e-9


@needs_middlewares
async def test_retry_after_as_an_http_date(
    site: tuple[Site, TestServer], build: Any
) -> None:
    s, server = site
    date = email.utils.formatdate(time.time() + 2, usegmt=True)
    s.plan["d.test"] = [(429, {"Retry-After": date})]
    session, conn, _mw = build(middleware={"retries": 0})
    loop = asyncio.get_running_loop()
    assert await get(session, target(server, "d.test")) == 429
    paused_until = conn.stats(target(server, "d.test")).paused_until
    assert paused_until is not None
    # The date has whole seconds: between 1 and 2 s from when it was sent.
    assert 0.5 < paused_until - loop.time() <= 2.0


@needs_middlewares
async def test_a_garbage_retry_after_is_ignored_and_counted(
    site: tuple[Site, TestServer], build: Any
) -> None:
    s, server = site
    s.plan["g.test"] = [(429, {"Retry-After": "whenever"})]
    session, conn, mw = build(middleware={"base": 0.05, "jitter": 0.0})
    assert await get(session, target(server, "g.test")) == 200
    assert mw.invalid_retry_after == 1
    assert conn.stats().pauses == 1  # the exponential backoff instead


@needs_middlewares
async def test_a_retried_request_keeps_its_fifo_place(
    site: tuple[Site, TestServer], build: Any
) -> None:
    # A paced host (0.5 s apart): request 0 is answered 429 before request 1
    # is due; its retry goes back in front of 1, 2 and 3.
    s, server = site
    s.plan["f.test"] = [(429, {"Retry-After": "1"})]
    session, _conn, _mw = build(delay_per_host=0.5)
    tasks = []
    for i in range(4):
        tasks.append(asyncio.create_task(get(session, target(server, "f.test", i))))
        await asyncio.sleep(0)
    assert await asyncio.gather(*tasks) == [200] * 4
    assert s.ids("f.test") == ["0", "0", "1", "2", "3"]


@needs_middlewares
async def test_a_stalled_host_fails_clearly(
    site: tuple[Site, TestServer], build: Any
) -> None:
    s, server = site
    s.plan["s.test"] = [(429, {"Retry-After": "1"})] * 10
    session, _conn, mw = build(middleware={"stall_after": 2, "retries": 5})
    loop = asyncio.get_running_loop()
    began = loop.time()
    # The first answer pauses the host 1 s; the retry's answer, the second
    # in a row, stalls it.
    with pytest.raises(HostStalledError) as info:
        await session.get(target(server, "s.test"))
    assert loop.time() - began >= 1.0 - TOLERANCE
    assert info.value.stalls == 2
    assert "stall_after=2" in str(info.value)
    # A new request fails at once while the pause lasts.
    with pytest.raises(HostStalledError):
        await session.get(target(server, "s.test"))
    assert len(s.starts("s.test")) == 2
    assert mw.stalled == 2


@needs_middlewares
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"retries": -1}, ValueError, "retries must be >= 0, got -1"),
        ({"base": -1.0}, ValueError, "base must be a finite number >= 0, got -1.0"),
        ({"jitter": 2}, ValueError, "jitter must be within [0, 1], got 2"),
        ({"statuses": [42]}, ValueError, "statuses must be HTTP status codes, got 42"),
        ({"stall_after": 0}, ValueError, "stall_after must be >= 1, got 0"),
        ({"max_backoff": "1"}, TypeError, "max_backoff must be a number, not str"),
    ],
)
async def test_bad_backoff_options_are_refused_naming_the_value(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    conn = PoolConnector()
    try:
        with pytest.raises(error) as info:
            backoff_middleware(conn, **kwargs)
        assert message in str(info.value)
    finally:
        await conn.close()
