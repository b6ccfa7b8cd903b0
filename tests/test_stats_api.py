"""The public accounting API: stats(), connections(), repr, errors."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ClientRequest
from aiohttp.test_utils import TestServer
from yarl import URL

import aioconnpool
from aioconnpool import HostStats, PoolConnector, PoolKey, PoolStats
from aioconnpool._aiohttp.compat import check_aiohttp_version
from aioconnpool._exporting import busiest
from aioconnpool.testing import LoopbackResolver
from tests.conftest import url

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]


async def test_why_does_available_stay_at_4(
    server: TestServer, make_session: Build
) -> None:
    """The README's puzzle, reproduced exactly."""
    session, conn = make_session(limit=25, limit_per_host=5)
    host_a = url(server, "/small", host="a.test")
    host_b = url(server, "/big", host="b.test")
    # Two requests to A whose small bodies arrive with the headers: not read.
    a1 = await session.get(host_a)
    a2 = await session.get(host_a)
    # Three streaming requests to B whose large bodies are not read.
    bs = [await session.get(host_b) for _ in range(3)]

    a = conn.stats(host_a)
    assert (a.acquired, a.idle, a.created, a.reused) == (0, 1, 1, 1)
    assert a.released["eof"] == 2
    b = conn.stats(host_b)
    assert (b.acquired, b.available, b.limit) == (3, 2, 5)
    total = conn.stats()
    assert (total.acquired, total.idle, total.available, total.open) == (3, 1, 22, 4)
    for resp in (a1, a2, *bs):
        resp.release()


async def test_stats_targets(server: TestServer, make_session: Build) -> None:
    session, conn = make_session(limit_per_host=3)
    await (await session.get(url(server, "/small", host="x.test"))).read()
    key = PoolKey("x.test", server.port, False)  # type: ignore[arg-type]
    by_key = conn.stats(key)
    assert by_key == conn.stats(f"http://x.test:{server.port}/any/path?q=1")
    assert by_key == conn.stats(URL(f"http://x.test:{server.port}"))
    assert (by_key.idle, by_key.requests) == (1, 1)
    assert conn.stats().hosts[key] == by_key
    unknown = conn.stats("https://never.test/")
    assert unknown == HostStats(limit=3, available=3)
    assert unknown.released["eof"] == 0


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        (42, TypeError, "42"),
        (("x.test", 80, False), TypeError, "tuple"),
        ("not a url", ValueError, "not a url"),
        ("/relative/path", ValueError, "/relative/path"),
        ("ftp://files.test/", ValueError, "ftp://files.test/"),
        ("http://user:secret@:80/", ValueError, r"'http://\*\*\*@:80/' is not a valid"),
        (
            "http://user:secret@/path",
            ValueError,
            r"'http://\*\*\*@/path' is not a valid",
        ),
        ("http:///path", ValueError, "'http:///path' has no host"),
    ],
)
async def test_stats_rejects_bad_targets(
    make_session: Build, target: Any, error: type[Exception], match: str
) -> None:
    _, conn = make_session()
    with pytest.raises(error, match=match) as info:
        conn.stats(target)
    assert "secret" not in str(info.value)


async def test_pool_key_str_and_defaults() -> None:
    assert str(PoolKey("a.test", 443, True)) == "https://a.test:443"
    assert aioconnpool._keys.to_pool_key("https://a.test") == PoolKey(
        "a.test", 443, True
    )
    assert aioconnpool._keys.to_pool_key("ws://a.test") == PoolKey("a.test", 80, False)
    assert aioconnpool._keys.to_pool_key("http://[::1]:8080/") == PoolKey(
        "::1", 8080, False
    )


async def test_repr_summarises_counts(server: TestServer, make_session: Build) -> None:
    session, conn = make_session(limit=1)
    held = await session.get(url(server, "/big"))
    waiter = asyncio.create_task(session.get(url(server, "/small")))
    await asyncio.sleep(0.05)
    assert repr(conn) == (
        "<PoolConnector [Requests: 1 active, 1 queued | Connections: 1 active, "
        "0 idle, 0 connecting] limit=1 limit_per_host=0>"
    )
    held.release()
    await (await waiter).read()
    assert "Connections: 0 active, 1 idle" in repr(conn)


