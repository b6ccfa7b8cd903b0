"""The dashboard's ``aiohttp.web`` application, and a server for it on a
thread of its own.

Read-only by construction: every route is a GET (and its HEAD), and the
handlers only read snapshots (see ``_snapshots``). The page and its assets
hold no data; every JSON endpoint asks for the token when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

from aiohttp import web

from aioconnpool import PoolConnector

from ._hosts import HostPages, HostQuery, HostQueryError
from ._snapshots import Snapshot, Snapshots

__all__ = ["DashboardServer", "dashboard_app", "serve_dashboard"]

SNAPSHOTS = web.AppKey("snapshots", Snapshots)
PAGES = web.AppKey("host_pages", HostPages)
_STATIC = resources.files(__package__).joinpath("static")
_ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
_SECURITY_HEADERS = {
    # Everything comes from the dashboard itself: no CDN, no inline script.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Connectors = PoolConnector | Mapping[str, PoolConnector]


def _named(connectors: Connectors) -> dict[str, PoolConnector]:
    if isinstance(connectors, PoolConnector):
        return {"pool": connectors}
    if not isinstance(connectors, Mapping):
        raise TypeError(
            "the dashboard shows a PoolConnector or a mapping of names to "
            f"PoolConnector objects, not {type(connectors).__name__}"
        )
    for name in connectors:
        if not isinstance(name, str) or not name:
            raise TypeError(f"connector names must be non-empty strings, not {name!r}")
    return dict(connectors)


def _check_token(token: str | None) -> None:
    if token is not None and (not isinstance(token, str) or len(token) < 8):
        raise ValueError("token must be a string of at least 8 characters")


def dashboard_app(
    connectors: Connectors,
    *,
    token: str | None = None,
    interval: float = 1.0,
    loop: asyncio.AbstractEventLoop | None = None,
) -> web.Application:
    """The dashboard of ``connectors`` (a ``PoolConnector``, or a mapping of
    names to them) as an ``aiohttp.web.Application``: mount it in your own
    app (``app.add_subapp("/_pool/", dashboard_app(connector))``) or run it.

    ``loop`` is the loop the connectors run on (default: the loop that
    starts the app, the right one when the app is served on the pool's own
    loop). ``token``: when given, the JSON endpoints answer only requests
    that carry it (``?token=`` or ``Authorization: Bearer``). Snapshots are
    taken at most once per ``interval`` seconds, shared by every viewer.
    """
    named = _named(connectors)
    _check_token(token)
    app = web.Application(middlewares=[_guard(token)])

    async def snapshots_ctx(app: web.Application) -> AsyncIterator[None]:
        pool_loop = loop if loop is not None else asyncio.get_running_loop()
        snapshots = Snapshots(named, pool_loop, interval=interval)
        app[SNAPSHOTS] = snapshots
        app[PAGES] = HostPages()
        ticker = asyncio.get_running_loop().create_task(_tick(snapshots))
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            if pool_loop is asyncio.get_running_loop() or pool_loop.is_closed():
                snapshots.close()
            else:
                try:
                    pool_loop.call_soon_threadsafe(snapshots.close)
                except RuntimeError:  # closed meanwhile
                    snapshots.close()

    app.cleanup_ctx.append(snapshots_ctx)
    app.router.add_get("/", _asset_handler("index.html"))
    app.router.add_get("/static/app.js", _asset_handler("app.js"))
    app.router.add_get("/static/style.css", _asset_handler("style.css"))
    app.router.add_get("/status.json", _status)
    app.router.add_get("/stats.json", _stats)
    app.router.add_get("/hosts.json", _hosts)
    app.router.add_get("/events.json", _events)
    return app


async def _tick(snapshots: Snapshots) -> None:
    while True:
        snapshots.tick()
        await asyncio.sleep(snapshots.interval)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guard(token: str | None) -> Any:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        if token is not None and request.path.endswith(".json"):
            given = request.query.get("token", "")
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                given = auth[len("Bearer ") :]
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _json({"error": "this dashboard needs its token"}, status=401)
        response = await handler(request)
        response.headers.update(_SECURITY_HEADERS)
        return response

    return guard


def _asset_handler(name: str) -> Handler:
    body = _STATIC.joinpath(name).read_bytes()
    content_type = _ASSETS[name]

    async def asset(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8")

    return asset


def _json(data: object, *, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )


def _http_error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return cls(text=json.dumps({"error": message}), content_type="application/json")


async def _snapshot(request: web.Request) -> tuple[Snapshots, Snapshot, str]:
    """The latest snapshot, and the connector the request names."""
    snapshots = request.app[SNAPSHOTS]
    snapshots.watched()
    name = request.query.get("connector", next(iter(snapshots.connectors)))
    if name not in snapshots.connectors:
        raise _http_error(
            web.HTTPNotFound,
            f"no connector named {name!r} here (there are: "
            f"{', '.join(map(repr, snapshots.connectors))})",
        )
    snapshot = snapshots.latest()
    if snapshot is None or time.time() - snapshot.taken_at > snapshots.interval:
        # Nobody looked lately (snapshots stop then): get a fresh one.
        if snapshots.loop is asyncio.get_running_loop():
            snapshot = snapshots.take_now()
        else:
            # Served from another thread: give the pool's loop a moment to
            # take it (a stuck loop will not: the last one is served, and
            # the page says the loop is stuck).
            seen = snapshot.number if snapshot is not None else 0
            snapshots.tick()
            while snapshots.loop_status().responsive:
                await asyncio.sleep(0.02)
                latest = snapshots.latest()
                if latest is not None and latest.number > seen:
                    snapshot = latest
                    break
    if snapshot is None:
        raise web.HTTPServiceUnavailable(
            text=json.dumps(
                {
                    "error": "no snapshot yet: the pool's event loop has not answered",
                    "loop": snapshots.loop_status().to_dict(),
                }
            ),
            content_type="application/json",
        )
    return snapshots, snapshot, name


async def _status(request: web.Request) -> web.Response:
    """What the page shows, but the per-host rows: totals (``to_dict()``
    without ``hosts``), leak suspects, the loop's state."""
    snapshots, snapshot, name = await _snapshot(request)
    stats = dict(snapshot.stats[name])
    hosts = stats.pop("hosts")
    stats["hosts_count"] = len(hosts)
    events = snapshots.events[name]
    return _json(
        {
            "connectors": list(snapshots.connectors),
            "connector": name,
            "snapshot_at": snapshot.taken_at,
            "interval": snapshots.interval,
            "loop": snapshots.loop_status().to_dict(),
            "stats": stats,
            "leaks": snapshot.leaks[name],
            "last_event": events[-1][0] if events else 0,
        }
    )


