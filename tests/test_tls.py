"""TLS key isolation: connections made under different TLS settings never mix.

One loopback aiohttp server with a trustme certificate for ``a.test``,
``b.test`` and 127.0.0.1. A connection verified with one SSL context, one
fingerprint or one ``server_hostname`` must never serve a request that asked
for another: it was checked against different rules. The same settings must
share, or the isolation would be vacuous.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp.test_utils import TestServer

from aioconnpool import PoolClosedError, PoolConnector
from tests.conftest import Recorder, make_app
from tests.faulty import client_sockets, settle_pool

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("a.test", "b.test", "127.0.0.1")


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
async def tls_server(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    server_cert: trustme.LeafCert,
    recorder: Recorder,
) -> AsyncIterator[TestServer]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(ctx)
    srv = await aiohttp_server(make_app(recorder), ssl=ctx)
    yield srv
    recorder.gate.set()


def https(server: TestServer, host: str = "a.test") -> str:
    return f"https://{host}:{server.port}/small"


async def get(session: aiohttp.ClientSession, target: str, **kw: Any) -> str:
    async with session.get(target, **kw) as resp:
        return await resp.text()


async def assert_settled(conn: PoolConnector, server: TestServer) -> None:
    assert server.port is not None
    assert await settle_pool(conn, (server.port,)) == []


def local_ports(conn: PoolConnector) -> set[object]:
    return {info.local[1] for info in conn.connections() if info.local is not None}


async def test_same_context_shares_one_connection(
    tls_server: TestServer, make_session: Build, ca: trustme.CA
) -> None:
    session, conn = make_session()
    ctx = client_context(ca)
    for _ in range(3):
        assert await get(session, https(tls_server), ssl=ctx) == "ok"
    stats = conn.stats(https(tls_server))
    assert (stats.created, stats.reused, stats.idle) == (1, 2, 1)
    await assert_settled(conn, tls_server)


async def test_contexts_and_fingerprints_never_share(
    tls_server: TestServer,
    make_session: Build,
    ca: trustme.CA,
    server_cert: trustme.LeafCert,
) -> None:
    der = ssl.PEM_cert_to_DER_cert(server_cert.cert_chain_pems[0].bytes().decode())
    variants: list[ssl.SSLContext | aiohttp.Fingerprint | bool] = [
        client_context(ca),
        client_context(ca),  # equal settings, another object: another pool
        aiohttp.Fingerprint(hashlib.sha256(der).digest()),
        False,  # no verification at all
    ]
    session, conn = make_session()
    for _ in range(2):
        for variant in variants:
            assert await get(session, https(tls_server), ssl=variant) == "ok"
    stats = conn.stats(https(tls_server))
    # One connection per variant, each reused once by its own variant only.
    assert (stats.created, stats.reused, stats.idle) == (4, 4, 4)
    assert len(local_ports(conn)) == 4
    assert all(info.requests == 2 for info in conn.connections())
    await assert_settled(conn, tls_server)


async def test_wrong_fingerprint_never_gets_a_pooled_connection(
    tls_server: TestServer, make_session: Build, ca: trustme.CA
) -> None:
    session, conn = make_session()
    ctx = client_context(ca)
    assert await get(session, https(tls_server), ssl=ctx) == "ok"
    wrong = aiohttp.Fingerprint(hashlib.sha256(b"another certificate").digest())
    with pytest.raises(aiohttp.ServerFingerprintMismatch):
        await get(session, https(tls_server), ssl=wrong)
    stats = conn.stats(https(tls_server))
    # The idle connection made with ``ctx`` stayed out of the failed request.
    assert (stats.created, stats.reused, stats.idle, stats.connect_errors) == (
        1,
        0,
        1,
        1,
    )
    await assert_settled(conn, tls_server)


async def test_server_hostname_never_shares(
    tls_server: TestServer, make_session: Build, ca: trustme.CA
) -> None:
    # Same URL, same context; only the name the certificate is checked
    # against differs. A connection verified for a.test must not serve a
    # request that asked for b.test (aiohttp < 3.14 leaves server_hostname
    # out of its ConnectionKey).
    session, conn = make_session()
    ctx = client_context(ca)
    for _ in range(2):
        assert await get(session, https(tls_server), ssl=ctx) == "ok"
        assert (
            await get(session, https(tls_server), ssl=ctx, server_hostname="b.test")
            == "ok"
        )
    stats = conn.stats(https(tls_server))
    assert (stats.created, stats.reused, stats.idle) == (2, 2, 2)
    assert len(local_ports(conn)) == 2
    await assert_settled(conn, tls_server)


async def test_server_hostname_mismatch_does_not_reuse_a_verified_socket(
    tls_server: TestServer, make_session: Build, ca: trustme.CA
) -> None:
    session, conn = make_session()
    ctx = client_context(ca)
    assert await get(session, https(tls_server), ssl=ctx) == "ok"
    # c.test is not in the certificate: a new handshake must fail; reusing
    # the socket verified for a.test would wrongly succeed.
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(session, https(tls_server), ssl=ctx, server_hostname="c.test")
    stats = conn.stats(https(tls_server))
    assert (stats.created, stats.reused, stats.connect_errors) == (1, 0, 1)
    await assert_settled(conn, tls_server)


async def test_host_names_never_share(
    tls_server: TestServer, make_session: Build, ca: trustme.CA
) -> None:
    session, conn = make_session()
    ctx = client_context(ca)
    for _ in range(2):
        for host in ("a.test", "b.test"):
            assert await get(session, https(tls_server, host), ssl=ctx) == "ok"
    for host in ("a.test", "b.test"):
        stats = conn.stats(https(tls_server, host))
        assert (stats.created, stats.reused, stats.idle) == (1, 1, 1)
    assert len(local_ports(conn)) == 2
    await assert_settled(conn, tls_server)


async def test_closing_tls_connections_matches_the_os(
    tls_server: TestServer, make_session: Build, ca: trustme.CA
) -> None:
    session, conn = make_session()
    ctx = client_context(ca)
    for host in ("a.test", "b.test"):
        assert await get(session, https(tls_server, host), ssl=ctx) == "ok"
    assert tls_server.port is not None
    assert client_sockets(tls_server.port) == 2
    await session.close()
    await assert_settled(conn, tls_server)
    assert client_sockets(tls_server.port) == 0


async def test_a_tls_reader_when_the_connector_closes_ends_at_once(
    tls_server: TestServer, make_session: Build, ca: trustme.CA
) -> None:
    # aiohttp's test_ssl_client_shutdown_timeout, whose claim is that closing
    # the connector under an active TLS reader is quick. With TCPConnector its
    # reader then waits until cancelled (CancelledError); ours is failed at
    # once with PoolClosedError: the intended difference of issue 18, item 3.
    session, conn = make_session()
    url = f"https://a.test:{tls_server.port}/trickle"
    resp = await session.get(url, ssl=client_context(ca))

    async def read_loop() -> None:
        while True:
            await resp.content.read(11)

    reader = asyncio.create_task(read_loop())
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await conn.close()
    assert time.monotonic() - started < 0.3
    done, _ = await asyncio.wait([reader], timeout=1)
    assert done == {reader}
    assert isinstance(reader.exception(), PoolClosedError)
    resp.close()
    assert conn.stats().open == 0
    await assert_settled(conn, tls_server)
