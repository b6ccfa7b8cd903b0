"""The Prometheus collector, scraped from a real registry after real traffic."""

from __future__ import annotations

import asyncio
import gc
import importlib
import itertools
import math
import subprocess
import sys
from collections.abc import Callable, Iterable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aioconnpool import (
    CLOSE_REASONS,
    RELEASE_HOWS,
    HostStats,
    PoolConnector,
    PoolKey,
    PoolStats,
)
from aioconnpool.prometheus import OTHER, PoolCollector, register, unregister
from tests.conftest import settle, url

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]
Labels = tuple[tuple[str, str], ...]
Scrape = dict[tuple[str, Labels], float]

COUNTERS = (
    "requests",
    "created",
    "reused",
    "connect_errors",
    "rejected",
    "wait_timeouts",
)
GAUGES = ("acquired", "idle", "connecting", "waiting")
DURATIONS = ("wait_time", "connect_time", "hold_time", "lifetime")


def scrape(registry: CollectorRegistry) -> Scrape:
    """Every sample of the exposition text, parsed back."""
    text = generate_latest(registry).decode()
    return parse(text)


def parse(text: str) -> Scrape:
    found: Scrape = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted(s.labels.items()))
            assert (s.name, labels) not in found, f"duplicate sample {s}"
            found[(s.name, labels)] = s.value
    return found


def host_labels(key: PoolKey | None, **extra: str) -> Labels:
    if key is None:
        base = {"host": OTHER, "port": "", "scheme": ""}
    else:
        scheme = "https" if key.ssl else "http"
        base = {"host": key.host, "port": str(key.port), "scheme": scheme}
    return tuple(sorted({**base, **extra}.items()))


def expected_samples(
    labels: Labels, hs: HostStats | PoolStats, prefix: str = "aioconnpool_"
) -> Scrape:
    """What one label set must show for figures ``hs``: counters and
    histograms (``prefix="aioconnpool_pool_"``: the pool's totals)."""
    want: Scrape = {}
    for c in COUNTERS:
        want[(f"{prefix}{c}_total", labels)] = getattr(hs, c)
    for how in RELEASE_HOWS:
        lab = tuple(sorted((*labels, ("how", how))))
        want[(f"{prefix}released_total", lab)] = hs.released[how]
    for why in CLOSE_REASONS:
        lab = tuple(sorted((*labels, ("reason", why))))
        want[(f"{prefix}closed_total", lab)] = hs.closed[why]
    for d in DURATIONS:
        hist = getattr(hs, d)
        name = f"{prefix}{d}_seconds"
        seen = 0
        for bound, n in zip(hist.bounds, hist.counts, strict=True):
            seen += n
            le = "+Inf" if math.isinf(bound) else repr(float(bound))
            want[(f"{name}_bucket", tuple(sorted((*labels, ("le", le)))))] = seen
        want[(f"{name}_count", labels)] = hist.count
        want[(f"{name}_sum", labels)] = hist.sum
    return want


def assert_matches(got: Scrape, want: Scrape) -> None:
    for sample, value in want.items():
        assert sample in got, f"missing {sample}"
        assert got[sample] == pytest.approx(value), sample


def counter_samples(got: Scrape) -> dict[tuple[str, Labels], float]:
    """The samples that must never go down: counters and histogram parts."""
    return {
        k: v
        for k, v in got.items()
        if k[0].endswith(("_total", "_bucket", "_count", "_sum"))
    }


def sum_by_name(got: Scrape, name: str, **match: str) -> float:
    return sum(
        v
        for (n, labels), v in got.items()
        if n == name and all((k, m) in labels for k, m in match.items())
    )


async def get(session: aiohttp.ClientSession, target: str) -> None:
    async with session.get(target) as resp:
        await resp.read()


