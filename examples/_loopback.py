"""The loopback server every example runs against, and how examples start.

One aiohttp server on 127.0.0.1 plays every host: the examples reach it as
``a.test``, ``b.test``, ``h123.test``... through
``aioconnpool.testing.LoopbackResolver(suffix=".test")``, which resolves
``*.test`` names to 127.0.0.1 and refuses every other name, so no example can
send traffic off the machine.

Run an example with ``python examples/NAME.py``: it starts this server on an
ephemeral port, runs, and stops it. To point it at a server that is already
listening instead (``python examples/_loopback.py`` starts one and prints its
port), set ``AIOCONNPOOL_EXAMPLE_PORT`` to that port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from aioconnpool import HostStats, PoolStats

PORT_VARIABLE = "AIOCONNPOOL_EXAMPLE_PORT"
LOOPBACK = "127.0.0.1"
CHUNK = b"x" * 65536
BIG_CHUNKS = 48  # 3 MiB: never arrives together with the headers
SITE_PAGES = 3  # pages per host of the crawler's site
SITE_LINKS = 3  # links from a host's front page to other hosts


async def small(request: web.Request) -> web.Response:
    """A body small enough to arrive in the same packet as the headers."""
    return web.Response(text="ok")


async def big(request: web.Request) -> web.StreamResponse:
    """A 3 MiB streamed body: complete only once the client reads it all."""
    resp = web.StreamResponse()
    resp.content_length = len(CHUNK) * BIG_CHUNKS
    await resp.prepare(request)
    try:
        for _ in range(BIG_CHUNKS):
            await resp.write(CHUNK)
    except ConnectionError:
        pass  # the client released or closed the response early
    return resp


async def close(request: web.Request) -> web.Response:
    """Answers with ``Connection: close``."""
    resp = web.Response(text="bye")
    resp.force_close()
    return resp


async def slow(request: web.Request) -> web.Response:
    """Answers after ``?delay=`` seconds (default 0.2)."""
    await asyncio.sleep(float(request.query.get("delay", "0.2")))
    return web.Response(text="slow")


async def reset(request: web.Request) -> web.StreamResponse:
    """Promises 1 MB, sends 64 KiB, then drops the connection."""
    resp = web.StreamResponse()
    resp.content_length = 1_000_000
    await resp.prepare(request)
    await resp.write(CHUNK)
    if request.transport is not None:
        request.transport.abort()
    return resp


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/small")


async def site(request: web.Request) -> web.Response:
    """A site spread over many hosts, for the crawler.

    ``hN.test``'s page 0 links to its pages 1.. and to the front pages of
    ``SITE_LINKS`` other hosts (N*k+1 .. N*k+SITE_LINKS), up to
    ``?hosts=`` hosts in all: a tree that reaches every host from ``h0``.
    """
    match = re.fullmatch(r"h(\d+)\.test", request.url.host or "")
    page = int(request.match_info["page"])
    hosts = int(request.query.get("hosts", "0"))
    if match is None or page >= SITE_PAGES:
        raise web.HTTPNotFound()
    n = int(match.group(1))
    port = request.url.port
    query = f"?hosts={hosts}"
    links: list[str] = []
    if page == 0:
        links += [f"/site/{p}{query}" for p in range(1, SITE_PAGES)]
        children = range(n * SITE_LINKS + 1, n * SITE_LINKS + SITE_LINKS + 1)
        links += [
            f"http://h{c}.test:{port}/site/0{query}" for c in children if c < hosts
        ]
    body = "".join(f'<a href="{link}">{link}</a>\n' for link in links)
    return web.Response(text=f"<html><body>\n{body}</body></html>\n")


THROTTLED = web.AppKey("throttled", dict[str, int])


async def throttle(request: web.Request) -> web.Response:
    """``429 Too Many Requests`` with ``Retry-After: ?after=`` (seconds,
    default 1) to a host's first ``?times=`` requests (default 1), then
    ``ok``: a site asking the client to back off. ``?status=503`` answers
    503 instead, and ``?after=`` empty sends no ``Retry-After``."""
    seen = request.app[THROTTLED]
    host = request.url.host or ""
    seen[host] = seen.get(host, 0) + 1
    if seen[host] <= int(request.query.get("times", "1")):
        after = request.query.get("after", "1")
        headers = {"Retry-After": after} if after else {}
        status = int(request.query.get("status", "429"))
        return web.Response(status=status, text="slow down", headers=headers)
    return web.Response(text="ok")


def make_app() -> web.Application:
    app = web.Application()
    app[THROTTLED] = {}
    app.router.add_get("/throttle", throttle)
    app.router.add_get("/small", small)
    app.router.add_get("/big", big)
    app.router.add_get("/close", close)
    app.router.add_get("/slow", slow)
    app.router.add_get("/reset", reset)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/site/{page}", site)
    return app


async def _serve_and_run(main: Callable[[int], Awaitable[object]]) -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    try:
        server = web.TCPSite(runner, LOOPBACK, 0)
        await server.start()
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        await main(int(port))
    finally:
        await runner.cleanup()


def run(main: Callable[[int], Awaitable[object]]) -> None:
    """Run ``main(port)`` against the embedded server, or the one whose port
    ``AIOCONNPOOL_EXAMPLE_PORT`` gives."""
    given = os.environ.get(PORT_VARIABLE)
    if given:
        asyncio.run(_call(main, int(given)))
    else:
        asyncio.run(_serve_and_run(main))


async def _call(main: Callable[[int], Awaitable[object]], port: int) -> None:
    await main(port)


# --8<-- [start:brief]
def brief(stats: HostStats | PoolStats) -> str:
    """The figures the examples print: gauges, counters (``connect_errors``,
    ``rejected`` and ``wait_timeouts`` when not zero), and the non-zero
    ``released`` / ``closed`` entries (durations and ports left out, so
    that the output is the same on every run)."""
    released = " ".join(f"{k}={v}" for k, v in stats.released.items() if v)
    closed = " ".join(f"{k}={v}" for k, v in stats.closed.items() if v)
    refused = "".join(
        f" {name}={getattr(stats, name)}"
        for name in ("connect_errors", "rejected", "wait_timeouts")
        if getattr(stats, name)
    )
    return (
        f"acquired={stats.acquired} idle={stats.idle} waiting={stats.waiting} "
        f"available={stats.available} | requests={stats.requests} "
        f"created={stats.created} reused={stats.reused}{refused} | "
        f"released: {released or '-'} | closed: {closed or '-'}"
    )


# --8<-- [end:brief]


async def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``check`` until it holds (examples wait for a state, not a time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"still not true after {timeout} s: {check}")
        await asyncio.sleep(0.005)


async def _serve_forever() -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    server = web.TCPSite(runner, LOOPBACK, int(os.environ.get(PORT_VARIABLE, "0")))
    await server.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    print(f"serving on {LOOPBACK}:{port}; {PORT_VARIABLE}={port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever())
