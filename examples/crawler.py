"""A polite crawler over thousands of hosts, and what to watch while it runs.

    python examples/crawler.py --hosts 2000

crawls a site spread over ``--hosts`` virtual hosts (``h0.test``,
``h1.test``...) served by the embedded loopback server: each host has a few
pages, and each front page links to other hosts. The crawler follows links
breadth first with many workers; the connector, not the workers, decides how
many connections each host gets, and reports what it did.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from _loopback import run
from yarl import URL

from aioconnpool import (
    Acquired,
    ConnectFailed,
    ConnectStarted,
    PoolConnector,
    PoolEvent,
    PoolKey,
    PoolStats,
    Queued,
    Released,
)
from aioconnpool.testing import LoopbackResolver

LINK = re.compile(r'href="([^"]+)"')


# --8<-- [start:connector]
def make_connector() -> PoolConnector:
    return PoolConnector(
        limit=50,  # sockets in use at once, all hosts together
        limit_per_host=2,  # politeness: at most 2 at once per host
        max_idle_per_host=1,  # keep one warm socket per host...
        max_hosts=1000,  # ...for the 1,000 hosts used most recently
        acquire_timeout=60.0,  # a request queued longer fails, never hangs
        resolver=LoopbackResolver(suffix=".test"),  # loopback only
    )


# --8<-- [end:connector]


# --8<-- [start:watch]
@dataclass
class Watch:
    """Slots in use (connecting or acquired) per host, from the pool's events."""

    in_use: Counter[PoolKey] = field(default_factory=Counter)
    peak_per_host: int = 0
    peak_total: int = 0
    queued: int = 0

    def __call__(self, event: PoolEvent) -> None:
        if isinstance(event, ConnectStarted | Acquired):
            if isinstance(event, Acquired) and not event.reused:
                return  # its slot was taken at ConnectStarted
            self.in_use[event.key] += 1
            self.peak_per_host = max(self.peak_per_host, self.in_use[event.key])
            self.peak_total = max(self.peak_total, self.in_use.total())
        elif isinstance(event, ConnectFailed | Released):
            self.in_use[event.key] -= 1
        elif isinstance(event, Queued):
            self.queued += 1


# --8<-- [end:watch]


@dataclass
class Report:
    pages: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    hosts: set[str] = field(default_factory=set)


# --8<-- [start:crawl]
async def crawl(
    session: aiohttp.ClientSession, start: URL, *, workers: int = 100
) -> Report:
    """Breadth first from ``start``, one host at a time per worker: its front
    page, then its other pages together (the pool caps them per host)."""
    report = Report()
    seen = {start}
    frontier: asyncio.Queue[URL] = asyncio.Queue()  # front pages of hosts
    frontier.put_nowait(start)

    async def fetch(url: URL) -> list[URL]:
        """The page's links not seen yet."""
        try:
            async with session.get(url) as resp:
                body = await resp.text()  # read to the end: socket kept alive
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            report.errors[type(exc).__name__] += 1
            return []
        report.pages += 1
        report.hosts.add(url.host or "")
        links = [url.join(URL(href)) for href in LINK.findall(body)]
        new = [u for u in links if (u.host or "").endswith(".test") and u not in seen]
        seen.update(new)
        return new

    async def visit(front: URL) -> None:
        links = await fetch(front)
        same_host = [u for u in links if u.host == front.host]
        for other in links:
            if other.host != front.host:
                frontier.put_nowait(other)
        await asyncio.gather(*(fetch(u) for u in same_host))

    async def worker() -> None:
        while True:
            front = await frontier.get()
            try:
                await visit(front)
            finally:
                frontier.task_done()

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    await frontier.join()  # every host visited, no link left to follow
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return report


# --8<-- [end:crawl]


@dataclass(frozen=True)
class Crawled:
    report: Report
    stats: PoolStats
    watch: Watch


async def main(port: int, hosts: int = 2000) -> Crawled:
    # --8<-- [start:main]
    connector = make_connector()
    watch = Watch()
    connector.add_listener(watch)
    start = URL(f"http://h0.test:{port}/site/0?hosts={hosts}")
    async with aiohttp.ClientSession(connector=connector) as session:
        report = await crawl(session, start)
        stats = connector.stats()  # before the session closes the connector

    print(f"pages: {report.pages} from {len(report.hosts)} hosts")
    print(f"errors: {dict(report.errors) or 'none'}")
    print(f"requests: {stats.requests}, sockets opened: {stats.created}")
    print(
        f"peak in use: {watch.peak_total} in all (limit {stats.limit}), "
        f"{watch.peak_per_host} per host (limit {stats.limit_per_host})"
    )
    print(
        f"queued: {watch.queued} requests, wait p50 <= "
        f"{stats.wait_time.quantile(0.5)} s, p95 <= {stats.wait_time.quantile(0.95)} s"
    )
    kept = sum(1 for h in stats.hosts.values() if h.idle)
    print(f"idle now: {stats.idle} sockets on {kept} hosts")
    print(f"closed: { {k: v for k, v in stats.closed.items() if v} }")
    # --8<-- [end:main]
    return Crawled(report, stats, watch)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=2000)
    args = parser.parse_args()
    run(lambda port: main(port, args.hosts))
