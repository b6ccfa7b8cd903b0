"""The pool under faults, against raw misbehaving servers on loopback.

After every scenario, once all requests have finished: nothing acquired,
connecting or waiting; ``stats().open`` equals the sockets the OS says this
process holds to the server; ``created + reused == sum(released) + acquired``;
and no warning (``filterwarnings = error``). ``tests/test_release_paths.py``
names each release path exactly; here the point is the OS agreeing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import http_parser

from aioconnpool import PoolConnector
from aioconnpool.testing import LoopbackResolver
from tests.faulty import FaultServer, client_sockets, settle_pool, violations

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]
Start = Callable[..., Awaitable[FaultServer]]


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def asyncio_errors() -> Iterator[Collect]:
    """Fail a test after which asyncio logged an error (``Future exception was
    never retrieved``, ``Unclosed ...``): those are leaks too, just not
    warnings. Set up first, so it checks after every other fixture's teardown."""
    handler = Collect()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield handler
        gc.collect()  # unretrieved futures are reported when collected
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in handler.records] == []


@pytest.fixture
async def fault_server() -> AsyncIterator[Start]:
    servers: list[FaultServer] = []

    async def start(**kwargs: Any) -> FaultServer:
        srv = await FaultServer(**kwargs).__aenter__()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        await srv.close()


class SlowNames(LoopbackResolver):
    """Resolves ``slow*`` names only after a long delay: holds a request in
    ``connecting`` while others to the same server go through."""

    async def resolve(self, host: str, *args: Any, **kwargs: Any) -> Any:
        if host.startswith("slow"):
            await asyncio.sleep(30)
        return await super().resolve(host, *args, **kwargs)


def nonzero(mapping: Any) -> set[str]:
    return {k for k, v in mapping.items() if v}


async def assert_settled(connector: PoolConnector, *servers: FaultServer) -> None:
    found = await settle_pool(connector, tuple(s.port for s in servers))
    assert found == []


async def fetch(session: aiohttp.ClientSession, target: str, **kw: Any) -> bytes:
    async with session.get(target, **kw) as resp:
        return await resp.read()


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never reached: {what}")


# ------------------------------------------------------- server-side faults

PURE_PYTHON_PARSER = http_parser.HttpResponseParser is http_parser.HttpResponseParserPy
"""aiohttp built without its C extensions (``AIOHTTP_NO_EXTENSIONS``, as
``peer/against_source.py`` builds an unreleased one)."""

SERVER_FAULTS = [
    # fault, error expected (None: the request succeeds), released, closed
    ("ok", None, {"eof"}, set()),
    ("reset-headers", aiohttp.ClientOSError, {"error"}, {"error"}),
    ("reset-body", aiohttp.ClientPayloadError, {"error"}, {"error"}),
    ("close-idle", None, {"eof"}, {"server"}),
    # aiohttp retries a request that fails on a reused connection
    ("drop-next", None, {"eof", "error"}, {"error"}),
    ("hang", aiohttp.ServerTimeoutError, {"error"}, {"error"}),
    ("trickle", aiohttp.ServerTimeoutError, {"error"}, {"error"}),
    ("bad-status", aiohttp.ClientResponseError, {"error"}, {"error"}),
    ("bad-header", aiohttp.ClientResponseError, {"error"}, {"error"}),
    ("short-body", aiohttp.ClientPayloadError, {"error"}, {"error"}),
    ("long-body", aiohttp.ClientResponseError, {"error"}, {"error"}),
]


@pytest.mark.parametrize(
    ("fault", "error", "released", "closed"),
    SERVER_FAULTS,
    ids=[f[0] for f in SERVER_FAULTS],
)
async def test_server_fault(
    fault_server: Start,
    make_session: Build,
    *,
    fault: str,
    error: type[Exception] | None,
    released: set[str],
    closed: set[str],
) -> None:
    if fault == "long-body" and PURE_PYTHON_PARSER:
        pytest.skip(
            "aiohttp's pure-Python parser drops bytes that follow a complete "
            "response in the same packet: no fault to see (TCPConnector alike)"
        )
    srv = await fault_server()
    session, conn = make_session(
        session_kwargs={"timeout": aiohttp.ClientTimeout(sock_read=0.1)}
    )
    for _ in range(3):  # the second and third requests may meet a reused socket
        if error is None:
            assert await fetch(session, srv.url(fault)) == b"ok"
        else:
            with pytest.raises(error):
                await fetch(session, srv.url(fault))
        assert violations(conn.stats()) == []
        await asyncio.sleep(0.04)  # let /close-idle and /drop-next do their part
    await assert_settled(conn, srv)
    stats = conn.stats()
    assert nonzero(stats.released) == released
    assert nonzero(stats.closed) == closed
    # Every attempt reached the server (aiohttp retries some on a new socket).
    assert stats.requests == sum(srv.requests.values()) >= 3


