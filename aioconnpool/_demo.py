"""``aioconnpool demo``: crawl an embedded loopback server, then show the pool.

An aiohttp server on 127.0.0.1 (an ephemeral port) plays several virtual hosts,
told apart by the ``Host`` header:

* ``fast.test``  -- a small body at once;
* ``slow.test``  -- a small body after a short sleep, so requests queue;
* ``close.test`` -- answers with ``Connection: close``;
* ``big.test``   -- streams about 1 MiB; some of these responses are released
  without being read;
* ``error.test`` -- answers 500.

A resolver maps every ``*.test`` name to 127.0.0.1, so no traffic leaves the
machine. The crawl runs all requests at once with ``asyncio.gather`` through a
:class:`~aioconnpool.PoolConnector`, then prints what ``stats()`` and
``connections()`` saw. Every figure printed is measured on this run.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

import aiohttp
from aiohttp import web

from ._connector import PoolConnector
from ._stats import ConnectionInfo, HostStats, PoolStats
from .testing import LoopbackResolver

__all__ = ["HOSTS", "DemoOptions", "LoopbackResolver", "make_app", "run_demo"]

HOSTS: tuple[str, ...] = (
    "fast.test",
    "slow.test",
    "close.test",
    "big.test",
    "error.test",
)
DOMAIN = ".test"
LOOPBACK = "127.0.0.1"

LIMIT = 20
LIMIT_PER_HOST = 4
SLOW_DELAY = 0.05  # seconds slow.test waits before answering
BIG_CHUNK = b"x" * 65536
BIG_CHUNKS = 16  # 1 MiB
UNREAD_SHARE = 1 / 3  # of big.test responses, released without reading


def make_app() -> web.Application:
    """One catch-all route that answers as the virtual host named by ``Host``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        host = request.url.host
        if host == "fast.test":
            return web.Response(text="fast")
        if host == "slow.test":
            await asyncio.sleep(SLOW_DELAY)
            return web.Response(text="slow")
        if host == "close.test":
            resp = web.Response(text="bye")
            resp.force_close()  # sends Connection: close, then closes
            return resp
        if host == "big.test":
            stream = web.StreamResponse()
            stream.content_length = len(BIG_CHUNK) * BIG_CHUNKS
            await stream.prepare(request)
            try:
                for _ in range(BIG_CHUNKS):
                    await stream.write(BIG_CHUNK)
            except ConnectionError:
                pass  # the client released the response without reading it
            return stream
        if host == "error.test":
            return web.Response(status=500, text="boom")
        return web.Response(status=421, text=f"no virtual host {host!r}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@dataclass(frozen=True)
class DemoOptions:
    requests: int = 200
    seed: int = 1


@dataclass(frozen=True)
class Job:
    host: str
    read: bool


@dataclass(frozen=True)
class Outcome:
    host: str
    status: int | None
    body_bytes: int
    read: bool
    error: str | None


def plan_jobs(requests: int, seed: int) -> list[Job]:
    """Requests spread evenly over the hosts, in a seeded random order."""
    rng = random.Random(seed)
    hosts = [HOSTS[i % len(HOSTS)] for i in range(requests)]
    rng.shuffle(hosts)
    return [
        Job(host, read=not (host == "big.test" and rng.random() < UNREAD_SHARE))
        for host in hosts
    ]


async def _fetch(session: aiohttp.ClientSession, url: str, job: Job) -> Outcome:
    try:
        async with session.get(url) as resp:
            size = len(await resp.read()) if job.read else 0
            # Leaving the block releases the response, read or not.
            return Outcome(job.host, resp.status, size, job.read, None)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return Outcome(job.host, None, 0, job.read, f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class CrawlResult:
    port: int
    elapsed: float
    outcomes: list[Outcome]
    stats: PoolStats
    connections: list[ConnectionInfo]


async def crawl(options: DemoOptions) -> CrawlResult:
    """Serve, crawl, snapshot the pool, and close everything."""
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        port = _bound_port(runner)
        resolver = LoopbackResolver(suffix=DOMAIN)
        try:
            connector = PoolConnector(
                limit=LIMIT, limit_per_host=LIMIT_PER_HOST, resolver=resolver
            )
            async with aiohttp.ClientSession(connector=connector) as session:
                jobs = plan_jobs(options.requests, options.seed)
                started = time.perf_counter()
                outcomes = await asyncio.gather(
                    *(
                        _fetch(session, f"http://{job.host}:{port}/item/{i}", job)
                        for i, job in enumerate(jobs)
                    )
                )
                elapsed = time.perf_counter() - started
                # Both taken before the session (and its connector) closes.
                stats = connector.stats()
                connections = connector.connections()
        finally:
            await resolver.close()
    finally:
        await runner.cleanup()
    return CrawlResult(port, elapsed, list(outcomes), stats, connections)


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the demo server is not listening on a TCP port")


# ------------------------------------------------------------------ report


def _nonzero(counts: Mapping[str, int]) -> str:
    shown = [f"{name}={n}" for name, n in counts.items() if n]
    return " ".join(shown) if shown else "-"


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: range
) -> list[str]:
    """A plain-text table: ``numeric`` columns right-aligned, others left."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  " + "  ".join(parts).rstrip()

    rule = ["-" * w for w in widths]
    return [line(headers), line(rule), *(line(r) for r in rows)]


def _host_row(name: str, h: HostStats) -> list[str]:
    return [
        name,
        str(h.requests),
        str(h.created),
        str(h.reused),
        str(h.acquired),
        str(h.idle),
        _nonzero(h.released),
        _nonzero(h.closed),
    ]


def format_report(result: CrawlResult, options: DemoOptions) -> str:
    stats = result.stats
    by_host: dict[str, HostStats] = {key.host: hs for key, hs in stats.hosts.items()}
    statuses = Counter(o.status for o in result.outcomes if o.status is not None)
    errors = [o for o in result.outcomes if o.error is not None]
    unread = sum(1 for o in result.outcomes if not o.read)
    read_bytes = sum(o.body_bytes for o in result.outcomes)
    status_text = ", ".join(f"{n} x {code}" for code, n in sorted(statuses.items()))
    out = [
        f"aioconnpool demo: {len(result.outcomes)} requests to {len(HOSTS)} virtual "
        f"hosts on {LOOPBACK}:{result.port} (seed {options.seed})",
        f"PoolConnector(limit={stats.limit}, limit_per_host={stats.limit_per_host}); "
        f"all requests gathered at once; done in {result.elapsed:.2f} s",
        f"responses: {status_text or 'none'}; errors: {len(errors)}; "
        f"body bytes read: {read_bytes:,}; released unread on purpose: {unread}",
        "",
        "per host (gauges acquired/idle taken after the crawl, before closing):",
        *_table(
            [
                "host",
                "requests",
                "created",
                "reused",
                "acquired",
                "idle",
                "released (how)",
                "closed (why)",
            ],
            [
                *(_host_row(host, by_host.get(host, HostStats())) for host in HOSTS),
                *(
                    _host_row(host, hs)
                    for host, hs in sorted(by_host.items())
                    if host not in HOSTS
                ),
                _host_row("total", _totals(stats)),
            ],
            numeric=range(1, 6),
        ),
    ]
    for outcome in errors[:10]:
        out.append(f"error: {outcome.host}: {outcome.error}")
    out += ["", *_reuse_histogram(result.connections, stats)]
    return "\n".join(out)


def _totals(stats: PoolStats) -> HostStats:
    return HostStats(
        acquired=stats.acquired,
        idle=stats.idle,
        connecting=stats.connecting,
        waiting=stats.waiting,
        requests=stats.requests,
        created=stats.created,
        reused=stats.reused,
        connect_errors=stats.connect_errors,
        released=stats.released,
        closed=stats.closed,
    )


def _reuse_histogram(
    connections: Sequence[ConnectionInfo], stats: PoolStats
) -> list[str]:
    sockets = [c for c in connections if c.state != "connecting"]
    lines = [
        "socket reuse (live sockets before the session closed; "
        "requests served by each local socket):"
    ]
    if not sockets:
        return [*lines, "  no live socket"]
    served = Counter(c.requests for c in sockets)
    hosts: dict[int, Counter[str]] = {}
    for c in sockets:
        hosts.setdefault(c.requests, Counter())[c.key.host] += 1
    widest = max(served.values())
    scale = max(1, -(-widest // 40))  # at most 40 marks per bar
    rows = [
        [
            str(n),
            str(served[n]),
            "#" * -(-served[n] // scale),
            ", ".join(f"{host} x{k}" for host, k in sorted(hosts[n].items())),
        ]
        for n in sorted(served)
    ]
    lines += _table(["requests", "sockets", "", "hosts"], rows, numeric=range(2))
    live = sum(c.requests for c in sockets)
    acquisitions = stats.created + stats.reused
    lines.append(
        f"  {len(sockets)} live sockets served {live} of the {acquisitions} "
        f"connection acquisitions; the other {acquisitions - live} went over "
        "sockets closed during the crawl (closed (why))."
    )
    return lines


async def run_demo(options: DemoOptions, out: TextIO) -> int:
    """Run the demo, print its report to ``out``; 0 if every request completed."""
    result = await crawl(options)
    print(format_report(result, options), file=out)
    return 0 if all(o.error is None for o in result.outcomes) else 1
