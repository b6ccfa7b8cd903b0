"""Events, duration histograms and leak detection, against a loopback server."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from aioconnpool import (
    Acquired,
    Closed,
    ConnectEnded,
    ConnectFailed,
    ConnectStarted,
    Dequeued,
    Histogram,
    LeakSuspected,
    PoolConnector,
    PoolEvent,
    PoolKey,
    Queued,
    Rejected,
    Released,
)
from aioconnpool._histogram import BOUNDS
from tests.conftest import Recorder, settle, url

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]


def kinds(events: list[PoolEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


async def get(session: aiohttp.ClientSession, target: str) -> str:
    async with session.get(target) as resp:
        return await resp.text()


async def test_a_request_life_in_events(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session()
    events: list[PoolEvent] = []
    conn.add_listener(events.append)
    target = url(server, "/small", host="a.test")
    await get(session, target)
    await get(session, target)
    await get(session, url(server, "/close", host="a.test"))
    await settle()
    assert kinds(events) == [
        "ConnectStarted",
        "ConnectEnded",
        "Acquired",
        "Released",
        "Acquired",
        "Released",
        "Acquired",
        "Released",
        "Closed",
    ]
    key = PoolKey("a.test", server.port or 0, False)
    assert {e.key for e in events} == {key}
    first, reused = events[2], events[4]
    assert isinstance(first, Acquired)
    assert (first.reused, first.idle_for) == (False, None)
    assert isinstance(reused, Acquired)
    assert reused.reused
    assert reused.idle_for is not None
    assert reused.idle_for >= 0
    released = [e for e in events if isinstance(e, Released)]
    assert [e.how for e in released] == ["eof", "eof", "eof"]
    closed = events[-1]
    assert isinstance(closed, Closed)
    assert (closed.reason, closed.requests) == ("server", 3)
    assert closed.lifetime >= 0
    ended = events[1]
    assert isinstance(ended, ConnectEnded)
    assert ended.duration >= 0
    times = [e.at for e in events]
    assert times == sorted(times)


async def test_queue_events_and_a_failed_connect(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    session, conn = make_session(limit_per_host=1)
    events: list[PoolEvent] = []
    conn.add_listener(events.append)
    hang = asyncio.create_task(get(session, url(server, "/hang", host="a.test")))
    second = asyncio.create_task(get(session, url(server, "/small", host="a.test")))
    for _ in range(200):
        if conn.stats().waiting == 1:
            break
        await asyncio.sleep(0.01)
    queued = [e for e in events if isinstance(e, Queued)]
    assert len(queued) == 1
    assert queued[0].waiting == 1
    recorder.gate.set()
    assert list(await asyncio.gather(hang, second)) == ["late", "ok"]
    dequeued = [e for e in events if isinstance(e, Dequeued)]
    assert len(dequeued) == 1
    assert dequeued[0].outcome == "served"
    assert dequeued[0].waited > 0
    # A connect that fails: nothing listens on port 1.
    with pytest.raises(aiohttp.ClientConnectionError):
        await session.get("http://127.0.0.1:1/")
    failed = [e for e in events if isinstance(e, ConnectFailed)]
    assert [e.key for e in failed] == [PoolKey("127.0.0.1", 1, False)]
    started = [e for e in events if isinstance(e, ConnectStarted)]
    assert len(started) == 2


async def test_cancelled_timed_out_and_rejected_requests(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    session, conn = make_session(limit_per_host=1, acquire_timeout=0.05)
    events: list[PoolEvent] = []
    conn.add_listener(events.append)
    hang = asyncio.create_task(get(session, url(server, "/hang", host="a.test")))
    waiter = asyncio.create_task(get(session, url(server, "/small", host="a.test")))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    with pytest.raises(aiohttp.ClientConnectionError):  # PoolTimeoutError
        await get(session, url(server, "/small", host="a.test"))
    recorder.gate.set()
    await hang
    outcomes = [e.outcome for e in events if isinstance(e, Dequeued)]
    assert outcomes == ["cancelled", "timed_out"]
    _, fail_fast = make_session(limit_per_host=1, block=False)
    rejected: list[PoolEvent] = []
    fail_fast.add_listener(rejected.append)
    fast_session = aiohttp.ClientSession(connector=fail_fast, connector_owner=False)
    async with fast_session:
        recorder.gate.clear()
        held = asyncio.create_task(
            get(fast_session, url(server, "/hang", host="b.test"))
        )
        await asyncio.sleep(0.02)
        with pytest.raises(aiohttp.ClientConnectionError):  # PoolFullError
            await get(fast_session, url(server, "/small", host="b.test"))
        recorder.gate.set()
        await held
    assert [type(e) for e in rejected].count(Rejected) == 1


async def test_a_raising_listener_is_logged_and_never_breaks_the_pool(
    server: TestServer, make_session: Build, caplog: pytest.LogCaptureFixture
) -> None:
    session, conn = make_session()
    seen: list[PoolEvent] = []

    def broken(event: PoolEvent) -> None:
        raise RuntimeError("listener bug")

    conn.add_listener(broken)
    conn.add_listener(seen.append)  # later listeners still get every event
    assert await get(session, url(server, "/small", host="a.test")) == "ok"
    assert kinds(seen) == ["ConnectStarted", "ConnectEnded", "Acquired", "Released"]
    failures = [r for r in caplog.records if "listener" in r.getMessage()]
    assert len(failures) == 4
    assert all(r.levelno == logging.ERROR and r.exc_info for r in failures)
    stats = conn.stats()
    assert (stats.acquired, stats.idle, stats.requests) == (0, 1, 1)


async def test_listeners_see_a_consistent_pool(
    server: TestServer, make_session: Build
) -> None:
    """Events are delivered after the core call returned: stats() inside a
    listener already shows the event's effect."""
    session, conn = make_session()
    seen: list[tuple[str, int, int]] = []

    def check(event: PoolEvent) -> None:
        stats = conn.stats()
        seen.append((type(event).__name__, stats.acquired, stats.idle))

    conn.add_listener(check)
    await get(session, url(server, "/small", host="a.test"))
    assert seen[-1] == ("Released", 0, 1)
    assert ("Acquired", 1, 0) in seen


