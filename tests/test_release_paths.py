"""Every way a connection goes back to the pool, asserted exactly, on loopback."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from collections.abc import Callable
from typing import Any

import aiohttp
import aiohttp.web
import pytest
from aiohttp.test_utils import TestServer

from aioconnpool import HostStats, PoolConnector
from aioconnpool._aiohttp import carry_out
from aioconnpool.testing import LoopbackResolver
from tests.conftest import Recorder, settle, url

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]


def nonzero(mapping: Any) -> dict[str, int]:
    return {k: v for k, v in mapping.items() if v}


def check(
    stats: HostStats,
    *,
    acquired: int = 0,
    idle: int = 0,
    connecting: int = 0,
    waiting: int = 0,
    created: int,
    reused: int = 0,
    released: dict[str, int],
    closed: dict[str, int] | None = None,
) -> None:
    assert (stats.acquired, stats.idle, stats.connecting, stats.waiting) == (
        acquired,
        idle,
        connecting,
        waiting,
    )
    assert (stats.created, stats.reused) == (created, reused)
    assert nonzero(stats.released) == released
    assert nonzero(stats.closed) == (closed or {})
    assert stats.open == acquired + idle


async def test_body_read_to_the_end(server: TestServer, make_session: Build) -> None:
    session, conn = make_session()
    resp = await session.get(url(server, "/big"))
    check(conn.stats(url(server, "/")), acquired=1, created=1, released={})
    body = await resp.read()
    assert len(body) == 48 * 65536
    check(conn.stats(url(server, "/")), idle=1, created=1, released={"eof": 1})


async def test_small_body_released_inside_get(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session()
    resp = await session.get(url(server, "/small"))
    # Nothing read yet, but the body came with the headers: already back.
    check(conn.stats(url(server, "/")), idle=1, created=1, released={"eof": 1})
    assert await resp.text() == "ok"
    check(conn.stats(url(server, "/")), idle=1, created=1, released={"eof": 1})


async def test_release_before_the_end(server: TestServer, make_session: Build) -> None:
    session, conn = make_session()
    resp = await session.get(url(server, "/big"))
    resp.release()
    check(
        conn.stats(url(server, "/")),
        created=1,
        released={"release": 1},
        closed={"unread": 1},
    )


async def test_close_by_caller(server: TestServer, make_session: Build) -> None:
    session, conn = make_session()
    resp = await session.get(url(server, "/big"))
    resp.close()
    check(
        conn.stats(url(server, "/")),
        created=1,
        released={"close": 1},
        closed={"caller": 1},
    )


async def test_async_with_exit(server: TestServer, make_session: Build) -> None:
    session, conn = make_session()
    async with session.get(url(server, "/big")) as resp:
        assert resp.status == 200
    async with session.get(url(server, "/big")) as resp:
        await resp.read()
    check(
        conn.stats(url(server, "/")),
        idle=1,
        created=2,
        released={"release": 1, "eof": 1},
        closed={"unread": 1},
    )


async def test_raise_for_status(server: TestServer, make_session: Build) -> None:
    session, conn = make_session(session_kwargs={"raise_for_status": True})
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await session.get(url(server, "/big?status=503"))
    assert info.value.status == 503
    with pytest.raises(aiohttp.ClientResponseError):
        await session.get(url(server, "/status/404"))
    check(
        conn.stats(url(server, "/")),
        idle=1,
        created=2,
        released={"release": 1, "eof": 1},
        closed={"unread": 1},
    )


async def test_redirect_reuses_the_connection(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    session, conn = make_session()
    resp = await session.get(url(server, "/redirect"))
    assert resp.status == 200
    assert len(resp.history) == 1
    check(
        conn.stats(url(server, "/")),
        idle=1,
        created=1,
        reused=1,
        released={"eof": 2},
    )
    [info] = conn.connections()
    assert info.requests == 2


async def test_connection_close_from_server(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session()
    resp = await session.get(url(server, "/close"))
    assert await resp.text() == "bye"
    check(
        conn.stats(url(server, "/")),
        created=1,
        released={"eof": 1},
        closed={"server": 1},
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [("HEAD", "/small"), ("GET", "/status/204"), ("GET", "/status/304")],
)
async def test_bodiless_responses(
    server: TestServer, make_session: Build, method: str, path: str
) -> None:
    session, conn = make_session()
    for _ in range(2):
        resp = await session.request(method, url(server, path))
        assert await resp.read() == b""
    check(
        conn.stats(url(server, "/")), idle=1, created=1, reused=1, released={"eof": 2}
    )


async def test_cancel_while_connecting(
    server: TestServer, make_session: Build, resolver: LoopbackResolver
) -> None:
    resolver.delay = 5.0  # name resolution is part of opening a connection
    session, conn = make_session()
    target = url(server, "/small", host="slow.test")
    task = asyncio.create_task(session.get(target))
    await asyncio.sleep(0.05)
    check(conn.stats(target), connecting=1, created=0, released={})
    [info] = conn.connections()
    assert info.state == "connecting"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = conn.stats(target)
    check(stats, created=0, released={})
    assert stats.connect_errors == 1
    assert conn.connections() == []


async def test_cancel_while_waiting(server: TestServer, make_session: Build) -> None:
    session, conn = make_session(limit=1)
    held = await session.get(url(server, "/big"))
    waiter = asyncio.create_task(session.get(url(server, "/small")))
    await asyncio.sleep(0.05)
    check(conn.stats(url(server, "/")), acquired=1, waiting=1, created=1, released={})
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    check(conn.stats(url(server, "/")), acquired=1, created=1, released={})
    await held.read()
    check(conn.stats(url(server, "/")), idle=1, created=1, released={"eof": 1})
    assert conn.stats().requests == 2


async def cancel_a_read(session: aiohttp.ClientSession, server: TestServer) -> None:
    """Start reading a slow body, then cancel the read."""
    resp = await session.get(url(server, "/trickle"))
    reader = asyncio.create_task(resp.read())
    await asyncio.sleep(0.05)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader


async def test_cancel_while_reading(server: TestServer, make_session: Build) -> None:
    session, conn = make_session()
    await cancel_a_read(session, server)
    check(
        conn.stats(url(server, "/")),
        created=1,
        released={"cancelled": 1},
        closed={"cancelled": 1},
    )


async def test_read_timeout(server: TestServer, make_session: Build) -> None:
    session, conn = make_session()
    timeout = aiohttp.ClientTimeout(sock_read=0.1)
    with pytest.raises(asyncio.TimeoutError):
        await session.get(url(server, "/hang"), timeout=timeout)
    resp = await session.get(url(server, "/trickle"), timeout=timeout)
    with pytest.raises(asyncio.TimeoutError):
        await resp.read()
    check(
        conn.stats(url(server, "/")),
        created=2,
        released={"error": 2},
        closed={"error": 2},
    )


async def test_connection_refused(make_session: Build) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    session, conn = make_session()
    with pytest.raises(aiohttp.ClientConnectorError):
        await session.get(f"http://127.0.0.1:{port}/")
    stats = conn.stats(f"http://127.0.0.1:{port}/")
    check(stats, created=0, released={})
    assert stats.connect_errors == 1
    assert stats.requests == 1


async def test_connector_closed_with_requests_in_flight(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session(limit=1)
    held = await session.get(url(server, "/big"))
    waiter = asyncio.create_task(session.get(url(server, "/small")))
    await asyncio.sleep(0.05)
    await conn.close()
    with pytest.raises(aiohttp.ClientConnectionError, match="Connector is closed"):
        await waiter
    held.release()
    stats = conn.stats()
    assert stats.is_closed
    assert (stats.acquired, stats.idle, stats.connecting, stats.waiting) == (0, 0, 0, 0)
    assert nonzero(stats.released) == {"connector_closed": 1}
    assert nonzero(stats.closed) == {"connector_closed": 1}
    assert "closed" in repr(conn)


async def test_idle_connection_closed_by_peer_leaves_at_once(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session()
    target = url(server, "/small")
    await (await session.get(target)).read()
    assert conn.stats().idle == 1
    await server.close()  # the server drops its keep-alive connections
    for _ in range(50):
        if conn.stats().idle == 0:
            break
        await asyncio.sleep(0.01)
    stats = conn.stats(target)
    check(stats, created=1, released={"eof": 1}, closed={"server": 1})


async def test_keepalive_expiry(server: TestServer, make_session: Build) -> None:
    session, conn = make_session(keepalive_timeout=0.05)
    await (await session.get(url(server, "/small"))).read()
    assert conn.stats().idle == 1
    await asyncio.sleep(0.2)
    await settle()
    check(
        conn.stats(url(server, "/")),
        created=1,
        released={"eof": 1},
        closed={"expired": 1},
    )


async def test_keepalive_expiry_keeps_one_timer(
    server: TestServer, make_session: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle connections that expire one after another are timed by one
    keep-alive timer at a time: each expiry round arms the next, once."""
    loop = asyncio.get_running_loop()
    timers: list[asyncio.TimerHandle] = []
    call_at = loop.call_at

    def counting_call_at(
        when: float, callback: Any, *args: Any, **kwargs: Any
    ) -> asyncio.TimerHandle:
        handle = call_at(when, callback, *args, **kwargs)
        if callback is carry_out._run_expiry:
            timers.append(handle)
        return handle

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    session, conn = make_session(keepalive_timeout=0.2)
    pending_at_most = 0
    for i in range(5):  # five hosts, idle from 50 ms apart
        await (await session.get(url(server, "/small", host=f"h{i}.test"))).read()
        await asyncio.sleep(0.05)
    for _ in range(40):
        pending = [t for t in timers if not t.cancelled() and t.when() > loop.time()]
        pending_at_most = max(pending_at_most, len(pending))
        if conn.stats().idle == 0:
            break
        await asyncio.sleep(0.02)
    await settle()
    assert conn.stats().idle == 0
    assert conn.stats().closed["expired"] == 5
    assert pending_at_most == 1
    # One timer per round at most: the first connection's, then one armed by
    # each round that left connections idle (one round may expire several).
    assert len(timers) <= 5, [t.when() for t in timers]