async def test_idle_socket_closed_by_server_leaves_pool_and_os(
    fault_server: Start, make_session: Build
) -> None:
    srv = await fault_server(idle_close_after=0.01)
    session, conn = make_session()
    assert await fetch(session, srv.url("close-idle")) == b"ok"
    assert conn.stats().idle == 1
    await wait_for(lambda: conn.stats().idle == 0, "idle socket dropped")
    await assert_settled(conn, srv)
    assert client_sockets(srv.port) == 0


async def test_unsolicited_bytes_on_an_idle_socket_are_not_a_response(
    fault_server: Start, make_session: Build
) -> None:
    # A server that writes to an idle keep-alive socket (a late duplicate, a
    # desynchronised proxy) has made it unusable: the next request on it
    # would take those bytes as its own answer. aiohttp reuses it anyway
    # (TCPConnector too, 3.11 to 3.14); the pool must drop it instead.
    srv = await fault_server(idle_close_after=0.01)
    session, conn = make_session()
    assert await fetch(session, srv.url("late-bytes")) == b"ok"
    await asyncio.sleep(0.05)  # the stray "200, Content-Length: 0" arrives
    assert await fetch(session, srv.url("ok")) == b"ok"
    await assert_settled(conn, srv)


# --------------------------------------------------- connection-level faults


@pytest.mark.parametrize(
    ("on_accept", "error"),
    [
        ("close", aiohttp.ServerDisconnectedError),
        ("reset", aiohttp.ClientOSError),
    ],
)
async def test_closed_right_after_accept(
    fault_server: Start,
    make_session: Build,
    on_accept: str,
    error: type[Exception],
) -> None:
    srv = await fault_server(on_accept=on_accept)
    session, conn = make_session()
    for _ in range(2):
        # A reset can win the race against the request being written, or lose.
        with pytest.raises((error, aiohttp.ClientOSError)):
            await fetch(session, srv.url())
    await assert_settled(conn, srv)
    stats = conn.stats()
    assert nonzero(stats.released) == {"error"}
    # A reset may arrive before the connect call returns: a connect error.
    assert stats.created + stats.connect_errors == srv.accepted


async def test_slow_accept_under_limits(
    fault_server: Start, make_session: Build
) -> None:
    srv = await fault_server(accept_delay=0.02)
    session, conn = make_session(limit=3, limit_per_host=2)
    hosts = [f"h{i % 3}.test" for i in range(12)]
    bodies = await asyncio.gather(*(fetch(session, srv.url(host=h)) for h in hosts))
    assert bodies == [b"ok"] * 12
    await assert_settled(conn, srv)
    stats = conn.stats()
    assert stats.created == srv.accepted
    assert stats.created + stats.reused == 12


async def test_connect_timeout_on_a_full_accept_queue(
    fault_server: Start, make_session: Build
) -> None:
    # Nobody accepts and the queue holds at most one connection: the kernel
    # drops further SYNs, so those connects time out for real.
    srv = await fault_server(on_accept="never", backlog=0)
    session, conn = make_session()
    timeout = aiohttp.ClientTimeout(sock_connect=0.2, sock_read=0.2)
    results = await asyncio.gather(
        *(
            fetch(session, srv.url(host=f"q{i}.test"), timeout=timeout)
            for i in range(4)
        ),
        return_exceptions=True,
    )
    assert all(isinstance(r, aiohttp.ServerTimeoutError) for r in results)
    assert any(isinstance(r, aiohttp.ConnectionTimeoutError) for r in results)
    await assert_settled(conn, srv)
    stats = conn.stats()
    assert stats.connect_errors >= 1
    assert stats.connect_errors + stats.created == 4


# ------------------------------------------------- client-side cancellation


async def _endless_body() -> AsyncIterator[bytes]:
    chunk = b"x" * 65536
    while True:
        yield chunk
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    "point", ["queued", "connecting", "sending", "headers", "body"]
)
async def test_cancel_at_every_await_point(
    fault_server: Start, make_session: Build, point: str
) -> None:
    srv = await fault_server()
    session, conn = make_session(limit=1, resolver=SlowNames())
    held: aiohttp.ClientResponse | None = None
    task: asyncio.Task[Any]
    if point == "queued":
        held = await session.get(srv.url("trickle"))
        task = asyncio.create_task(fetch(session, srv.url()))
        await wait_for(lambda: conn.stats().waiting == 1, "queued")
    elif point == "connecting":
        task = asyncio.create_task(fetch(session, srv.url(host="slow.test")))
        await wait_for(lambda: conn.stats().connecting == 1, "connecting")
    elif point == "sending":
        task = asyncio.create_task(
            session.post(srv.url("sink"), data=_endless_body()).__aenter__()
        )
        await wait_for(lambda: "sink" in srv.requests, "sending")
        await asyncio.sleep(0.05)  # the client's send buffer fills up
    elif point == "headers":
        task = asyncio.create_task(fetch(session, srv.url("hang")))
        await wait_for(lambda: "hang" in srv.requests, "awaiting headers")
    else:
        resp = await session.get(srv.url("trickle"))
        task = asyncio.create_task(resp.read())
        await asyncio.sleep(0.02)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if held is not None:
        held.close()
    await assert_settled(conn, srv)
    stats = conn.stats()
    if point == "connecting":
        assert stats.connect_errors == 1
        assert stats.created == 0
    elif point == "queued":
        assert (stats.created, stats.requests) == (1, 2)
    else:
        assert stats.released["cancelled"] == 1