async def test_add_and_remove_listeners(make_session: Build) -> None:
    _, conn = make_session()
    with pytest.raises(TypeError, match="listener must be callable"):
        conn.add_listener("print")  # type: ignore[arg-type]
    events: list[PoolEvent] = []
    conn.add_listener(events.append)
    conn.remove_listener(events.append)
    with pytest.raises(ValueError, match="is not a listener"):
        conn.remove_listener(events.append)
    assert conn._core._events is None  # nobody listens: nothing is built


# --------------------------------------------------------------- histograms


async def test_durations_are_in_stats(server: TestServer, make_session: Build) -> None:
    session, conn = make_session()
    target = url(server, "/small", host="a.test")
    for _ in range(3):
        await get(session, target)
    await get(session, url(server, "/close", host="a.test"))
    await settle()
    host = conn.stats(target)
    assert host.wait_time.count == 4  # every request, 0 s when served at once
    assert host.connect_time.count == 1
    assert host.hold_time.count == 4 == sum(host.released.values())
    assert host.lifetime.count == 1 == sum(host.closed.values())
    assert host.hold_time.sum > 0
    total = conn.stats()
    assert total.hold_time == host.hold_time  # one host: totals are its figures
    assert host.wait_time.bounds == BOUNDS
    assert sum(host.wait_time.counts) == host.wait_time.count


def test_histogram_quantiles_and_mean() -> None:
    counts = [0] * len(BOUNDS)
    counts[0] = 90  # <= 1 ms
    counts[5] = 9  # (50, 100] ms
    counts[-1] = 1  # beyond 30 min
    h = Histogram(BOUNDS, tuple(counts), 100, 100.0)
    assert h.quantile(0.5) == 0.001
    assert h.quantile(0.95) == 0.1
    assert h.quantile(1.0) == float("inf")
    assert h.mean == 1.0
    assert Histogram().quantile(0.5) is None
    assert Histogram().mean is None
    with pytest.raises(ValueError, match=r"1\.5"):
        h.quantile(1.5)


# ------------------------------------------------------------ leak detection


async def test_a_held_connection_is_reported_with_its_origin(
    server: TestServer, make_session: Build, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioconnpool")
    session, conn = make_session(leak_threshold=0.05)
    events: list[PoolEvent] = []
    conn.add_listener(events.append)
    resp = await session.get(url(server, "/big", host="a.test"))  # never read
    assert conn.leaks() == []
    await asyncio.sleep(0.15)
    (leak,) = conn.leaks()
    assert leak.key == PoolKey("a.test", server.port or 0, False)
    assert leak.held_for >= 0.05
    assert leak.task is not None
    assert leak.stack is not None
    assert "test_a_held_connection_is_reported_with_its_origin" in leak.stack
    # The plumbing (aiohttp, asyncio, the test runner) is left out.
    assert os.path.dirname(aiohttp.__file__) not in leak.stack
    assert os.path.dirname(asyncio.__file__) not in leak.stack
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once, not on every check
    assert "leak_threshold=0.05" in warnings[0].getMessage()
    assert "test_a_held_connection" in warnings[0].getMessage()
    assert [type(e) for e in events].count(LeakSuspected) == 1
    resp.close()
    assert conn.leaks() == []
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert any("suspected of leaking was released" in r.getMessage() for r in infos)


async def test_no_leak_reported_for_a_connection_released_in_time(
    server: TestServer, make_session: Build, caplog: pytest.LogCaptureFixture
) -> None:
    session, conn = make_session(leak_threshold=0.05)
    await get(session, url(server, "/small", host="a.test"))
    await asyncio.sleep(0.1)
    assert conn.leaks() == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_leaks_needs_the_option(make_session: Build) -> None:
    _, conn = make_session()
    with pytest.raises(RuntimeError, match="leak_threshold"):
        conn.leaks()
    with pytest.raises(ValueError, match="leak_threshold must be > 0"):
        PoolConnector(leak_threshold=0)
