"""Proxy credentials: never shared across, never shown.

A real proxy.py (a subprocess on 127.0.0.1, basic auth) forwards plain HTTP
to a loopback server and tunnels HTTPS (CONNECT) to a loopback TLS server. A
connection opened under one set of proxy credentials must never serve a
request made with others; no credential may appear in stats, connections,
reprs or logs; and CONNECT tunnels, whose first protocol the pool never
holds, must leave the accounting exact (``open`` equals the sockets this
process holds to the proxy).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp.test_utils import TestServer

from aioconnpool import PoolConnector
from aioconnpool._aiohttp.compat import KEY_HAS_PROXY_AUTH
from tests.faulty import FaultServer, client_sockets, settle_pool, violations
from tests.test_tls import ca, client_context, server_cert, tls_server

__all__ = ["ca", "server_cert", "tls_server"]  # fixtures shared with test_tls

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]

USER = "alice"
PASSWORD = "s3cr3t-Pa55w0rd"
WRONG = ("mallory", "n0t-the-Pa55w0rd")


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


WRONG_PIN = aiohttp.Fingerprint(hashlib.sha256(b"another certificate").digest())

SECRETS = (
    PASSWORD,
    WRONG[1],
    basic(USER, PASSWORD),
    basic(*WRONG),
    f"{USER}:{PASSWORD}",
    f"{WRONG[0]}:{WRONG[1]}",
)


@pytest.fixture(scope="module")
def proxy_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """proxy.py on 127.0.0.1 (an ephemeral port), requiring USER:PASSWORD."""
    workdir = tmp_path_factory.mktemp("proxy")
    port_file = workdir / "port"
    args = [
        sys.executable,
        "-m",
        "proxy",
        "--hostname",
        "127.0.0.1",
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--basic-auth",
        f"{USER}:{PASSWORD}",
        "--num-acceptors",
        "1",
        "--num-workers",
        "1",
        "--log-level",
        "ERROR",
    ]
    env = {**os.environ, "HOME": str(workdir)}  # proxy.py keeps a data dir there
    with (workdir / "log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
    try:
        yield _wait_for_port(port_file, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_for_port(port_file: Path, proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy.py exited with {proc.returncode}")
        text = port_file.read_text() if port_file.exists() else ""
        if text.strip():
            return int(text.split()[0])
        time.sleep(0.05)
    raise RuntimeError("proxy.py did not start")


@pytest.fixture
async def tls_origin(tls_server: TestServer) -> AsyncIterator[TestServer]:
    """The TLS server behind the proxy. At teardown (after the sessions have
    closed) give proxy.py a moment to close the origin side of its tunnels,
    so the server does not close under half-open connections it never
    tracked (seen as an intermittent "unclosed transport" on the server)."""
    yield tls_server
    await asyncio.sleep(0.2)


@pytest.fixture
async def origin() -> AsyncIterator[FaultServer]:
    async with FaultServer() as srv:
        yield srv


def via(port: int, creds: tuple[str, str] | None = (USER, PASSWORD)) -> str:
    if creds is None:
        return f"http://127.0.0.1:{port}"
    return f"http://{creds[0]}:{creds[1]}@127.0.0.1:{port}"


async def status(session: aiohttp.ClientSession, target: str, **kw: Any) -> int:
    async with session.get(target, **kw) as resp:
        await resp.read()
        return resp.status


def figures(conn: PoolConnector) -> tuple[int, int]:
    stats = conn.stats()
    return stats.created, stats.reused


async def assert_settled(conn: PoolConnector, proxy_port: int) -> None:
    assert await settle_pool(conn, (proxy_port,)) == []


async def test_plain_http_never_shares_across_credentials(
    proxy_port: int, origin: FaultServer, make_session: Build
) -> None:
    session, conn = make_session()
    target = origin.url()
    assert await status(session, target, proxy=via(proxy_port)) == 200
    assert await status(session, target, proxy=via(proxy_port)) == 200
    assert figures(conn) == (1, 1)  # same credentials: one connection, reused
    # Other credentials: a new connection (the proxy refuses, and closes it).
    assert await status(session, target, proxy=via(proxy_port, WRONG)) == 407
    assert figures(conn) == (2, 1)
    # No credentials at all: not the authenticated connection either.
    assert await status(session, target, proxy=via(proxy_port, None)) == 407
    assert figures(conn) == (3, 1)
    # The first connection is still there for its own credentials.
    assert await status(session, target, proxy=via(proxy_port)) == 200
    assert figures(conn) == (3, 2)
    assert origin.requests == {"ok": 3}
    await assert_settled(conn, proxy_port)
    assert conn.stats().open == client_sockets(proxy_port) == 1


async def test_connect_tunnel_never_shares_across_credentials(
    proxy_port: int, tls_origin: TestServer, make_session: Build, ca: trustme.CA
) -> None:
    session, conn = make_session()
    target = f"https://127.0.0.1:{tls_origin.port}/small"
    ctx = client_context(ca)
    for _ in range(2):
        assert await status(session, target, ssl=ctx, proxy=via(proxy_port)) == 200
    assert figures(conn) == (1, 1)
    # Reusing the tunnel would succeed; a CONNECT of its own is refused.
    with pytest.raises(aiohttp.ClientHttpProxyError) as info:
        await status(session, target, ssl=ctx, proxy=via(proxy_port, WRONG))
    assert info.value.status == 407
    # The same credentials sent as a header: another key in aiohttp 3.x,
    # whose ConnectionKey holds proxy_auth apart from the headers' hash, so
    # another tunnel; the same key on aiohttp 4.0, which turns proxy_auth
    # into that very header (compat.KEY_HAS_PROXY_AUTH), so the same tunnel.
    header = {"Proxy-Authorization": f"Basic {basic(USER, PASSWORD)}"}
    no_creds = via(proxy_port, None)
    assert (
        await status(session, target, ssl=ctx, proxy=no_creds, proxy_headers=header)
        == 200
    )
    assert await status(session, target, ssl=ctx, proxy=via(proxy_port)) == 200
    tunnels = 2 if KEY_HAS_PROXY_AUTH else 1
    stats = conn.stats()
    assert (stats.created, stats.reused, stats.connect_errors) == (
        tunnels,
        4 - tunnels,
        1,
    )
    await assert_settled(conn, proxy_port)
    assert conn.stats().open == client_sockets(proxy_port) == tunnels


async def test_failed_tunnels_keep_the_accounting_exact(
    proxy_port: int, tls_origin: TestServer, make_session: Build, ca: trustme.CA
) -> None:
    # Every way a CONNECT can fail, with a live tunnel in the pool meanwhile:
    # refused credentials (407), a target nobody listens on (the proxy
    # answers 502), a certificate refused inside the tunnel.
    session, conn = make_session()
    ctx = client_context(ca)
    good = f"https://127.0.0.1:{tls_origin.port}/small"
    assert await status(session, good, ssl=ctx, proxy=via(proxy_port)) == 200
    closed_port = FaultServer(on_accept="never")
    dead = f"https://127.0.0.1:{closed_port.port}/"
    await closed_port.close()  # the port is now free: nobody listens
    failures: list[tuple[str, dict[str, Any]]] = [
        (good, {"proxy": via(proxy_port, WRONG)}),
        (dead, {"proxy": via(proxy_port)}),
        # A handshake that succeeds, then a certificate that is not the one
        # pinned. (Not a failing handshake: proxy.py keeps the origin side of
        # such a tunnel open, and the in-process origin server then leaks it.)
        (good, {"proxy": via(proxy_port), "ssl": WRONG_PIN}),
    ]
    for target, kw in failures * 2:
        with pytest.raises(aiohttp.ClientError):
            await status(session, target, **{"ssl": ctx, **kw})
        assert violations(conn.stats()) == []
        await assert_settled(conn, proxy_port)
    stats = conn.stats()
    assert (stats.acquired, stats.idle, stats.created, stats.connect_errors) == (
        0,
        1,
        1,
        6,
    )
    assert await status(session, good, ssl=ctx, proxy=via(proxy_port)) == 200
    assert figures(conn) == (1, 1)
    await session.close()
    await assert_settled(conn, proxy_port)
    assert client_sockets(proxy_port) == 0


async def test_no_credential_in_stats_reprs_or_logs(
    proxy_port: int,
    origin: FaultServer,
    *,
    tls_origin: TestServer,
    make_session: Build,
    ca: trustme.CA,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    session, conn = make_session()
    ctx = client_context(ca)
    tls = f"https://127.0.0.1:{tls_origin.port}/small"
    header = {"Proxy-Authorization": f"Basic {basic(USER, PASSWORD)}"}
    shown: list[str] = []

    def look() -> None:
        stats = conn.stats()
        shown.extend([repr(stats), str(stats), repr(conn), str(conn)])
        shown.extend(repr(host) for host in stats.hosts.values())
        shown.extend(str(key) for key in stats.hosts)
        shown.append(repr(conn.connections()))
        shown.append(repr(conn.stats(origin.url())))

    for creds in ((USER, PASSWORD), WRONG):
        await status(session, origin.url(), proxy=via(proxy_port, creds))
        look()
        held = await session.get(origin.url("trickle"), proxy=via(proxy_port, creds))
        look()  # one acquired, one idle: both in connections()
        held.close()
        with contextlib.suppress(aiohttp.ClientHttpProxyError):  # WRONG: 407
            await status(session, tls, ssl=ctx, proxy=via(proxy_port, creds))
        look()
    await status(
        session, tls, ssl=ctx, proxy=via(proxy_port, None), proxy_headers=header
    )
    look()
    await session.close()
    look()
    logged = [record.getMessage() for record in caplog.records]
    logged += [caplog.text]
    assert any(str(proxy_port) in text for text in shown + logged) or shown
    for secret in SECRETS:
        assert [text for text in shown if secret in text] == []
        assert [text for text in logged if secret in text] == []
