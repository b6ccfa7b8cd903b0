"""OpenTelemetry metrics read through the SDK's in-memory reader."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
    NumberDataPoint,
)

from aioconnpool import (
    CLOSE_REASONS,
    Dequeued,
    PoolConnector,
    PoolEvent,
    PoolKey,
    Queued,
)
from aioconnpool.otel import instrument
from tests.conftest import Recorder, settle, url

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]
Point = NumberDataPoint | HistogramDataPoint


@pytest.fixture
def reader() -> Iterator[tuple[InMemoryMetricReader, MeterProvider]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield reader, provider
    provider.shutdown()


def points(data: MetricsData | None, name: str) -> list[Any]:
    assert data is not None
    return [
        point
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def by_attrs(found: list[Any], *drop: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    return {
        tuple(sorted((k, v) for k, v in p.attributes.items() if k not in drop)): p
        for p in found
    }


def server_attrs(key: PoolKey, **extra: Any) -> tuple[tuple[str, Any], ...]:
    attrs = {
        "server.address": key.host,
        "server.port": key.port,
        "url.scheme": "https" if key.ssl else "http",
        **extra,
    }
    return tuple(sorted(attrs.items()))


async def get(session: aiohttp.ClientSession, target: str) -> None:
    async with session.get(target) as resp:
        await resp.read()


@pytest.fixture
async def instrumented(
    reader: tuple[InMemoryMetricReader, MeterProvider], make_session: Build
) -> AsyncIterator[Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]]:
    handles = []

    def build(
        max_hosts: int = 50, **kwargs: Any
    ) -> tuple[aiohttp.ClientSession, PoolConnector]:
        session, conn = make_session(**kwargs)
        handles.append(instrument(conn, reader[1], max_hosts=max_hosts))
        return session, conn

    yield build
    for handle in handles:
        handle.close()


async def test_open_connections_follow_the_semantic_conventions(
    server: TestServer,
    instrumented: Build,
    reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    session, conn = instrumented()
    for _ in range(2):
        await get(session, url(server, "/small", host="a.test"))
    held = await session.get(url(server, "/big", host="c.test"))
    await settle()
    data = reader[0].get_metrics_data()
    stats = conn.stats()
    open_ = by_attrs(points(data, "http.client.open_connections"))
    assert len(open_) == 2 * len(stats.hosts)
    for key, hs in stats.hosts.items():
        assert open_[
            server_attrs(key, **{"http.connection.state": "active"})
        ].value == (hs.acquired)
        assert open_[server_attrs(key, **{"http.connection.state": "idle"})].value == (
            hs.idle
        )
        assert by_attrs(points(data, "aioconnpool.waiting"))[
            server_attrs(key)
        ].value == (hs.waiting)
        connecting = by_attrs(points(data, "aioconnpool.connecting"))
        assert connecting[server_attrs(key)].value == hs.connecting
    port = server.port or 0
    c = PoolKey("c.test", port, False)
    a = PoolKey("a.test", port, False)
    assert open_[server_attrs(c, **{"http.connection.state": "active"})].value == 1
    assert open_[server_attrs(a, **{"http.connection.state": "idle"})].value == 1
    held.release()


async def test_connection_duration_and_closes_come_from_events(
    server: TestServer,
    instrumented: Build,
    reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    session, conn = instrumented()
    for _ in range(3):
        await get(session, url(server, "/close", host="a.test"))
    await get(session, url(server, "/small", host="b.test"))
    await settle()
    await conn.close()  # b's idle connection: closed with the connector
    data = reader[0].get_metrics_data()
    stats = conn.stats()
    durations = by_attrs(points(data, "http.client.connection.duration"))
    closes = by_attrs(points(data, "aioconnpool.connection.closed"))
    for key, hs in stats.hosts.items():
        hist: HistogramDataPoint = durations[server_attrs(key)]
        assert hist.count == hs.lifetime.count == sum(hs.closed.values())
        assert hist.sum == pytest.approx(hs.lifetime.sum)
        for why in CLOSE_REASONS:
            point = closes.get(server_attrs(key, **{"aioconnpool.close.reason": why}))
            assert (point.value if point else 0) == hs.closed[why]
    a = PoolKey("a.test", server.port or 0, False)
    assert durations[server_attrs(a)].count == 3
    released = by_attrs(points(data, "aioconnpool.released"))
    eof = released[server_attrs(a, **{"aioconnpool.release.how": "eof"})]
    assert eof.value == stats.hosts[a].released["eof"] == 3


async def test_queue_duration_counts_the_requests_that_waited(
    server: TestServer,
    recorder: Recorder,
    instrumented: Build,
    reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    session, conn = instrumented(limit=1)
    dequeued: list[PoolEvent] = []
    queued = asyncio.Event()

    def listen(event: PoolEvent) -> None:
        if isinstance(event, Dequeued):
            dequeued.append(event)
        elif isinstance(event, Queued):
            queued.set()

    conn.add_listener(listen)
    first = asyncio.create_task(get(session, url(server, "/hang", host="a.test")))
    second = asyncio.create_task(get(session, url(server, "/small", host="a.test")))
    await queued.wait()  # the second waits for the first's connection
    recorder.gate.set()
    await asyncio.gather(first, second)
    data = reader[0].get_metrics_data()
    a = PoolKey("a.test", server.port or 0, False)
    waits = by_attrs(points(data, "aioconnpool.queue.duration"))
    point = waits[server_attrs(a, **{"aioconnpool.queue.outcome": "served"})]
    assert len(dequeued) == point.count == 1
    assert isinstance(dequeued[0], Dequeued)
    assert point.sum == pytest.approx(dequeued[0].waited)


async def test_the_cap_sums_the_rest_under_overflow(
    server: TestServer,
    instrumented: Build,
    reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    session, conn = instrumented(max_hosts=3)
    names = [f"h{i}.test" for i in range(20)]
    for i, name in enumerate(names):
        for _ in range(1 + (i < 3)):  # h0..h2 are the busiest
            await get(session, url(server, "/small", host=name))
    data = reader[0].get_metrics_data()
    stats = conn.stats()
    open_ = points(data, "http.client.open_connections")
    hosts = {p.attributes.get("server.address") for p in open_}
    assert hosts == {"h0.test", "h1.test", "h2.test", None}
    top = [
        stats.hosts[PoolKey(f"h{i}.test", server.port or 0, False)] for i in range(3)
    ]
    for state, field in (("active", "acquired"), ("idle", "idle")):
        in_state = [p for p in open_ if p.attributes["http.connection.state"] == state]
        assert sum(p.value for p in in_state) == getattr(stats, field)
        (overflow,) = [p for p in in_state if p.attributes.get("otel.metric.overflow")]
        ranked = sum(getattr(hs, field) for hs in top)
        assert overflow.value == getattr(stats, field) - ranked
    assert stats.idle == 20  # the overflow is not trivially zero
    # Event-recorded instruments: at most max_hosts hosts have attributes.
    released = points(data, "aioconnpool.released")
    named = {p.attributes.get("server.address") for p in released}
    assert len(named - {None}) == 3
    assert sum(p.value for p in released) == sum(stats.released.values())


async def test_collection_from_another_thread(
    server: TestServer,
    instrumented: Build,
    reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    """A periodic reader collects in its own thread."""
    session, _ = instrumented()
    await get(session, url(server, "/small", host="a.test"))
    data = await asyncio.to_thread(reader[0].get_metrics_data)
    a = PoolKey("a.test", server.port or 0, False)
    open_ = by_attrs(points(data, "http.client.open_connections"))
    assert open_[server_attrs(a, **{"http.connection.state": "idle"})].value == 1


async def test_close_stops_recording(
    server: TestServer,
    make_session: Build,
    reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    session, conn = make_session()
    handle = instrument(conn, reader[1])
    await get(session, url(server, "/small", host="a.test"))
    handle.close()
    handle.close()  # idempotent
    await get(session, url(server, "/small", host="a.test"))
    data = reader[0].get_metrics_data()
    a = PoolKey("a.test", server.port or 0, False)
    released = by_attrs(points(data, "aioconnpool.released"))
    assert released[server_attrs(a, **{"aioconnpool.release.how": "eof"})].value == 1
    assert conn.stats(a).released["eof"] == 2
    assert points(data, "http.client.open_connections") == []


async def test_bad_arguments_are_refused(
    reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    with pytest.raises(TypeError, match="PoolConnector"):
        instrument(object(), reader[1])  # type: ignore[arg-type]
    conn = PoolConnector()
    try:
        with pytest.raises(ValueError, match="max_hosts"):
            instrument(conn, reader[1], max_hosts=-1)
        with pytest.raises(TypeError, match="max_hosts"):
            instrument(conn, reader[1], max_hosts=2.0)  # type: ignore[arg-type]
    finally:
        await conn.close()


def test_missing_opentelemetry_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "aioconnpool.otel")
    with pytest.raises(ImportError, match=r"aioconnpool\[otel\]"):
        importlib.import_module("aioconnpool.otel")
