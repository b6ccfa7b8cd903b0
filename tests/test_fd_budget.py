"""The socket budget (``fd_budget``): the pool never makes the process run out
of file descriptors because of idle keep-alive sockets."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from aioconnpool import PoolConnector, PoolTimeoutError
from tests.bench_scripts import load_bench_script
from tests.conftest import settle, url

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]


async def fetch(session: aiohttp.ClientSession, target: str) -> None:
    async with session.get(target) as resp:
        await resp.read()


async def test_auto_is_half_the_soft_limit(make_session: Build) -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    _session, conn = make_session()
    expected = None if soft == resource.RLIM_INFINITY else soft // 2
    assert conn.stats().fd_budget == expected
    _session, off = make_session(fd_budget=None)
    assert off.stats().fd_budget is None
    _session, fixed = make_session(fd_budget=7)
    assert fixed.stats().fd_budget == 7


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, "fd_budget must be >= 1, got 0"),
        (-5, ValueError, "fd_budget must be >= 1, got -5"),
        ("lots", TypeError, "fd_budget must be 'auto', None or an int, not str"),
        (2.5, TypeError, "fd_budget must be 'auto', None or an int, not float: 2.5"),
        (True, TypeError, "not bool: True"),
    ],
)
async def test_bad_budgets_are_refused_by_name(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        PoolConnector(fd_budget=value)  # type: ignore[arg-type]


async def test_a_new_socket_closes_the_connection_idle_longest(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session(fd_budget=2)
    a, b, c = (url(server, "/small", host=h) for h in ("a.test", "b.test", "c.test"))
    await fetch(session, a)
    await fetch(session, b)
    assert (conn.stats().idle, conn.stats().closed["fd_budget"]) == (2, 0)
    # A third host needs a third socket: a's, idle longest, makes room.
    await fetch(session, c)
    await settle()
    stats = conn.stats()
    assert stats.closed["fd_budget"] == 1
    assert conn.stats(a).closed["fd_budget"] == 1
    assert (conn.stats(b).idle, conn.stats(c).idle) == (1, 1)
    assert stats.open <= 2
    # Reusing an idle socket opens none: nothing more is closed.
    await fetch(session, b)
    assert conn.stats().closed["fd_budget"] == 1
    assert conn.stats(b).reused == 1


async def test_with_only_acquired_sockets_a_request_waits(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session(fd_budget=1, acquire_timeout=0.2)
    held = await session.get(url(server, "/big", host="a.test"))
    waiting = asyncio.create_task(fetch(session, url(server, "/small", host="b.test")))
    await asyncio.sleep(0.05)
    stats = conn.stats()
    assert (stats.acquired, stats.waiting, stats.available) == (1, 1, 0)
    with pytest.raises(PoolTimeoutError, match=r"fd_budget=1: the sockets"):
        await waiting
    # Once the held one is released, the next request gets its socket.
    await held.read()
    await fetch(session, url(server, "/small", host="b.test"))
    assert conn.stats(url(server, "/", host="b.test")).created == 1


def _crawl_under_ulimit(client: str) -> dict[str, Any]:
    fds = load_bench_script("fds")
    server_mod = load_bench_script("harness.server")
    with server_mod.ServerProcess(idle_timeout=fds.SERVER_IDLE) as server:
        spec = fds.Spec(client, 2_000, 4_000, 1_024, server.port)
        result: dict[str, Any] = fds.run_child(spec)
    return result


@pytest.mark.slow
def test_4000_requests_over_2000_hosts_under_ulimit_1024() -> None:
    """The issue's scenario, in a child process whose soft RLIMIT_NOFILE is
    1024, with default settings."""
    ours = _crawl_under_ulimit("aioconnpool")
    assert (ours["ok"], ours["failed"], ours["errors"]) == (4_000, 0, {})
    assert ours["peak_fds"] < 1_024
    assert ours["pool"]["fd_budget"] == 512
    assert ours["pool"]["closed_fd_budget"] > 0
    assert ours["pool"]["requests"] == 4_000
    # The control: the same crawl with aiohttp's connector runs out of
    # descriptors, so the scenario does press on the limit.
    theirs = _crawl_under_ulimit("aiohttp")
    assert theirs["failed"] > 0
    assert any("EMFILE" in kind for kind in theirs["errors"]), theirs["errors"]