async def test_force_close(server: TestServer, make_session: Build) -> None:
    session, conn = make_session(force_close=True)
    for _ in range(2):
        await (await session.get(url(server, "/small"))).read()
    check(
        conn.stats(url(server, "/")),
        created=2,
        released={"eof": 2},
        closed={"force_close": 2},
    )


async def test_force_close_counts_each_ending(
    server: TestServer, make_session: Build
) -> None:
    """With force_close, ``release()`` takes its own fast lane for a body read
    to the end (compat.read_to_end): every other ending must still be told
    apart, as classify_release names it without force_close."""
    session, conn = make_session(force_close=True)
    target = url(server, "/")
    body = await (await session.get(url(server, "/big"))).read()  # read to the end
    assert len(body) == 48 * 65536
    resp = await session.get(url(server, "/big"))
    resp.release()  # before the end
    async with session.get(url(server, "/big")) as resp:
        await resp.content.read(10)  # left with a body unread
    resp = await session.get(url(server, "/big"))
    resp.close()  # by the caller
    await cancel_a_read(session, server)
    await settle()
    check(
        conn.stats(target),
        created=5,
        released={"eof": 1, "release": 2, "close": 1, "cancelled": 1},
        closed={"force_close": 1, "unread": 2, "caller": 1, "cancelled": 1},
    )


