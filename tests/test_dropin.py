"""Behaviours that differed from ``TCPConnector`` in aiohttp's own tests (issue 18),
checked on loopback: the ones we match, and the one we keep on purpose.

``make peer`` runs aiohttp's client tests with ``PoolConnector`` swapped in;
each difference it found is pinned here, against a real server, both
connectors side by side where aiohttp's behaviour is the claim.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from aioconnpool import PoolClosedError, PoolConnector
from aioconnpool.testing import LoopbackResolver
from tests.conftest import url

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]

CONNECTORS = [
    pytest.param(aiohttp.TCPConnector, id="TCPConnector"),
    pytest.param(PoolConnector, id="PoolConnector"),
]


@pytest.mark.parametrize("connector_class", CONNECTORS)
async def test_read_after_the_session_closed_raises_aiohttps_runtime_error(
    server: TestServer, resolver: LoopbackResolver, connector_class: Any
) -> None:
    # aiohttp's test_exception_when_read_outside_of_session: the body is not
    # complete when the session closes; reading it later is a usage error.
    connector = connector_class(resolver=resolver)
    async with aiohttp.ClientSession(connector=connector) as session:
        resp = await session.get(url(server, "/big"))
    with pytest.raises(RuntimeError, match=r"^Connection closed\.$") as caught:
        await resp.read()
    assert type(caught.value) is RuntimeError
    resp.close()
    if isinstance(connector, PoolConnector):
        stats = connector.stats()
        assert (stats.open, stats.acquired) == (0, 0)
        assert stats.released["connector_closed"] == 1


async def test_read_after_the_session_closed_returns_the_buffered_bytes_first(
    server: TestServer, make_session: Build
) -> None:
    session, _ = make_session()
    resp = await session.get(url(server, "/trickle"))  # 1 byte, then nothing
    await session.close()
    assert await resp.content.readany() == b"x"
    with pytest.raises(RuntimeError, match=r"^Connection closed\.$"):
        await resp.content.readany()
    resp.close()


async def test_a_reader_waiting_when_the_connector_closes_gets_pool_closed(
    server: TestServer, make_session: Build
) -> None:
    # The intended difference (peer/expected.toml): aiohttp's close() drops
    # the body stream, so its reader waits until someone cancels it (which
    # aiohttp's TLS shutdown test does, expecting CancelledError). Ours is
    # failed at once, with an aiohttp.ClientConnectionError.
    session, conn = make_session()
    resp = await session.get(url(server, "/trickle"))
    reader = asyncio.create_task(resp.read())
    await asyncio.sleep(0.05)
    assert not reader.done()
    await conn.close()
    done, _ = await asyncio.wait([reader], timeout=1)
    assert done == {reader}, "the reader still waits after close()"
    error = reader.exception()
    assert isinstance(error, PoolClosedError)
    assert isinstance(error, aiohttp.ClientConnectionError)
    assert str(error) == "Connector is closed."
    # Cancelling it afterwards changes nothing: it has already ended.
    reader.cancel()
    with pytest.raises(PoolClosedError):
        await reader
    stats = conn.stats()
    assert (stats.open, stats.acquired) == (0, 0)
    assert stats.released["connector_closed"] == 1


async def test_wait_eof_when_the_connector_closes_gets_pool_closed(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session()
    resp = await session.get(url(server, "/trickle"))
    waiter = asyncio.create_task(resp.content.wait_eof())
    await asyncio.sleep(0.05)
    await conn.close()
    done, _ = await asyncio.wait([waiter], timeout=1)
    assert done == {waiter}
    assert isinstance(waiter.exception(), PoolClosedError)


# aiohttp's test_reraise_os_error and test_close_conn_on_error build their
# request from a Mock (its connection_key.port is a Mock, which a pool key
# cannot hold). Their claims, on a real request: an OSError raised while the
# request is sent comes out as ClientOSError with its errno, and any
# exception there closes the connection instead of leaking it.


class Unexpected(BaseException):
    pass


def failing_trace(error: BaseException) -> aiohttp.TraceConfig:
    async def on_headers_sent(*_: object) -> None:
        raise error

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(on_headers_sent)
    return trace


@pytest.mark.parametrize("connector_class", CONNECTORS)
async def test_an_os_error_while_sending_is_reraised_as_client_os_error(
    server: TestServer, resolver: LoopbackResolver, connector_class: Any
) -> None:
    connector = connector_class(resolver=resolver)
    trace = failing_trace(OSError(1, "permission error"))
    async with aiohttp.ClientSession(
        connector=connector, trace_configs=[trace]
    ) as session:
        with pytest.raises(aiohttp.ClientOSError) as caught:
            await session.get(url(server, "/small"))
        assert (caught.value.errno, caught.value.strerror) == (1, "permission error")
        if isinstance(connector, PoolConnector):
            stats = connector.stats()
            assert (stats.acquired, stats.idle, stats.open) == (0, 0, 0)
            assert stats.released["error"] == 1
            assert stats.closed["error"] == 1


@pytest.mark.parametrize("connector_class", CONNECTORS)
async def test_a_base_exception_while_sending_closes_the_connection(
    server: TestServer, resolver: LoopbackResolver, connector_class: Any
) -> None:
    connector = connector_class(resolver=resolver)
    trace = failing_trace(Unexpected("permission error"))
    async with aiohttp.ClientSession(
        connector=connector, trace_configs=[trace]
    ) as session:
        with pytest.raises(Unexpected):
            async with session.get(url(server, "/small")) as resp:
                await resp.text()
        if isinstance(connector, PoolConnector):
            stats = connector.stats()
            assert (stats.acquired, stats.idle, stats.open) == (0, 0, 0)
            assert stats.released["error"] == 1
            assert stats.closed["error"] == 1