async def test_exposition_after_a_crawl_equals_stats(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session(limit=10, limit_per_host=3)
    registry = CollectorRegistry()
    registry.register(PoolCollector(conn))
    for _ in range(3):
        await get(session, url(server, "/small", host="a.test"))
    await get(session, url(server, "/close", host="b.test"))
    await get(session, url(server, "/status/500", host="b.test"))
    held = await session.get(url(server, "/big", host="c.test"))  # acquired
    await settle()

    got = scrape(registry)
    stats = conn.stats()
    assert len(stats.hosts) == 3
    for key, hs in stats.hosts.items():
        labels = host_labels(key)
        for g in GAUGES:
            assert got[(f"aioconnpool_{g}", labels)] == getattr(hs, g), (key, g)
        assert got[("aioconnpool_limit", labels)] == hs.limit
        assert_matches(got, expected_samples(labels, hs))
    for g in GAUGES:
        assert got[(f"aioconnpool_pool_{g}", ())] == getattr(stats, g)
    assert got[("aioconnpool_pool_limit", ())] == stats.limit
    assert got[("aioconnpool_pool_fd_budget", ())] == stats.fd_budget
    assert_matches(got, expected_samples((), stats, "aioconnpool_pool_"))
    # Few hosts: nothing is summed under _other.
    assert not [k for k in got if ("host", OTHER) in k[1]]
    # The figures are not all zero: the crawl is visible.
    a = PoolKey("a.test", server.port or 0, False)
    c = PoolKey("c.test", server.port or 0, False)
    assert got[("aioconnpool_requests_total", host_labels(a))] == 3
    assert got[("aioconnpool_acquired", host_labels(c))] == 1
    held.release()


async def test_a_scrape_from_another_thread_takes_its_snapshot_on_the_loop(
    server: TestServer, make_session: Build
) -> None:
    """What ``start_http_server`` does: the registry is read in its thread."""
    session, conn = make_session()
    registry = CollectorRegistry()
    registry.register(PoolCollector(conn))
    await get(session, url(server, "/small", host="a.test"))
    text = (await asyncio.to_thread(generate_latest, registry)).decode()
    key = PoolKey("a.test", server.port or 0, False)
    assert_matches(parse(text), expected_samples(host_labels(key), conn.stats()))


async def crawl(
    session: aiohttp.ClientSession, server: TestServer, hosts: Iterable[str]
) -> None:
    sem = asyncio.Semaphore(50)

    async def one(host: str) -> None:
        async with sem:
            await get(session, url(server, "/small", host=host))

    await asyncio.gather(*(one(h) for h in hosts))


@pytest.mark.slow
async def test_cardinality_cap_with_10k_hosts(
    server: TestServer, make_session: Build
) -> None:
    # force_close: 10k sockets must not stay open; stats_history: some hosts
    # are forgotten by the pool itself and must still be counted.
    session, conn = make_session(limit=50, force_close=True, stats_history=2000)
    registry = CollectorRegistry()
    registry.register(PoolCollector(conn, max_hosts=5))
    busy = [f"busy{i}.test" for i in range(7)]
    await crawl(session, server, [f"h{i}.test" for i in range(10_000)])
    # Then busy0 gets 8 requests, busy1 7, ... busy6 2: ranks are known (and
    # these are the hosts the pool drained last, so it remembers them).
    await crawl(session, server, [h for i, h in enumerate(busy) for _ in range(8 - i)])

    got = scrape(registry)
    stats = conn.stats()
    assert stats.forgotten_hosts > 0
    hosts_seen = {
        dict(labels)["host"]
        for name, labels in got
        if name == "aioconnpool_requests_total"
    }
    assert hosts_seen == {*busy[:5], OTHER}
    # The busiest five have exactly their own figures.
    for name in busy[:5]:
        key = PoolKey(name, server.port or 0, False)
        assert_matches(got, expected_samples(host_labels(key), stats.hosts[key]))
    # Everything else, forgotten hosts included, adds up under _other.
    for c in COUNTERS:
        assert sum_by_name(got, f"aioconnpool_{c}_total") == getattr(stats, c)
    for how in RELEASE_HOWS:
        total = sum_by_name(got, "aioconnpool_released_total", how=how)
        assert total == stats.released[how]
    for why in CLOSE_REASONS:
        total = sum_by_name(got, "aioconnpool_closed_total", reason=why)
        assert total == stats.closed[why]
    for d in DURATIONS:
        hist = getattr(stats, d)
        assert sum_by_name(got, f"aioconnpool_{d}_seconds_count") == hist.count
    assert stats.requests == sum(range(2, 9)) + 10_000
    # The exposition stays small: 6 label sets, whatever the host count.
    assert len(got) < 1000


async def test_counters_never_go_down_when_hosts_change_rank(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session()
    registry = CollectorRegistry()
    registry.register(PoolCollector(conn, max_hosts=1))
    a = PoolKey("a.test", server.port or 0, False)
    b = PoolKey("b.test", server.port or 0, False)

    async def hit(host: str, n: int) -> None:
        for _ in range(n):
            await get(session, url(server, "/small", host=host))

    await hit("a.test", 3)
    await hit("b.test", 1)
    scrapes = [scrape(registry)]
    # a leads from the start: its series is exactly its stats.
    assert scrapes[0][("aioconnpool_requests_total", host_labels(a))] == 3
    assert scrapes[0][("aioconnpool_requests_total", host_labels(None))] == 1
    await hit("b.test", 4)  # b overtakes a
    scrapes.append(scrape(registry))
    assert ("aioconnpool_requests_total", host_labels(a)) not in scrapes[1]
    # b counts from when it rose: the 4 new requests; its first stays in _other.
    assert scrapes[1][("aioconnpool_requests_total", host_labels(b))] == 4
    assert scrapes[1][("aioconnpool_requests_total", host_labels(None))] == 1
    await hit("a.test", 4)  # a leads again, and resumes where it was
    scrapes.append(scrape(registry))
    assert scrapes[2][("aioconnpool_requests_total", host_labels(a))] == 7
    assert scrapes[2][("aioconnpool_requests_total", host_labels(None))] == 1

    # Never down, also for a series that was absent in between (a's).
    for before, after in itertools.combinations(scrapes, 2):
        for sample, value in counter_samples(before).items():
            if sample in after:
                assert after[sample] >= value, sample
    # Each scrape's increments are counted once: the label sets grew by
    # what the pool's totals grew (b's 4 are remembered, not exported now).
    stats = conn.stats()
    assert stats.requests == 12
    got = scrapes[-1]
    assert got[("aioconnpool_pool_requests_total", ())] == 12
    assert sum_by_name(got, "aioconnpool_requests_total") == 12 - 4
    for sample, value in expected_samples((), stats, "aioconnpool_pool_").items():
        assert got[sample] == pytest.approx(value)


async def test_several_connectors_in_one_collector(
    server: TestServer, make_session: Build
) -> None:
    session_a, conn_a = make_session()
    session_b, conn_b = make_session()
    registry = CollectorRegistry()
    collector = register({"api": conn_a, "crawler": conn_b}, registry)
    await get(session_a, url(server, "/small", host="x.test"))
    for _ in range(2):
        await get(session_b, url(server, "/small", host="x.test"))
    got = scrape(registry)
    key = PoolKey("x.test", server.port or 0, False)
    api = host_labels(key, connector="api")
    crawler = host_labels(key, connector="crawler")
    assert_matches(got, expected_samples(api, conn_a.stats(key)))
    assert_matches(got, expected_samples(crawler, conn_b.stats(key)))
    assert got[("aioconnpool_pool_idle", (("connector", "crawler"),))] == 1
    # A second collector with the same names is refused, not interleaved.
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(PoolCollector(conn_a))
    unregister(collector, registry)
    assert scrape(registry) == {}


async def test_a_connector_that_is_gone_yields_nothing(
    server: TestServer, make_session: Build
) -> None:
    registry = CollectorRegistry()
    conn = PoolConnector()
    registry.register(PoolCollector(conn))
    assert scrape(registry)[("aioconnpool_pool_acquired", ())] == 0
    await conn.close()
    del conn
    gc.collect()
    assert scrape(registry) == {}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_hosts": -1}, ValueError),
        ({"max_hosts": 1.5}, TypeError),
        ({"max_hosts": True}, TypeError),
        ({"prefix": ""}, ValueError),
    ],
)
async def test_bad_options_are_refused(kwargs: dict[str, object], error: type) -> None:
    conn = PoolConnector()
    try:
        with pytest.raises(error, match=next(iter(kwargs))):
            PoolCollector(conn, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="PoolConnector"):
            PoolCollector({"a": object()})  # type: ignore[dict-item]
    finally:
        await conn.close()


def test_missing_prometheus_client_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "aioconnpool.prometheus")
    with pytest.raises(ImportError, match=r"aioconnpool\[prometheus\]"):
        importlib.import_module("aioconnpool.prometheus")


def test_the_core_imports_without_the_exporters_libraries() -> None:
    code = (
        "import sys\n"
        "for name in ('prometheus_client', 'opentelemetry'):\n"
        "    sys.modules[name] = None\n"
        "import aioconnpool\n"
        "print(aioconnpool.PoolConnector.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "PoolConnector"