async def test_force_close_gives_the_slot_to_the_next_in_line(
    server: TestServer, make_session: Build
) -> None:
    """The fast lane's release frees the slot for a queued request: it opens
    a connection of its own (the released one is closed)."""
    session, conn = make_session(force_close=True, limit=1)
    first = await session.get(url(server, "/big"))
    waiter = asyncio.create_task(session.get(url(server, "/small")))
    await asyncio.sleep(0.05)
    check(conn.stats(url(server, "/")), acquired=1, waiting=1, created=1, released={})
    await first.read()
    second = await waiter
    assert await second.text() == "ok"
    await settle()
    check(
        conn.stats(url(server, "/")),
        created=2,
        released={"eof": 2},
        closed={"force_close": 2},
    )
    assert conn.stats().open == 0


async def test_dropped_response_counts_as_gc(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session()
    resp = await session.get(url(server, "/big"))
    connection = resp.connection
    assert connection is not None
    # Simulate a caller that loses both the response and its connection
    # without releasing them: aiohttp warns and hands the socket back.
    resp._connection = None
    del resp
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del connection
        gc.collect()
    assert [str(w.message).split(" ")[:2] for w in caught] == [
        ["Unclosed", "connection"]
    ]
    check(conn.stats(url(server, "/")), created=1, released={"gc": 1}, closed={"gc": 1})


async def test_connector_closed_between_grant_and_hand_over(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session(limit=1)
    held = await session.get(url(server, "/big"))
    await held.read()  # idle now; take it again and queue one more behind it
    held = await session.get(url(server, "/big"))
    waiter = asyncio.create_task(session.get(url(server, "/small")))
    await asyncio.sleep(0.05)
    await held.read()  # grants the idle connection to the waiter...
    await conn.close()  # ...which closes before the waiter's task resumes
    with pytest.raises(aiohttp.ClientConnectionError, match="Connector is closed"):
        await waiter
    stats = conn.stats()
    assert (stats.acquired, stats.idle, stats.connecting, stats.waiting) == (0, 0, 0, 0)
    assert stats.created + stats.reused == sum(stats.released.values())


UNREAD_BODY = 32 * 1024  # arrives with the headers: released before any read


def unread_bodies_alive() -> int:
    """Body streams of exactly ``UNREAD_BODY`` bytes still reachable."""
    gc.collect()
    return sum(
        1
        for o in gc.get_objects()
        if isinstance(o, aiohttp.StreamReader) and o.total_bytes == UNREAD_BODY
    )


def response_parsers_alive() -> int:
    """aiohttp's response parsers still reachable (C or Python)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "HttpResponseParser")


@pytest.mark.parametrize("client", ["aiohttp", "aioconnpool", "aioconnpool+leaks"])
async def test_idle_connection_keeps_no_unread_body(
    aiohttp_server: Callable[..., Any], resolver: LoopbackResolver, client: str
) -> None:
    """A response dropped unread leaves nothing behind on its idle connection.

    aiohttp's protocol keeps the last response's parser and body stream, and
    with it the buffered body, until the connection's next request: the
    control. With
    leak detection on, the release takes the classified path, not the fast
    lane.
    """

    async def body(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(body=b"x" * UNREAD_BODY)

    app = aiohttp.web.Application()
    app.router.add_get("/body", body)
    server = await aiohttp_server(app)
    connector = (
        aiohttp.TCPConnector(resolver=resolver)
        if client == "aiohttp"
        else PoolConnector(
            resolver=resolver, leak_threshold=60.0 if "leaks" in client else None
        )
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        resp = await session.get(url(server, "/body"))
        for _ in range(100):  # the whole body in, the connection back
            if resp.connection is None:
                break
            await asyncio.sleep(0.01)
        assert resp.connection is None
        assert unread_bodies_alive() == 1  # the response holds it
        resp.release()
        del resp
        kept = 1 if client == "aiohttp" else 0
        assert unread_bodies_alive() == kept
        # Nor the parser made for that response (one per request).
        assert response_parsers_alive() == kept
        if isinstance(connector, PoolConnector):
            check(
                connector.stats(url(server, "/")),
                idle=1,
                created=1,
                released={"eof": 1},
            )
            # The connection still serves the next request, body and all.
            again = await session.get(url(server, "/body"))
            assert len(await again.read()) == UNREAD_BODY
            assert connector.stats().reused == 1
