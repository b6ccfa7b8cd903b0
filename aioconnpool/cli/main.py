"""The ``aioconnpool`` command (also ``python -m aioconnpool``).

Subcommands:

``demo``
    crawl an embedded loopback server through a ``PoolConnector`` and print
    what the pool saw (see :mod:`aioconnpool.cli.demo`).
``crawl URL...``
    the same for real targets; ``--json`` prints the final ``stats()`` as JSON.
``fleet status REDIS_URL --name NAME``
    the fleet-wide limits of a fleet (``aioconnpool.fleet``): sessions and
    hosts, read from Redis (see :mod:`aioconnpool.cli.fleet`).

On a terminal with rich installed (``pip install aioconnpool[cli]``) both
draw a progress bar and a live per-host table while they run; otherwise (pipes,
CI, ``--plain``) they print the final report only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

import aiohttp
from yarl import URL

from .. import PoolConnector
from .._keys import mask_userinfo
from .demo import (
    DemoOptions,
    Outcome,
    SocketReuse,
    Watched,
    outcome_lines,
    reuse_blocks,
    run_demo,
    watch,
)
from .render import Block, emit, pool_blocks, rich_available
from .web import WebOptions, dashboard_during

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["CrawlOptions", "main", "run_crawl"]

READ_CHUNK = 65536


def _int_at_least(minimum: int, meaning: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be {meaning or f'at least {minimum}'}, got {value}"
            )
        return value

    return parse


_positive_int = _int_at_least(1)
_count = _int_at_least(0, "0 (no limit) or more")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _http_url(text: str) -> URL:
    """An absolute http(s) URL with a host; errors name it (credentials hidden)."""
    shown = mask_userinfo(text)
    try:
        url = URL(text)
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"not a valid URL: {shown!r}") from None
    if url.scheme not in ("http", "https") or not url.raw_host:
        raise argparse.ArgumentTypeError(
            f"not an absolute http:// or https:// URL: {shown!r}"
        )
    return url


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aioconnpool",
        description="aioconnpool: an exact, observable aiohttp connection pool.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    demo = commands.add_parser(
        "demo",
        help="crawl an embedded loopback server and print the pool's report",
        description=(
            "Start an aiohttp server on 127.0.0.1 playing several virtual hosts "
            "(fast, slow, Connection: close, 1 MiB bodies, 500 errors), crawl it "
            "through a PoolConnector(limit=20, limit_per_host=4) and print the "
            "pool's per-host report and socket reuse. No traffic leaves the machine."
        ),
    )
    demo.add_argument(
        "--requests",
        type=_positive_int,
        default=200,
        metavar="N",
        help="how many requests to make (default 200)",
    )
    demo.add_argument(
        "--seed", type=int, default=1, help="random seed of the request mix (default 1)"
    )
    crawl = commands.add_parser(
        "crawl",
        help="fetch URLs through a PoolConnector and print the pool's report",
        description=(
            "Fetch every URL (all requests started at once, bodies read and "
            "discarded) through a PoolConnector, then print the pool's report, "
            "or with --json its final stats() (taken before the connector "
            "closes). Exit status 1 if any request failed without a response."
        ),
    )
    crawl.add_argument("urls", nargs="+", type=_http_url, metavar="URL")
    crawl.add_argument(
        "--limit",
        type=_count,
        default=100,
        metavar="N",
        help="total connection limit, 0 for none (default 100, as aiohttp)",
    )
    crawl.add_argument(
        "--limit-per-host",
        type=_count,
        default=0,
        metavar="N",
        help="connections per host, 0 for no limit (default 0, as aiohttp)",
    )
    crawl.add_argument(
        "--requests-per-url",
        type=_positive_int,
        default=1,
        metavar="N",
        help="fetch each URL N times (default 1)",
    )
    crawl.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="total time allowed per request (default 30)",
    )
    crawl.add_argument(
        "--json",
        action="store_true",
        help="print the final stats() as JSON on stdout, and nothing else",
    )
    fleet = commands.add_parser(
        "fleet",
        help="look at a fleet's shared per-host limits in Redis",
        description="Commands about fleet-wide limits (aioconnpool.fleet).",
    )
    fleet_commands = fleet.add_subparsers(dest="fleet_command", metavar="COMMAND")
    fleet_commands.required = True
    status = fleet_commands.add_parser(
        "status",
        help="print the fleet's sessions and hosts",
        description=(
            "Read the fleet NAME from the Redis at REDIS_URL and print its "
            "sessions (process, machine, lease left) and hosts (limit, slots "
            "held per session, requests waiting). Read-only."
        ),
    )
    status.add_argument("redis_url", metavar="REDIS_URL")
    status.add_argument("--name", required=True, help="the fleet's name")
    status.add_argument(
        "--max-hosts",
        type=_positive_int,
        default=100,
        metavar="N",
        help="show the N most recently used hosts (default 100)",
    )
    status.add_argument(
        "--cluster",
        action="store_true",
        help="REDIS_URL is a node of a Redis Cluster (as RedisFleet(cluster=True))",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    for command in (demo, crawl):
        command.add_argument(
            "--plain",
            action="store_true",
            help="no live view, plain-text report, even on a terminal",
        )
        command.add_argument(
            "--web",
            action="store_true",
            help=(
                "serve the live dashboard on 127.0.0.1 during the crawl (its URL "
                "goes to stderr) and after it, until Ctrl-C or --web-for"
            ),
        )
        command.add_argument(
            "--web-port",
            type=_count,
            default=0,
            metavar="PORT",
            help="the dashboard's port (default: any free one)",
        )
        command.add_argument(
            "--web-for",
            type=_seconds,
            default=None,
            metavar="SECONDS",
            help="keep the dashboard up this long after the crawl (default: Ctrl-C)",
        )
    return parser


def _console(stream: TextIO, plain: bool) -> Console | None:
    """A rich console on ``stream`` if it is a terminal and rich is installed."""
    if plain or not stream.isatty() or not rich_available():
        return None
    from rich.console import Console

    return Console(file=stream)


# ------------------------------------------------------------------ crawl


@dataclass(frozen=True)
class CrawlOptions:
    urls: tuple[URL, ...]
    limit: int = 100
    limit_per_host: int = 0
    requests_per_url: int = 1
    timeout: float = 30.0
    web: WebOptions | None = None


def _shown(url: URL) -> str:
    # Never print credentials given in a URL.
    return str(url.with_user(None)) if url.raw_user or url.raw_password else str(url)


async def _fetch_url(session: aiohttp.ClientSession, url: URL) -> Outcome:
    target = _shown(url)
    try:
        async with session.get(url) as resp:
            size = 0
            async for chunk in resp.content.iter_chunked(READ_CHUNK):
                size += len(chunk)
            return Outcome(target, resp.status, size, True, None)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
        # A failure of this URL is a result to report, not a crash.
        error = mask_userinfo(f"{type(exc).__name__}: {exc}")
        return Outcome(target, None, 0, True, error)


async def run_crawl(
    options: CrawlOptions,
    out: TextIO,
    *,
    as_json: bool = False,
    console: Console | None = None,
    err: TextIO | None = None,
) -> int:
    """Crawl, then print the report (or the stats as JSON) to ``out``.

    ``console``: where to draw the live view, and (without ``as_json``) the
    rich report. With ``as_json``, failed requests are summed up on ``err``
    so that ``out`` holds the JSON alone. 0 if every request got a response.
    """
    connector = PoolConnector(
        limit=options.limit, limit_per_host=options.limit_per_host
    )
    timeout = aiohttp.ClientTimeout(total=options.timeout)
    reuse = SocketReuse(connector)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Round robin over the URLs, so repeats of one host are spread out.
        jobs: list[Callable[[], Awaitable[Outcome]]] = [
            _job(session, url)
            for _ in range(options.requests_per_url)
            for url in options.urls
        ]
        async with dashboard_during(connector, options.web, err or sys.stderr):
            watched = await watch(
                connector, jobs, reuse=reuse, console=console, description="crawl"
            )
    failed = [o for o in watched.results if o.error is not None]
    if as_json:
        print(json.dumps(watched.stats.to_dict(), indent=2), file=out)
        if failed and err is not None:
            print("\n".join(outcome_lines(watched.results)), file=err)
    else:
        emit(_crawl_blocks(options, watched), out, console)
    return 1 if failed else 0


def _job(session: aiohttp.ClientSession, url: URL) -> Callable[[], Awaitable[Outcome]]:
    return lambda: _fetch_url(session, url)


def _crawl_blocks(options: CrawlOptions, watched: Watched[Outcome]) -> list[Block]:
    stats = watched.stats
    return [
        f"aioconnpool crawl: {len(options.urls)} URLs x {options.requests_per_url} "
        f"= {len(watched.results)} requests to {len(stats.hosts)} hosts",
        f"PoolConnector(limit={options.limit}, limit_per_host="
        f"{options.limit_per_host}) (0: no limit); all requests started at once; "
        f"done in {watched.elapsed:.2f} s",
        *outcome_lines(watched.results),
        "",
        "gauges (acquired, idle...) taken after the crawl, before closing",
        *pool_blocks(stats),
        "",
        *reuse_blocks(watched.reuse, stats, str),
    ]


# ------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        web = (
            WebOptions(port=args.web_port, linger=args.web_for)
            if getattr(args, "web", False)
            else None
        )
        if args.command == "demo":
            options = DemoOptions(requests=args.requests, seed=args.seed, web=web)
            console = _console(sys.stdout, args.plain)
            return asyncio.run(run_demo(options, sys.stdout, console))
        if args.command == "crawl":
            crawl_options = CrawlOptions(
                urls=tuple(args.urls),
                limit=args.limit,
                limit_per_host=args.limit_per_host,
                requests_per_url=args.requests_per_url,
                timeout=args.timeout,
                web=web,
            )
            # With --json, stdout holds the JSON alone: the live view, if
            # any, goes to stderr.
            view_stream = sys.stderr if args.json else sys.stdout
            return asyncio.run(
                run_crawl(
                    crawl_options,
                    sys.stdout,
                    as_json=args.json,
                    console=_console(view_stream, args.plain),
                    err=sys.stderr,
                )
            )
        if args.command == "fleet":
            from .fleet import fleet_status_command

            return fleet_status_command(
                args.redis_url,
                args.name,
                as_json=args.json,
                max_hosts=args.max_hosts,
                cluster=args.cluster,
                out=sys.stdout,
                err=sys.stderr,
            )
    except KeyboardInterrupt:
        return 130  # Ctrl-C (ends a --web dashboard's wait)
    except BrokenPipeError:
        # The reader went away (piped into ``head``...): silence the flush
        # at exit, as the Python documentation recommends.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    raise AssertionError(f"unhandled command {args.command!r}")  # pragma: no cover
