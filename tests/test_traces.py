"""TraceConfig signals fire as with TCPConnector; raising ones leak nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from aioconnpool import PoolConnector
from tests.conftest import url

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]


def recording_trace(events: list[str]) -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()

    def record(name: str) -> Any:
        async def handler(session: Any, ctx: SimpleNamespace, params: Any) -> None:
            events.append(name)

        return handler

    trace.on_connection_queued_start.append(record("queued_start"))
    trace.on_connection_queued_end.append(record("queued_end"))
    trace.on_connection_create_start.append(record("create_start"))
    trace.on_connection_create_end.append(record("create_end"))
    trace.on_connection_reuseconn.append(record("reuseconn"))
    return trace


async def test_signals_fire_as_with_tcpconnector(
    server: TestServer, make_session: Build
) -> None:
    events: list[str] = []
    session, _ = make_session(
        session_kwargs={"trace_configs": [recording_trace(events)]}, limit=1
    )
    await (await session.get(url(server, "/small"))).read()
    await (await session.get(url(server, "/small"))).read()
    assert events == ["create_start", "create_end", "reuseconn"]

    events.clear()
    held = await session.get(url(server, "/big"))
    waiter = asyncio.create_task(session.get(url(server, "/small")))
    await asyncio.sleep(0.05)
    held.release()  # closes (unread), so the waiter opens a new connection
    await (await waiter).read()
    assert events == [
        "reuseconn",
        "queued_start",
        "queued_end",
        "create_start",
        "create_end",
    ]


async def test_same_signals_as_aiohttp(server: TestServer) -> None:
    """Side by side: the same request sequence through both connectors."""
    seen: dict[str, list[str]] = {}
    for name, factory in (("aiohttp", aiohttp.TCPConnector), ("ours", PoolConnector)):
        events: list[str] = []
        async with aiohttp.ClientSession(
            connector=factory(limit=1), trace_configs=[recording_trace(events)]
        ) as session:
            for _ in range(2):
                await (await session.get(url(server, "/small"))).read()
            held = await session.get(url(server, "/big"))
            waiter = asyncio.create_task(session.get(url(server, "/small")))
            await asyncio.sleep(0.05)
            await held.read()
            await (await waiter).read()
        seen[name] = events
    assert seen["ours"] == seen["aiohttp"]


async def test_raising_reuse_trace_does_not_orphan_the_socket(
    server: TestServer, make_session: Build
) -> None:
    fail = True

    async def on_reuse(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        if fail:
            raise RuntimeError("tracer broke")

    trace = aiohttp.TraceConfig()
    trace.on_connection_reuseconn.append(on_reuse)
    session, conn = make_session(session_kwargs={"trace_configs": [trace]})
    await (await session.get(url(server, "/small"))).read()
    with pytest.raises(RuntimeError, match="tracer broke"):
        await session.get(url(server, "/small"))
    stats = conn.stats(url(server, "/"))
    # aiohttp drops the socket from its books here but never closes it.
    assert (stats.acquired, stats.idle, stats.created, stats.reused) == (0, 1, 1, 1)
    assert stats.released["error"] == 1
    fail = False
    await (await session.get(url(server, "/small"))).read()
    stats = conn.stats(url(server, "/"))
    assert (stats.created, stats.reused, stats.idle) == (1, 2, 1)
    [info] = conn.connections()
    assert info.requests == 2  # the failed hand-over served no request


async def test_raising_create_end_trace_closes_the_new_socket(
    server: TestServer, make_session: Build
) -> None:
    async def on_create_end(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        raise RuntimeError("tracer broke")

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create_end)
    session, conn = make_session(session_kwargs={"trace_configs": [trace]})
    with pytest.raises(RuntimeError, match="tracer broke"):
        await session.get(url(server, "/small"))
    stats = conn.stats(url(server, "/"))
    assert (stats.acquired, stats.idle, stats.connecting, stats.created) == (0, 0, 0, 1)
    assert (stats.released["error"], stats.closed["error"]) == (1, 1)
    assert conn.connections() == []


async def test_pools_per_full_connection_key(
    server: TestServer, make_session: Build
) -> None:
    """Different ssl settings never share a connection; stats add them up."""
    session, conn = make_session()
    for _ in range(2):
        await (await session.get(url(server, "/small"))).read()
        await (await session.get(url(server, "/small"), ssl=False)).read()
    stats = conn.stats(url(server, "/"))
    assert (stats.created, stats.reused, stats.idle) == (2, 2, 2)
    assert len({info.local for info in conn.connections()}) == 2