async def test_reset_after_a_cancelled_send_is_not_logged(
    fault_server: Start, make_session: Build, asyncio_errors: Collect
) -> None:
    # The client is cancelled while its body sits unsent in the socket buffer;
    # then the server goes away with that data unread, which resets the
    # socket. Nobody awaits that socket's closing: nothing may be logged.
    srv = await fault_server()
    session, conn = make_session()
    task = asyncio.create_task(
        session.post(srv.url("sink"), data=_endless_body()).__aenter__()
    )
    await wait_for(lambda: "sink" in srv.requests, "sending")
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await srv.close()  # unread data in its buffer: the kernel sends a RST
    await assert_settled(conn, srv)
    await session.close()
    gc.collect()
    logged = [r.getMessage() for r in asyncio_errors.records]
    asyncio_errors.records.clear()  # reported here, not again at teardown
    assert logged == []


# ------------------------------------------------------------------ timeouts


async def test_total_timeout_while_queued(
    fault_server: Start, make_session: Build
) -> None:
    srv = await fault_server()
    session, conn = make_session(limit=1)
    held = await session.get(srv.url("trickle"))
    with pytest.raises(asyncio.TimeoutError):
        await fetch(session, srv.url(), timeout=aiohttp.ClientTimeout(total=0.1))
    assert conn.stats().waiting == 0
    held.release()
    assert await fetch(session, srv.url()) == b"ok"
    await assert_settled(conn, srv)
    assert conn.stats().requests == 3


async def test_connect_timeout_while_resolving(
    fault_server: Start, make_session: Build
) -> None:
    srv = await fault_server()
    session, conn = make_session(resolver=SlowNames())
    with pytest.raises(aiohttp.ConnectionTimeoutError):
        await fetch(
            session,
            srv.url(host="slow.test"),
            timeout=aiohttp.ClientTimeout(connect=0.1),
        )
    assert await fetch(session, srv.url(host="fast.test")) == b"ok"
    await assert_settled(conn, srv)
    stats = conn.stats()
    assert (stats.connect_errors, stats.created) == (1, 1)


# ------------------------------------------------------- closing under load


async def test_connector_close_with_requests_at_every_stage(
    fault_server: Start, make_session: Build
) -> None:
    srv = await fault_server()
    session, conn = make_session(limit=3, resolver=SlowNames())
    body = await session.get(srv.url("trickle"))
    stages = {
        "reading the body": body.read(),
        "awaiting headers": fetch(session, srv.url("hang")),
        "connecting": fetch(session, srv.url(host="slow.test")),
        "queued": fetch(session, srv.url()),
        "queued, another host": fetch(session, srv.url(host="b.test")),
    }
    tasks = {name: asyncio.create_task(coro) for name, coro in stages.items()}
    await wait_for(
        lambda: conn.stats().waiting == 2 and "hang" in srv.requests, "all stages"
    )
    stats = conn.stats()
    assert (stats.acquired, stats.connecting, stats.waiting) == (2, 1, 2)
    await conn.close()
    await asyncio.wait(tasks.values(), timeout=1)
    problems: list[str] = []
    for name, task in tasks.items():
        if not task.done():
            # aiohttp's ResponseHandler.close() drops its body stream before
            # connection_lost() can fail it (TCPConnector too, 3.11 to 3.14).
            problems.append(f"{name}: still running after close()")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        elif task.cancelled():
            # aiohttp cancels its DNS lookups on close, and the lookup's
            # CancelledError reaches a request nobody cancelled. We turn it
            # into PoolClosedError where Task.cancelling() can tell that
            # nobody cancelled the request (Python 3.11+); Python 3.10
            # cannot, and leaves aiohttp's CancelledError alone.
            if name != "connecting" or sys.version_info >= (3, 11):
                problems.append(f"{name}: CancelledError, but nobody cancelled it")
        elif not isinstance(task.exception(), aiohttp.ClientError):
            problems.append(f"{name}: {task.exception()!r}")
    await assert_settled(conn, srv)
    stats = conn.stats()
    assert stats.is_closed
    assert stats.open == 0
    assert client_sockets(srv.port) == 0
    # Every request ends, with an aiohttp.ClientError.
    assert problems == []
