"""``aioconnpool demo``: crawl an embedded loopback server, then show the pool.

An aiohttp server on 127.0.0.1 (an ephemeral port) plays several virtual hosts,
told apart by the ``Host`` header:

* ``fast.test``  -- a small body at once;
* ``slow.test``  -- a small body after a sleep, so requests queue for it;
* ``close.test`` -- answers with ``Connection: close``;
* ``big.test``   -- streams about 1 MiB; some of these responses are released
  without being read;
* ``error.test`` -- answers 500;
* ``paced.test`` -- a small body at once, but the pool paces it
  (``host_delays``): its requests start ``PACED_DELAY`` apart;
* ``busy.test``  -- answers its first request 429 with ``Retry-After: 1``;
  ``backoff_middleware`` (aiohttp 3.12 and later) pauses the host for that
  second and sends the request again.

The server notes when each request reaches it and the client when it sent
it, so the report shows the pacing and the pause as both saw them. A
resolver maps every ``*.test`` name to 127.0.0.1, so no traffic leaves the
machine. All requests are started at once through a
:class:`~aioconnpool.PoolConnector`, which queues what its limits do not let
through. :func:`watch` (shared with ``aioconnpool crawl``) samples the pool
while they run, drives the live view on a terminal, and returns the final
snapshot. Every figure printed is measured on this run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TextIO, TypeVar

import aiohttp
from aiohttp import web

from .. import (
    BackoffMiddleware,
    Closed,
    PoolConnector,
    PoolEvent,
    PoolKey,
    PoolStats,
    backoff_middleware,
)
from ..testing import LoopbackResolver
from .render import Block, Label, LiveView, emit, pool_blocks, reuse_table
from .web import WebOptions, dashboard_during

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "HOSTS",
    "DemoOptions",
    "Outcome",
    "SocketReuse",
    "make_app",
    "outcome_lines",
    "reuse_blocks",
    "run_demo",
    "watch",
]

HOSTS: tuple[str, ...] = (
    "fast.test",
    "slow.test",
    "close.test",
    "big.test",
    "error.test",
    "paced.test",
    "busy.test",
)
DOMAIN = ".test"
LOOPBACK = "127.0.0.1"

LIMIT = 20
LIMIT_PER_HOST = 4
SLOW_DELAY = 0.2  # seconds slow.test waits: its queue is what the live view shows
BIG_CHUNK = b"x" * 65536
BIG_CHUNKS = 16  # 1 MiB
UNREAD_SHARE = 1 / 3  # of big.test responses, released without reading
PACED_DELAY = 0.05  # seconds between request starts to paced.test
RETRY_AFTER = 1  # seconds busy.test asks for in its one 429
TICK = 0.1  # seconds between samples of the pool
REDRAW = 0.25  # seconds between redraws of the live view


ARRIVALS = web.AppKey("arrivals", dict[str, list[float]])


def make_app() -> web.Application:
    """One catch-all route that answers as the virtual host named by ``Host``.

    ``app[ARRIVALS]`` maps each host to the loop times its requests arrived.
    """
    arrivals: dict[str, list[float]] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        host = request.url.host or ""
        seen = arrivals.setdefault(host, [])
        seen.append(asyncio.get_running_loop().time())
        if host in ("fast.test", "paced.test"):
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
        if host == "busy.test":
            if len(seen) == 1:
                return web.Response(
                    status=429, text="later", headers={"Retry-After": str(RETRY_AFTER)}
                )
            return web.Response(text="thanks for waiting")
        return web.Response(status=421, text=f"no virtual host {host!r}")

    app = web.Application()
    app[ARRIVALS] = arrivals
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@dataclass(frozen=True)
class DemoOptions:
    requests: int = 200
    seed: int = 1
    web: WebOptions | None = None


@dataclass(frozen=True)
class Job:
    host: str
    read: bool


@dataclass(frozen=True)
class Outcome:
    """One request: its target (a host, or a URL without credentials), the
    status if a response came, body bytes read, and the error if it failed."""

    target: str
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


# ------------------------------------------------------- watching a crawl


class SocketReuse:
    """Requests served by each socket, exactly.

    Sockets the pool closed are reported by its ``Closed`` events (with the
    requests each served); those still open are read from
    ``connector.connections()`` by :meth:`sample`. Only the events up to the
    last sample count, so a final sample taken before the connector closes
    sees every socket exactly once.
    """

    def __init__(self, connector: PoolConnector) -> None:
        self._connector = connector
        self._closed: list[tuple[PoolKey, int]] = []
        self._counted = 0  # closed sockets up to the last sample
        self._live: list[tuple[PoolKey, int]] = []
        self.samples = 0
        connector.add_listener(self._on_event)

    source = (
        "the pool's Closed events (sockets it closed) and connector.connections() "
        "(sockets still open)"
    )

    def _on_event(self, event: PoolEvent) -> None:
        if isinstance(event, Closed) and event.requests:
            self._closed.append((event.key, event.requests))

    def sample(self) -> None:
        """Note the open sockets now; the last call before closing counts."""
        self.samples += 1
        self._counted = len(self._closed)
        self._live = [
            (info.key, info.requests)
            for info in self._connector.connections()
            if info.local is not None  # still connecting: no socket yet
        ]

    def per_socket(self) -> list[tuple[PoolKey, int]]:
        return self._closed[: self._counted] + self._live


def reuse_blocks(reuse: SocketReuse, stats: PoolStats, label: Label) -> list[Block]:
    title = "socket reuse (requests served by each local socket)"
    per_socket = reuse.per_socket()
    if not per_socket:
        return [f"{title}: no socket seen"]
    seen = sum(n for _, n in per_socket)
    note = (
        f"seen: {len(per_socket)} of the {stats.created} sockets opened, serving "
        f"{seen} of the {stats.created + stats.reused} acquisitions; source: "
        f"{reuse.source}."
    )
    return [
        reuse_table(per_socket, label=label, title=title),
        *textwrap.wrap(note, width=86, initial_indent="  ", subsequent_indent="  "),
    ]


T = TypeVar("T")


@dataclass(frozen=True)
class Watched(Generic[T]):
    results: list[T]
    elapsed: float
    stats: PoolStats
    reuse: SocketReuse


async def watch(
    connector: PoolConnector,
    jobs: Sequence[Callable[[], Awaitable[T]]],
    *,
    reuse: SocketReuse,
    console: Console | None,
    description: str,
    label: Label = str,
) -> Watched[T]:
    """Run ``jobs`` at once, sampling the pool every ``TICK`` seconds.

    With a console, a live view is drawn on it meanwhile (every ``REDRAW``
    seconds, and once complete). The final snapshot is taken after the last
    job, before the caller closes the connector.
    """
    view = (
        LiveView(console, total=len(jobs), description=description, label=label)
        if console is not None
        else None
    )

    last_drawn = -math.inf

    def tick(*, final: bool = False) -> None:
        nonlocal last_drawn
        reuse.sample()
        now = time.monotonic()
        if view is not None and (final or now - last_drawn >= REDRAW):
            view.refresh(connector.stats())
            last_drawn = now

    async def ticker() -> None:
        while True:
            tick()
            await asyncio.sleep(TICK)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        try:
            return await job()
        finally:
            if view is not None:
                view.advance()

    started = time.perf_counter()
    with view if view is not None else contextlib.nullcontext():
        sampler = asyncio.create_task(ticker())
        try:
            results = await asyncio.gather(*(run(job) for job in jobs))
        finally:
            sampler.cancel()
            # wait() does not raise the ticker's CancelledError, so a
            # cancellation of this task still propagates.
            await asyncio.wait([sampler])
            if not sampler.cancelled() and (error := sampler.exception()):
                raise error  # a bug in sampling or drawing: do not hide it
        tick(final=True)
    elapsed = time.perf_counter() - started
    return Watched(list(results), elapsed, connector.stats(), reuse)


def outcome_lines(outcomes: Sequence[Outcome], *, shown_errors: int = 10) -> list[str]:
    """Status counts, error count and bytes, then the first few distinct errors."""
    statuses = Counter(o.status for o in outcomes if o.status is not None)
    errors = Counter((o.target, o.error) for o in outcomes if o.error is not None)
    status_text = ", ".join(f"{n} x {code}" for code, n in sorted(statuses.items()))
    read_bytes = sum(o.body_bytes for o in outcomes)
    lines = [
        f"responses: {status_text or 'none'}; errors: {errors.total()}; "
        f"body bytes read: {read_bytes:,}"
    ]
    for (target, error), n in list(errors.items())[:shown_errors]:
        lines.append(f"error{f' (x{n})' if n > 1 else ''}: {target}: {error}")
    if len(errors) > shown_errors:
        lines.append(f"... and {len(errors) - shown_errors} more distinct errors")
    return lines


# ------------------------------------------------------------------ demo


@dataclass(frozen=True)
class DemoResult:
    port: int
    watched: Watched[Outcome]
    arrivals: dict[str, list[float]]  # host -> loop times requests arrived
    sent: dict[str, list[float]]  # host -> loop times the client sent them
    backoff: BackoffMiddleware | None  # None: aiohttp < 3.12 has no middlewares
    backoff_missing: str | None  # why there is no middleware


async def crawl(options: DemoOptions, console: Console | None = None) -> DemoResult:
    """Serve, crawl while watching, snapshot the pool, and close everything."""
    app = make_app()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        port = _bound_port(runner)
        resolver = LoopbackResolver(suffix=DOMAIN)
        try:
            connector = PoolConnector(
                limit=LIMIT,
                limit_per_host=LIMIT_PER_HOST,
                host_delays={"paced.test": PACED_DELAY},
                resolver=resolver,
            )
            reuse = SocketReuse(connector)
            backoff: BackoffMiddleware | None = None
            backoff_missing = None
            try:
                backoff = backoff_middleware(connector, retries=2)
            except RuntimeError as exc:  # aiohttp 3.11: no client middlewares
                backoff_missing = str(exc)
            # aiohttp 3.11's ClientSession takes no middlewares= at all.
            middlewares: dict[str, Any] = (
                {} if backoff is None else {"middlewares": (backoff,)}
            )
            sent, tracing = _sending_times()
            async with aiohttp.ClientSession(
                connector=connector, trace_configs=[tracing], **middlewares
            ) as session:
                jobs = [
                    _job(session, f"http://{job.host}:{port}/item/{i}", job)
                    for i, job in enumerate(plan_jobs(options.requests, options.seed))
                ]
                async with dashboard_during(connector, options.web, sys.stderr):
                    watched = await watch(
                        connector,
                        jobs,
                        reuse=reuse,
                        console=console,
                        description="demo crawl",
                        label=_host_label,
                    )
        finally:
            await resolver.close()
    finally:
        await runner.cleanup()
    return DemoResult(port, watched, app[ARRIVALS], sent, backoff, backoff_missing)


def _sending_times() -> tuple[dict[str, list[float]], aiohttp.TraceConfig]:
    """When the client wrote each request's headers, per host: where the
    pacing is kept (the server, on the same event loop, may see a request
    a few ms late when the loop is busy)."""
    sent: dict[str, list[float]] = {}

    async def on_headers_sent(
        session: aiohttp.ClientSession,
        context: object,
        params: aiohttp.TraceRequestHeadersSentParams,
    ) -> None:
        host = params.url.host or ""
        sent.setdefault(host, []).append(asyncio.get_running_loop().time())

    tracing = aiohttp.TraceConfig()
    tracing.on_request_headers_sent.append(on_headers_sent)
    return sent, tracing


def _job(
    session: aiohttp.ClientSession, url: str, job: Job
) -> Callable[[], Awaitable[Outcome]]:
    return lambda: _fetch(session, url, job)


def _host_label(key: PoolKey) -> str:
    # Every virtual host is on the same port: the name says it all.
    return key.host


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the demo server is not listening on a TCP port")


def report_blocks(result: DemoResult, options: DemoOptions) -> list[Block]:
    watched = result.watched
    stats = watched.stats
    outcomes = watched.results
    unread = sum(1 for o in outcomes if not o.read)
    return [
        f"aioconnpool demo: {len(outcomes)} requests to {len(HOSTS)} virtual "
        f"hosts on {LOOPBACK}:{result.port} (seed {options.seed})",
        f"PoolConnector(limit={stats.limit}, limit_per_host={stats.limit_per_host});"
        f" all requests started at once; done in {watched.elapsed:.2f} s",
        *outcome_lines(outcomes),
        f"big.test responses released unread on purpose: {unread}",
        "",
        "gauges (acquired, idle...) taken after the crawl, before closing",
        *pool_blocks(stats, label=_host_label),
        "",
        *politeness_lines(result),
        "",
        *reuse_blocks(watched.reuse, stats, _host_label),
    ]


def politeness_lines(result: DemoResult) -> list[str]:
    """Pacing and the 429 pause, as the client and the server saw them."""
    stats = result.watched.stats
    sent = result.sent.get("paced.test", [])
    arrived = result.arrivals.get("paced.test", [])
    lines = [
        "politeness (request times: sent by the client, arrived at the server)",
        f"  paced.test: host_delays={{'paced.test': {PACED_DELAY}}}; "
        f"{len(sent)} requests; smallest gap between two sent: "
        f"{_smallest_gap(sent)}, between two arrived: {_smallest_gap(arrived)}",
    ]
    busy = result.arrivals.get("busy.test", [])
    if result.backoff is None:
        lines.append(
            f"  busy.test: answered 429 once; no backoff here: {result.backoff_missing}"
        )
    elif len(busy) >= 2:
        gaps = [b - a for a, b in itertools.pairwise(busy)]
        longest = max(range(len(gaps)), key=gaps.__getitem__)
        backoff = result.backoff
        lines.append(
            f"  busy.test: its first request answered 429 with Retry-After: "
            f"{RETRY_AFTER}; longest gap between two arrivals: {gaps[longest]:.3f} s "
            f"(the pause; {longest + 1} arrived before it, sent before the 429 "
            f"came back); backoff_middleware: throttled={backoff.throttled} "
            f"retried={backoff.retried}"
        )
    else:
        lines.append(f"  busy.test: {len(busy)} request(s) arrived")
    lines.append(
        f"  pool counters: paced={stats.paced} pauses={stats.pauses} "
        f"pacing_late={stats.pacing_late}"
    )
    return lines


def _smallest_gap(times: Sequence[float]) -> str:
    ordered = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    return f"{min(gaps):.3f} s" if gaps else "n/a"


async def run_demo(
    options: DemoOptions, out: TextIO, console: Console | None = None
) -> int:
    """Run the demo and print its report; 0 if every request completed.

    With ``console`` (a terminal), a live view is drawn during the crawl and
    the report printed there with rich; otherwise plain text goes to ``out``.
    """
    result = await crawl(options, console)
    emit(report_blocks(result, options), out, console)
    return 0 if all(o.error is None for o in result.watched.results) else 1