async def _stats(request: web.Request) -> web.Response:
    """``connector.stats().to_dict()`` of the latest snapshot, whole."""
    _, snapshot, name = await _snapshot(request)
    response = _json(snapshot.stats[name])
    response.headers["X-Snapshot-At"] = repr(snapshot.taken_at)
    return response


async def _hosts(request: web.Request) -> web.Response:
    """A page of the per-host table: ``?sort=&order=&q=&page=&per_page=``."""
    _, snapshot, name = await _snapshot(request)
    try:
        query = HostQuery.parse(request.query)
    except HostQueryError as exc:
        raise _http_error(web.HTTPBadRequest, str(exc)) from None
    page = request.app[PAGES].query(
        snapshot.stats[name]["hosts"], query, snapshot=(snapshot.number, name)
    )
    page["snapshot_at"] = snapshot.taken_at
    return _json(page)


async def _events(request: web.Request) -> web.Response:
    """The events after number ``after`` (the latest 500 at most)."""
    snapshots = request.app[SNAPSHOTS]
    snapshots.watched()
    name = request.query.get("connector", next(iter(snapshots.connectors)))
    if name not in snapshots.connectors:
        raise _http_error(web.HTTPNotFound, f"no connector named {name!r} here")
    raw = request.query.get("after", "0")
    try:
        after = int(raw)
    except ValueError:
        raise _http_error(
            web.HTTPBadRequest, f"after must be a whole number, not {raw!r}"
        ) from None
    tail = list(snapshots.events[name])
    fresh = [dict(event, number=n) for n, event in tail if n > after]
    return _json({"events": fresh, "last": tail[-1][0] if tail else after})


class DashboardServer:
    """The dashboard served from a thread of its own (see
    :func:`serve_dashboard`): ``url`` to open, ``close()`` to stop."""

    def __init__(self, url: str, thread: threading.Thread, stop: Callable[[], None]):
        self.url = url
        self._thread = thread
        self._stop = stop

    def __repr__(self) -> str:
        # The URL may carry the token: keep it out of logs.
        return f"<DashboardServer at {self.url.split('?', 1)[0]}>"

    def close(self) -> None:
        """Stop serving and wait for the thread to end."""
        if self._thread.is_alive():
            self._stop()
            self._thread.join(10)

    def __enter__(self) -> DashboardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_dashboard(
    connectors: Connectors,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    interval: float = 1.0,
) -> DashboardServer:
    """Serve the dashboard of ``connectors`` from a thread with its own
    event loop, so that it answers even while the pool's loop is stuck (and
    says so). Call it from the pool's loop (inside a coroutine). ``port=0``
    picks a free port: see ``.url``. Binds to loopback unless told
    otherwise; any other address needs a ``token``."""
    named = _named(connectors)
    _check_token(token)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
        raise ValueError(f"port must be an int from 0 to 65535, not {port!r}")
    if token is None and not _is_loopback(host):
        raise ValueError(
            f"serving the dashboard on {host!r}, beyond loopback, needs a token= "
            "(it shows every host the pool talks to)"
        )
    try:
        pool_loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "serve_dashboard() must be called from the event loop the "
            "connectors run on (inside a coroutine)"
        ) from None
    app = dashboard_app(named, token=token, interval=interval, loop=pool_loop)
    ready = threading.Event()
    state: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        state["loop"] = loop
        runner = web.AppRunner(app, access_log=None)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, host, port)
            loop.run_until_complete(site.start())
            state["port"] = runner.addresses[0][1]
        except BaseException as exc:
            state["error"] = exc
            loop.run_until_complete(runner.cleanup())
            loop.close()
            ready.set()
            return
        stopping = loop.create_future()
        state["stopping"] = stopping
        ready.set()
        try:
            loop.run_until_complete(stopping)
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    thread = threading.Thread(target=run, name="aioconnpool-dashboard", daemon=True)
    thread.start()
    ready.wait(30)
    if "error" in state:
        thread.join(10)
        raise OSError(f"cannot serve the dashboard on {host}:{port}: {state['error']}")
    if "port" not in state:
        raise RuntimeError("the dashboard's thread did not start within 30 s")
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{state['port']}/"
    if token is not None:
        url += f"?token={token}"

    def stop() -> None:
        loop: asyncio.AbstractEventLoop = state["loop"]
        future: asyncio.Future[None] = state["stopping"]

        def set_stopping() -> None:
            if not future.done():
                future.set_result(None)

        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(set_stopping)

    return DashboardServer(url, thread, stop)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
