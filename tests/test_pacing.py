"""Per-host pacing against a real loopback server that records when each
request starts (only lower bounds on gaps are asserted: the machine is
noisy, so nothing checks that a request came *soon*)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aioconnpool import (
    HostPaused,
    HostResumed,
    PacingDeadlineError,
    PacingDequeued,
    PacingQueued,
    PoolClosedError,
    PoolConnector,
    PoolEvent,
    PoolKey,
    PoolTimeoutError,
)
from tests.conftest import Recorder, settle, url

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]

# The server's clock and the loop's are both time.monotonic() here; a gap
# may look a hair shorter than it was across the two sides of the socket.
TOLERANCE = 0.01


def starts_by_host(recorder: Recorder) -> dict[str, list[float]]:
    starts: dict[str, list[float]] = defaultdict(list)

    def on_request(request: web.Request) -> None:
        starts[request.host.split(":")[0]].append(time.monotonic())

    recorder.on_request = on_request
    return starts


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def key_of(server: TestServer, host: str) -> PoolKey:
    assert server.port is not None
    return PoolKey(host, server.port, False)


async def fetch(session: aiohttp.ClientSession, target: str) -> str:
    async with session.get(target) as resp:
        return await resp.text()


async def test_requests_to_one_host_start_at_least_the_delay_apart(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    starts = starts_by_host(recorder)
    session, conn = make_session(delay_per_host=0.2)
    target = url(server, "/small", host="paced.test")
    await asyncio.gather(*(fetch(session, target) for _ in range(11)))
    assert len(starts["paced.test"]) == 11
    assert min(gaps(starts["paced.test"])) >= 0.2 - TOLERANCE
    stats = conn.stats()
    assert stats.paced == 10  # the first went at once
    assert stats.pacing_waiting == 0
    assert stats.hosts[key_of(server, "paced.test")].delay == 0.2


async def test_other_hosts_are_not_slowed_by_a_paced_one(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    # limit=1: a paced host waiting out its delay holds no slot, so the
    # unpaced host's 11 requests all run while the paced one waits.
    starts = starts_by_host(recorder)
    session, conn = make_session(limit=1, host_delays={"slow.test": 0.3})
    slow = [
        asyncio.create_task(fetch(session, url(server, "/small", host="slow.test")))
        for _ in range(3)
    ]
    await asyncio.sleep(0)
    fast = [fetch(session, url(server, "/small", host="fast.test")) for _ in range(11)]
    await asyncio.gather(*fast)
    assert len(starts["fast.test"]) == 11
    # Lower bound only: the slow host cannot have started its third yet.
    assert len(starts["slow.test"]) < 3 or starts["slow.test"][2] > max(
        starts["fast.test"]
    )
    await asyncio.gather(*slow)
    assert min(gaps(starts["slow.test"])) >= 0.3 - TOLERANCE
    fast_stats = conn.stats(url(server, "/", host="fast.test"))
    assert (fast_stats.delay, fast_stats.pacing_waiting) == (0.0, 0)


async def test_two_paced_hosts_are_paced_independently(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    starts = starts_by_host(recorder)
    session, _conn = make_session(delay_per_host=0.2)
    a = [fetch(session, url(server, "/small", host="a.test")) for _ in range(6)]
    b = [fetch(session, url(server, "/small", host="b.test")) for _ in range(6)]
    began = time.monotonic()
    await asyncio.gather(*a, *b)
    for host in ("a.test", "b.test"):
        assert len(starts[host]) == 6
        assert min(gaps(starts[host])) >= 0.2 - TOLERANCE
    # Both hosts' first requests went at once: neither waited for the other.
    assert starts["a.test"][0] - began < 0.2
    assert starts["b.test"][0] - began < 0.2


async def test_paced_requests_keep_their_arrival_order(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    session, _conn = make_session(delay_per_host=0.05, limit_per_host=4)
    tasks = [
        asyncio.create_task(fetch(session, url(server, f"/small?id={i}", "o.test")))
        for i in range(8)
    ]
    await asyncio.gather(*tasks)
    assert recorder.order == [str(i) for i in range(8)]


async def test_jitter_spreads_gaps_over_the_promised_range(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    starts = starts_by_host(recorder)
    session, _conn = make_session(delay_per_host=0.1, delay_jitter=0.5)
    target = url(server, "/small", host="j.test")
    await asyncio.gather(*(fetch(session, target) for _ in range(12)))
    observed = gaps(starts["j.test"])
    assert min(observed) >= 0.05 - TOLERANCE  # delay * (1 - jitter)
    assert max(observed) - min(observed) > 0.005  # not all the same gap


async def test_a_start_after_the_deadline_fails_at_once(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session(delay_per_host=2.0)
    target = url(server, "/small", host="d.test")
    await fetch(session, target)  # the next start is 2 s away
    began = time.monotonic()
    with pytest.raises(PacingDeadlineError) as info:
        await session.get(target, timeout=aiohttp.ClientTimeout(total=0.5))
    assert time.monotonic() - began < 0.5  # at once, not at the deadline
    assert isinstance(info.value, PoolTimeoutError)
    assert info.value.key == key_of(server, "d.test")
    assert "d.test" in str(info.value)
    assert "deadline" in str(info.value)
    assert conn.stats().pacing_late == 1
    # The refused request planned nothing: a later one with time to wait goes
    # at the host's next start.
    assert await fetch(session, target) == "ok"


async def test_stats_show_delay_next_start_and_waiting(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    session, conn = make_session(
        delay_per_host=0.0, host_delays={"s.test": 0.5, "other.test": 1.0}
    )
    target = url(server, "/small", host="s.test")
    await fetch(session, target)
    tasks = [asyncio.create_task(fetch(session, target)) for _ in range(2)]
    await asyncio.sleep(0.05)
    key = key_of(server, "s.test")
    host = conn.stats(target)
    assert host.delay == 0.5
    assert host.pacing_waiting == 2
    assert host.next_start is not None
    assert host.next_start > asyncio.get_running_loop().time()
    snap = conn.stats()
    assert snap.pacing_waiting == 2
    assert snap.hosts[key].pacing_waiting == 2
    assert snap.waiting == 0  # waiting on pacing is not waiting for a slot
    assert dict(snap.host_delays) == {"s.test": 0.5, "other.test": 1.0}
    as_dict = snap.to_dict()
    assert as_dict["hosts"][str(key)]["pacing_waiting"] == 2
    assert as_dict["pacing_waiting"] == 2
    await asyncio.gather(*tasks)
    assert conn.stats(target).pacing_waiting == 0


async def test_events_tell_the_pacing(server: TestServer, make_session: Build) -> None:
    session, conn = make_session(delay_per_host=0.1)
    events: list[PoolEvent] = []
    conn.add_listener(events.append)
    target = url(server, "/small", host="e.test")
    await asyncio.gather(*(fetch(session, target) for _ in range(3)))
    queued = [e for e in events if isinstance(e, PacingQueued)]
    released = [e for e in events if isinstance(e, PacingDequeued)]
    assert len(queued) == 2
    assert [e.outcome for e in released] == ["released", "released"]
    assert all(e.waited >= 0.1 - TOLERANCE for e in released)


async def test_pause_host_holds_queued_and_future_requests(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    starts = starts_by_host(recorder)
    session, conn = make_session()  # no delay configured: pausing enables it
    events: list[PoolEvent] = []
    conn.add_listener(events.append)
    target = url(server, "/small", host="p.test")
    await fetch(session, target)
    conn.pause_host(target, 0.4, reason="maintenance")
    paused_at = time.monotonic()
    host = conn.stats(target)
    assert host.pause_reason == "maintenance"
    assert host.paused_until is not None
    others = [fetch(session, url(server, "/small", host="q.test")) for _ in range(3)]
    await asyncio.gather(*others)
    assert len(starts["p.test"]) == 1  # the other host went ahead
    await asyncio.gather(*(fetch(session, target) for _ in range(3)))
    assert min(starts["p.test"][1:]) - paused_at >= 0.4 - TOLERANCE
    assert [type(e) for e in events if isinstance(e, (HostPaused, HostResumed))] == [
        HostPaused,
        HostResumed,
    ]
    assert conn.stats().pauses == 1
    assert conn.stats(target).paused_until is None


async def test_a_pause_holds_requests_already_queued_in_the_pool(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    # h.test is not paced: its requests go straight into the pool, where
    # three queue behind the one in flight (limit_per_host=1). A 429 pausing
    # the host must hold those too, not only requests arriving later.
    starts = starts_by_host(recorder)
    session, conn = make_session(limit=1, limit_per_host=1)
    target = url(server, "/small", host="h.test")
    in_flight = asyncio.create_task(fetch(session, url(server, "/hang", host="h.test")))
    await settle()
    queued = [asyncio.create_task(fetch(session, target)) for _ in range(3)]
    await settle()
    assert conn.stats(target).waiting == 3
    conn.pause_host(target, 0.5, reason="429")
    paused_at = time.monotonic()
    assert conn.stats(target).limit == 0  # held
    recorder.gate.set()
    assert await in_flight == "late"
    # Its connection went idle, not to a held request; the pool's one slot
    # serves another host meanwhile.
    assert await fetch(session, url(server, "/small", host="other.test")) == "ok"
    host = conn.stats(target)
    assert (host.idle, host.acquired, host.waiting) == (1, 0, 3)
    assert starts["h.test"] == []
    assert await asyncio.gather(*queued) == ["ok"] * 3
    assert min(starts["h.test"]) - paused_at >= 0.5 - TOLERANCE
    host = conn.stats(target)
    assert (host.limit, host.waiting, host.reused) == (1, 0, 3)


async def test_resuming_lets_held_requests_go_at_once(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    session, conn = make_session(limit_per_host=1)
    target = url(server, "/small", host="r.test")
    in_flight = asyncio.create_task(fetch(session, url(server, "/hang", host="r.test")))
    await settle()
    queued = [asyncio.create_task(fetch(session, target)) for _ in range(2)]
    await settle()
    conn.pause_host(target, 60.0, reason="maintenance")
    recorder.gate.set()
    assert await in_flight == "late"
    assert conn.stats(target).waiting == 2
    conn.resume_host(target)
    assert conn.stats(target).limit == 1
    results = await asyncio.wait_for(asyncio.gather(*queued), 5)
    assert results == ["ok", "ok"]
    assert conn.stats(target).pause_reason is None


async def test_a_pause_past_the_deadline_fails_the_queued_request(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session(delay_per_host=0.3)
    target = url(server, "/small", host="x.test")
    await fetch(session, target)
    waiting = asyncio.create_task(
        session.get(target, timeout=aiohttp.ClientTimeout(total=2))
    )
    await asyncio.sleep(0.05)
    assert conn.stats(target).pacing_waiting == 1
    conn.pause_host(target, 5.0, reason="503")
    with pytest.raises(PacingDeadlineError, match="paused"):
        await waiting
    assert conn.stats(target).pacing_waiting == 0


async def test_closing_the_connector_fails_requests_waiting_on_pacing(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session(delay_per_host=5.0)
    target = url(server, "/small", host="c.test")
    await fetch(session, target)
    waiting = asyncio.create_task(session.get(target))
    await asyncio.sleep(0.05)
    await conn.close()
    with pytest.raises(PoolClosedError):
        await waiting


async def test_a_cancelled_waiter_leaves_its_place(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    starts = starts_by_host(recorder)
    session, conn = make_session(delay_per_host=0.2)
    target = url(server, "/small", host="k.test")
    await fetch(session, target)
    first = asyncio.create_task(fetch(session, target))
    second = asyncio.create_task(fetch(session, target))
    await asyncio.sleep(0.05)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == "ok"
    assert len(starts["k.test"]) == 2
    assert min(gaps(starts["k.test"])) >= 0.2 - TOLERANCE
    assert conn.stats(target).pacing_waiting == 0


async def test_a_paced_request_waiting_for_a_slot_keeps_the_gap(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    # limit_per_host=1 and a slow first response: the second request waits
    # for the slot past its planned start; the third still starts a full
    # delay after the second really started.
    starts = starts_by_host(recorder)
    session, _conn = make_session(limit_per_host=1, delay_per_host=0.1)
    recorder.gate.clear()
    target = url(server, "/small", host="g.test")
    hung = asyncio.create_task(fetch(session, url(server, "/hang", host="g.test")))
    tasks = [asyncio.create_task(fetch(session, target)) for _ in range(2)]
    await asyncio.sleep(0.3)
    recorder.gate.set()
    await asyncio.gather(hung, *tasks)
    assert len(starts["g.test"]) == 2
    assert min(gaps(starts["g.test"])) >= 0.1 - TOLERANCE


NON_NEGATIVE = "must be a finite number of seconds >= 0"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"delay_per_host": -1}, ValueError, f"delay_per_host {NON_NEGATIVE}, got -1"),
        (
            {"delay_per_host": "1"},
            TypeError,
            "delay_per_host must be a number of seconds, not str: '1'",
        ),
        (
            {"delay_jitter": 1.5},
            ValueError,
            "delay_jitter must be within [0, 1], got 1.5",
        ),
        ({"delay_jitter": -0.1}, ValueError, "within [0, 1], got -0.1"),
        (
            {"host_delays": {"a.test": -2}},
            ValueError,
            f"host_delays['a.test'] {NON_NEGATIVE}, got -2",
        ),
        (
            {"host_delays": {"a.test/path": 1}},
            ValueError,
            "host_delays key 'a.test/path' has the path",
        ),
        ({"host_delays": {"*.test": 1}}, ValueError, "host_delays key '*.test'"),
        ({"host_delays": [("a.test", 1)]}, TypeError, "host_delays must be a mapping"),
        (
            {"host_delays": {"a.test": None}},
            TypeError,
            "host_delays['a.test'] must be a number of seconds, not NoneType",
        ),
    ],
)
def test_bad_pacing_options_are_refused_naming_the_value(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        PoolConnector(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


async def test_pause_host_refuses_bad_input(make_session: Build) -> None:
    _session, conn = make_session()
    with pytest.raises(
        ValueError, match="seconds must be a finite number of seconds >= 0, got -1"
    ):
        conn.pause_host("http://a.test", -1)
    with pytest.raises(ValueError, match="ftp"):
        conn.pause_host("ftp://a.test", 1)


async def test_no_pacing_means_no_gate(make_session: Build) -> None:
    _session, conn = make_session(limit=10)
    assert "connect" not in vars(conn)  # the class's own connect(), untouched
    _session, paced = make_session(delay_per_host=0.1)
    assert "connect" in vars(paced)


async def test_prometheus_shows_pacing_and_pauses(
    server: TestServer, make_session: Build
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from aioconnpool.prometheus import PoolCollector

    session, conn = make_session(delay_per_host=5.0)
    target = url(server, "/small", host="m.test")
    await fetch(session, target)
    waiting = [asyncio.create_task(fetch(session, target)) for _ in range(2)]
    await asyncio.sleep(0.05)
    conn.pause_host(url(server, "/", host="n.test"), 30, reason="429")
    registry = CollectorRegistry()
    registry.register(PoolCollector(conn))
    text = (await asyncio.to_thread(generate_latest, registry)).decode()
    port = server.port
    assert "aioconnpool_pool_pacing_waiting 2.0" in text
    assert (
        f'aioconnpool_pacing_waiting{{host="m.test",port="{port}",scheme="http"}} 2.0'
        in text
    )
    assert (
        f'aioconnpool_delay_seconds{{host="m.test",port="{port}",scheme="http"}} 5.0'
        in text
    )
    assert (
        f'aioconnpool_paused{{host="n.test",port="{port}",reason="429",'
        'scheme="http"} 1.0' in text
    )
    assert "aioconnpool_pool_pauses_total 1.0" in text
    assert "aioconnpool_pool_paced_total 2.0" in text
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_opentelemetry_shows_pacing(
    server: TestServer, make_session: Build
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from aioconnpool.otel import instrument

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    session, conn = make_session(delay_per_host=0.1)
    handle = instrument(conn, meter_provider=provider)
    try:
        target = url(server, "/small", host="o.test")
        await asyncio.gather(*(fetch(session, target) for _ in range(3)))
        conn.pause_host(target, 10, reason="503")
        data = reader.get_metrics_data()
        assert data is not None
        found: dict[str, list[Any]] = {
            metric.name: list(metric.data.data_points)
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        }
        durations = found["aioconnpool.pacing.duration"]
        assert sum(p.count for p in durations) == 2
        assert {p.attributes["aioconnpool.pacing.outcome"] for p in durations} == {
            "released"
        }
        pauses = found["aioconnpool.pauses"]
        assert [
            (p.value, p.attributes["aioconnpool.pause.reason"]) for p in pauses
        ] == [(1, "503")]
        assert sum(p.value for p in found["aioconnpool.pacing.waiting"]) == 0
    finally:
        handle.close()
        provider.shutdown()