async def test_stats_are_immutable_snapshots(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session()
    before = conn.stats()
    await (await session.get(url(server, "/small"))).read()
    after = conn.stats()
    assert isinstance(before, PoolStats)
    assert (before.requests, after.requests) == (0, 1)
    with pytest.raises(AttributeError):
        after.acquired = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        after.released["eof"] = 0  # type: ignore[index]
    host_before = conn.stats(url(server, "/"))
    pool_host_before = after.hosts[next(iter(after.hosts))]
    await (await session.get(url(server, "/small"))).read()
    for snapshot in (host_before, pool_host_before):
        assert (snapshot.requests, snapshot.released["eof"]) == (1, 1)
        assert snapshot.hold_time.count == 1  # histograms are copies too
    now = conn.stats(url(server, "/"))
    assert (now.released["eof"], now.hold_time.count) == (2, 2)


async def test_a_host_read_later_shows_the_snapshots_figures(
    server: TestServer, make_session: Build
) -> None:
    """``PoolStats.hosts`` builds each ``HostStats`` when it is first read:
    one read after the pool moved on must still show the snapshot's moment."""
    session, conn = make_session()
    target = url(server, "/small", host="later.test")
    key = PoolKey("later.test", server.port, False)  # type: ignore[arg-type]
    await (await session.get(target)).read()
    snap = conn.stats()
    for _ in range(2):
        await (await session.get(target)).read()
    host = snap.hosts[key]  # first read, after two more requests
    assert (host.requests, host.reused, host.released["eof"]) == (1, 0, 1)
    assert (host.idle, host.hold_time.count, host.wait_time.count) == (1, 1, 1)
    assert snap.hosts[key] is host  # built once
    assert conn.stats(key).requests == 3


async def test_hosts_is_a_read_only_mapping_of_host_stats(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session(limit_per_host=4)
    names = ["m1.test", "m2.test", "m3.test"]
    for i, name in enumerate(names):
        for _ in range(i + 1):
            await (await session.get(url(server, "/small", host=name))).read()
    snap = conn.stats()
    keys = [PoolKey(n, server.port, False) for n in names]  # type: ignore[arg-type]
    assert list(snap.hosts) == keys
    assert list(reversed(snap.hosts)) == keys[::-1]  # type: ignore[arg-type]
    assert len(snap.hosts) == 3
    assert keys[1] in snap.hosts
    assert PoolKey("no.test", 80, False) not in snap.hosts
    assert snap.hosts.get(PoolKey("no.test", 80, False)) is None
    with pytest.raises(KeyError):
        snap.hosts[PoolKey("no.test", 80, False)]
    with pytest.raises(TypeError):
        snap.hosts[keys[0]] = HostStats()  # type: ignore[index]
    as_dict = {k: conn.stats(k) for k in keys}
    assert snap.hosts == as_dict
    # What a MappingProxyType also did: copy() and | give plain dicts.
    assert snap.hosts.copy() == as_dict  # type: ignore[attr-defined]
    assert type(snap.hosts.copy()) is dict  # type: ignore[attr-defined]
    assert snap.hosts | {} == as_dict  # type: ignore[operator]
    assert {} | snap.hosts == as_dict  # type: ignore[operator]
    assert dict(snap.hosts) == as_dict
    assert [h.requests for h in snap.hosts.values()] == [1, 2, 3]
    assert "HostStats(" in repr(snap.hosts)
    assert "m3.test" in repr(snap)
    assert snap.to_dict()["hosts"][str(keys[2])]["requests"] == 3


async def test_ranking_the_busiest_hosts_builds_none_of_them(
    server: TestServer, make_session: Build
) -> None:
    """The exporters rank every host each scrape; over a snapshot that must
    read request counts only, and rank exactly as over built ``HostStats``."""
    session, conn = make_session(limit_per_host=4)
    for i, n in enumerate([2, 5, 1, 5, 3]):
        for _ in range(n):
            host = f"r{i}.test"
            await (await session.get(url(server, "/small", host=host))).read()
    snap = conn.stats()
    top = busiest(snap.hosts, 3)
    assert not snap.hosts._built  # type: ignore[attr-defined]
    assert [k.host for k in top] == ["r1.test", "r3.test", "r4.test"]
    assert top == busiest(dict(snap.hosts), 3)
    everyone = busiest(snap.hosts, 10)
    assert everyone == busiest(dict(snap.hosts), 10)
    assert len(everyone) == 5


async def test_credentials_never_reach_stats_or_repr(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session()
    target = f"http://user:secret@cred.test:{server.port}/small"
    await (await session.get(target)).read()
    await (
        await session.get(
            url(server, "/small", host="cred.test"),
            headers={"Authorization": "Bearer secret"},
        )
    ).read()
    text = " ".join(
        [
            repr(conn),
            repr(conn.stats()),
            repr(conn.connections()),
            repr(conn.stats(target)),
        ]
    )
    assert "cred.test" in text
    assert "secret" not in text
    assert "user" not in text


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"limit": -1}, ValueError, "limit must be >= 0, got -1"),
        ({"limit": "10"}, TypeError, "limit must be an int, not str: '10'"),
        ({"limit": True}, TypeError, "limit must be an int"),
        ({"limit_per_host": -2}, ValueError, "limit_per_host must be >= 0, got -2"),
        ({"limit_per_host": 1.5}, TypeError, "limit_per_host must be an int"),
        ({"keepalive_timeout": -1}, ValueError, "keepalive_timeout"),
        ({"keepalive_timeout": "15"}, TypeError, "keepalive_timeout"),
        ({"keepalive_timeout": float("nan")}, ValueError, "keepalive_timeout"),
        ({"stats_history": -1}, ValueError, "stats_history"),
    ],
)
async def test_bad_options_are_named(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        PoolConnector(**kwargs)


async def test_tcpconnector_keywords_pass_through() -> None:
    conn = PoolConnector(
        limit=7,
        limit_per_host=3,
        keepalive_timeout=30,
        use_dns_cache=False,
        ttl_dns_cache=5,
        enable_cleanup_closed=False,
        happy_eyeballs_delay=None,
    )
    try:
        assert (conn.limit, conn.limit_per_host) == (7, 3)
        assert conn.use_dns_cache is False
        assert isinstance(conn, aiohttp.TCPConnector)
        assert conn.stats().limit == 7
    finally:
        await conn.close()


async def test_unlimited_connector_reports_none() -> None:
    conn = PoolConnector(limit=0, fd_budget=None)
    try:
        stats = conn.stats()
        assert (stats.limit, stats.limit_per_host, stats.available) == (
            None,
            None,
            None,
        )
        assert conn.stats("http://a.test/").available is None
    finally:
        await conn.close()


async def test_the_socket_budget_bounds_an_unlimited_connector() -> None:
    conn = PoolConnector(limit=0, fd_budget=50)
    try:
        stats = conn.stats()
        assert (stats.limit, stats.fd_budget, stats.available) == (None, 50, 50)
        assert conn.stats("http://a.test/").available == 50
    finally:
        await conn.close()


@pytest.mark.parametrize("version", ["3.10.11", "3.15.0", "4.0.0a1", "2.3.10"])
def test_unsupported_aiohttp_is_refused(version: str) -> None:
    with pytest.raises(ImportError, match=r"supports aiohttp 3\.11 to 3\.14"):
        check_aiohttp_version(version)


@pytest.mark.parametrize("version", ["3.11.0", "3.12.15", "3.14.5", "3.14.0rc1"])
def test_supported_aiohttp_is_accepted(version: str) -> None:
    assert check_aiohttp_version(version)[0] == 3


async def test_stats_after_close_are_a_final_report(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session()
    await (await session.get(url(server, "/small"))).read()
    await session.close()
    stats = conn.stats()
    assert stats.is_closed
    assert (stats.requests, stats.created, stats.open) == (1, 1, 0)
    assert stats.closed["connector_closed"] == 1


async def test_drained_hosts_keep_their_figures_in_untracked_keys(
    server: TestServer, make_session: Build
) -> None:
    # A drained host's ConnectionKey (a NamedTuple, which CPython's collector
    # tracks for its whole life) is kept as a plain tuple, which it untracks:
    # 10,000 remembered hosts would otherwise be 10,000 more objects for
    # every full collection. Its figures must read as before, by every way in.
    session, conn = make_session(force_close=True)  # every host drains at once
    hosts = [f"h{i}.test" for i in range(3)]
    for host in hosts:
        for _ in range(2):
            await (await session.get(url(server, "/small", host=host))).read()
    core = conn._core
    assert not core._keys  # all drained
    gc.collect()
    kept = list(core._history)
    assert len(kept) == 3
    assert all(type(key) is tuple for key in kept)
    assert not any(gc.is_tracked(key) for key in kept)
    for host in hosts:
        figures = conn.stats(url(server, "/", host=host))
        assert (figures.requests, figures.created, figures.open) == (2, 2, 0)
        assert figures.closed["force_close"] == 2
    stats = conn.stats()
    assert stats.requests == 6
    assert sorted(key.host for key in stats.hosts) == hosts
    # A host coming back picks its counts up again.
    await (await session.get(url(server, "/small", host="h0.test"))).read()
    assert conn.stats(url(server, "/", host="h0.test")).requests == 3
    assert conn.stats().requests == 7


class _Captured(Exception):
    pass


async def request_built_by_aiohttp(target: str) -> ClientRequest:
    """A ``ClientRequest`` for ``target``, as ``ClientSession`` builds it:
    its constructor's arguments change from one aiohttp to the next (4.0
    makes twenty of them required)."""
    captured: list[ClientRequest] = []

    class Capture(aiohttp.BaseConnector):
        async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
            captured.append(req)
            raise _Captured

    async with aiohttp.ClientSession(connector=Capture()) as session:
        with pytest.raises(_Captured):
            await session.get(target)
    return captured[0]


async def test_connect_accepts_traces_none(server: TestServer) -> None:
    """aiohttp's connectors accept ``traces=None`` (its own tests call them
    so); the new, queued and reused paths all do here."""
    conn = PoolConnector(limit=1, resolver=LoopbackResolver())
    timeout = aiohttp.ClientTimeout()
    req = await request_built_by_aiohttp(url(server, "/small"))

    def request() -> ClientRequest:
        return req

    try:
        first = await conn.connect(request(), None, timeout)
        queued = asyncio.create_task(conn.connect(request(), None, timeout))
        await asyncio.sleep(0.01)
        assert conn.stats().waiting == 1
        first.release()
        second = await queued
        second.release()
        third = await conn.connect(request(), None, timeout)
        third.release()
        stats = conn.stats()
        assert (stats.requests, stats.created, stats.reused) == (3, 1, 2)
        assert stats.acquired == 0
    finally:
        await conn.close()
