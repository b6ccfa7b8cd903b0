"""The dashboard's HTTP side (``aioconnpool.web``), against a real pool on
loopback: what each JSON endpoint answers, the token, read-only, the
blocked-loop report, and no credentials anywhere. The page itself is driven
in a real browser in ``tests/test_web_browser.py``."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from aioconnpool import PoolConnector
from aioconnpool._aiohttp.compat import HAS_CLIENT_MIDDLEWARES
from aioconnpool.web import COLUMNS, dashboard_app, serve_dashboard
from aioconnpool.web._hosts import HostPages, HostQuery

from .conftest import Recorder, url

Session = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]


async def busy_pool(
    make_session: Session, server: TestServer, hosts: int = 12
) -> tuple[aiohttp.ClientSession, PoolConnector, list[asyncio.Task[Any]]]:
    """``hosts`` hosts with one finished request each (idle connections),
    and slow.test with 2 requests acquired and 1 waiting (limit 2)."""
    session, connector = make_session(limit_per_host=2)
    for i in range(hosts):
        async with session.get(url(server, "/small", f"h{i}.test")) as resp:
            await resp.read()
    hanging = [
        asyncio.create_task(session.get(url(server, "/hang", "slow.test")))
        for _ in range(3)
    ]
    for _ in range(200):
        st = connector.stats()
        if st.acquired == 2 and st.waiting == 1:
            break
        await asyncio.sleep(0.01)
    return session, connector, hanging


async def finish(recorder: Recorder, hanging: list[asyncio.Task[Any]]) -> None:
    recorder.gate.set()
    for task in hanging:
        resp = await task
        await resp.read()
        resp.release()


async def test_a_mounted_dashboard_answers_with_the_pools_figures(
    make_session: Session,
    server: TestServer,
    recorder: Recorder,
    aiohttp_client: Callable[[web.Application], Awaitable[TestClient[Any, Any]]],
) -> None:
    _, connector, hanging = await busy_pool(make_session, server)
    app = web.Application()
    app.add_subapp("/_pool/", dashboard_app(connector))
    client = await aiohttp_client(app)
    try:
        page = await client.get("/_pool/")
        assert page.status == 200
        assert "<title>aioconnpool dashboard</title>" in await page.text()
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        for asset in ("static/app.js", "static/style.css"):
            assert (await client.get(f"/_pool/{asset}")).status == 200

        # stats.json is connector.stats().to_dict(), whole.
        stats = await (await client.get("/_pool/stats.json")).json()
        assert stats == json.loads(json.dumps(connector.stats().to_dict()))
        assert (stats["acquired"], stats["waiting"], stats["idle"]) == (2, 1, 12)

        status = await (await client.get("/_pool/status.json")).json()
        assert status["connectors"] == ["pool"]
        assert status["stats"]["hosts_count"] == 13
        assert "hosts" not in status["stats"]
        assert status["loop"] == {
            "responsive": True,
            "unresponsive_for": 0.0,
            "stack": None,
        }
        assert status["leaks"] is None  # leak detection is off

        # The busiest host first, by default.
        hosts = await (await client.get("/_pool/hosts.json")).json()
        assert hosts["columns"] == list(COLUMNS)
        first = hosts["rows"][0]
        assert first["host"] == f"http://slow.test:{server.port}"
        assert (first["acquired"], first["waiting"], first["limit"]) == (2, 1, 2)
        assert (hosts["total"], hosts["matching"], hosts["pages"]) == (13, 13, 1)

        # Filtered, sorted by name, paginated.
        got = await (await client.get("/_pool/hosts.json?q=H1&sort=host")).json()
        assert [r["host"].split(":")[1][2:] for r in got["rows"]] == [
            "h1.test",
            "h10.test",
            "h11.test",
        ]
        got = await (
            await client.get("/_pool/hosts.json?sort=host&order=desc&per_page=5&page=3")
        ).json()
        assert (got["pages"], len(got["rows"])) == (3, 3)
        assert got["rows"][-1]["host"] == f"http://h0.test:{server.port}"

        for query, named in (
            ("sort=bogus", "'bogus'"),
            ("order=up", "'up'"),
            ("page=0", "not 0"),
            ("per_page=501", "not 501"),
            ("page=x", "'x'"),
        ):
            bad = await client.get(f"/_pool/hosts.json?{query}")
            assert bad.status == 400, query
            assert named in (await bad.json())["error"], query
        missing = await client.get("/_pool/status.json?connector=other")
        assert missing.status == 404
        assert "'other'" in (await missing.json())["error"]

        # The events tail: what happened since the dashboard listened.
        await finish(recorder, hanging)
        events = await (await client.get("/_pool/events.json?after=0")).json()
        kinds = {e["kind"] for e in events["events"]}
        assert {"Dequeued", "Released"} <= kinds, kinds
        assert all(e["key"].startswith("http://") for e in events["events"])
        later = await (
            await client.get(f"/_pool/events.json?after={events['last']}")
        ).json()
        assert later["events"] == []

        # Read-only: nothing but GET.
        for method in ("POST", "PUT", "DELETE"):
            refused = await client.request(method, "/_pool/stats.json")
            assert refused.status == 405, method
    finally:
        if not recorder.gate.is_set():
            await finish(recorder, hanging)


async def test_the_token_guards_the_data_not_the_page(
    make_session: Session,
    server: TestServer,
    aiohttp_client: Callable[[web.Application], Awaitable[TestClient[Any, Any]]],
) -> None:
    _, connector = make_session()
    client = await aiohttp_client(dashboard_app(connector, token="s3cret-token"))
    assert (await client.get("/")).status == 200
    for path in ("/status.json", "/stats.json", "/hosts.json", "/events.json"):
        assert (await client.get(path)).status == 401, path
        assert (await client.get(f"{path}?token=wrong-token")).status == 401, path
        assert (await client.get(f"{path}?token=s3cret-token")).status == 200, path
        bearer = {"Authorization": "Bearer s3cret-token"}
        assert (await client.get(path, headers=bearer)).status == 200, path
    with pytest.raises(ValueError, match="at least 8 characters"):
        dashboard_app(connector, token="short")


async def test_serving_beyond_loopback_needs_a_token(make_session: Session) -> None:
    _, connector = make_session()
    with pytest.raises(ValueError, match=r"'0\.0\.0\.0', beyond loopback"):
        serve_dashboard(connector, host="0.0.0.0")
    with pytest.raises(ValueError, match="not 70000"):
        serve_dashboard(connector, port=70000)
    with pytest.raises(TypeError, match="not str"):
        dashboard_app("http://pool")  # type: ignore[arg-type]


def test_serve_dashboard_needs_the_pools_loop() -> None:
    async def build() -> PoolConnector:
        return PoolConnector()

    async def close() -> None:
        # (On aiohttp 3.11 close() returns an awaitable, not a coroutine.)
        await connector.close()

    connector = asyncio.run(build())
    with pytest.raises(RuntimeError, match="must be called from the event loop"):
        serve_dashboard(connector)
    asyncio.run(close())


def fetch_json(address: str) -> dict[str, Any]:
    with urllib.request.urlopen(address, timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


async def test_a_served_dashboard_says_when_the_loop_is_stuck(
    make_session: Session, server: TestServer, recorder: Recorder
) -> None:
    """From its own thread, the dashboard answers while the pool's loop is
    blocked, says for how long, and shows where the loop's thread is."""
    _, connector, hanging = await busy_pool(make_session, server)
    loop = asyncio.get_running_loop()
    dashboard = serve_dashboard(connector, interval=0.1)
    try:
        assert dashboard.url.startswith("http://127.0.0.1:")
        status = await loop.run_in_executor(
            None, fetch_json, dashboard.url + "status.json"
        )
        assert status["loop"]["responsive"] is True
        assert status["stats"]["acquired"] == 2

        def blocked_view() -> dict[str, Any]:
            time.sleep(1.6)
            return fetch_json(dashboard.url + "status.json")

        view = loop.run_in_executor(None, blocked_view)
        time.sleep(2.2)  # noqa: ASYNC251 - the pool's loop is stuck here, on purpose
        status = await view
        assert status["loop"]["responsive"] is False
        assert status["loop"]["unresponsive_for"] >= 1.0
        stack = "".join(status["loop"]["stack"])
        assert "test_a_served_dashboard_says_when_the_loop_is_stuck" in stack
        assert "time.sleep(2.2)" in stack
        # The last snapshot is still served, with its figures.
        assert status["stats"]["acquired"] == 2
        # Unstuck: the next snapshots come again.
        for _ in range(100):
            await asyncio.sleep(0.05)
            status = await loop.run_in_executor(
                None, fetch_json, dashboard.url + "status.json"
            )
            if status["loop"]["responsive"]:
                break
        assert status["loop"]["responsive"] is True
    finally:
        dashboard.close()
        await finish(recorder, hanging)
    with pytest.raises(urllib.error.URLError):
        await loop.run_in_executor(None, fetch_json, dashboard.url + "status.json")


async def test_no_credentials_reach_the_dashboard(
    make_session: Session,
    server: TestServer,
    aiohttp_client: Callable[[web.Application], Awaitable[TestClient[Any, Any]]],
) -> None:
    session, connector = make_session()
    secret = f"http://user:hunter2@creds.test:{server.port}/small"
    async with session.get(secret) as r:
        await r.read()
    bearer = {"Authorization": "Bearer hunter3"}
    async with session.get(url(server, "/small", "creds.test"), headers=bearer) as r:
        await r.read()
    client = await aiohttp_client(dashboard_app(connector))
    async with session.get(secret) as r:  # an event after the dashboard listens
        await r.read()
    for path in ("/status.json", "/stats.json", "/hosts.json", "/events.json"):
        body = await (await client.get(path)).text()
        assert "creds.test" in body or path == "/status.json", path
        assert "hunter2" not in body, path
        assert "hunter3" not in body, path
        assert "user:" not in body, path


def test_a_hundred_thousand_hosts_page_on_the_server() -> None:
    hosts = {
        f"http://h{i}.test:80": {"acquired": i % 7, "requests": i, "limit": None}
        for i in range(100_000)
    }
    pages = HostPages()
    query = HostQuery.parse({"sort": "requests", "page": "3", "per_page": "500"})
    got = pages.query(hosts, query, snapshot=1)
    assert (got["total"], got["pages"], len(got["rows"])) == (100_000, 200, 500)
    assert got["rows"][0]["requests"] == 100_000 - 1 - 1000
    # The same snapshot and order: the sorted list is reused, not rebuilt.
    again = pages.query(hosts, HostQuery.parse({"sort": "requests"}), snapshot=1)
    assert again["rows"][0]["requests"] == 99_999
    # Unlimited (None) sorts above any number.
    by_limit = pages.query(hosts, HostQuery.parse({"sort": "limit"}), snapshot=1)
    assert by_limit["rows"][0]["limit"] is None
    filtered = pages.query(hosts, HostQuery.parse({"q": "h9999"}), snapshot=1)
    assert filtered["matching"] == 11  # h9999 and h99990..h99999


def test_the_demo_serves_the_dashboard_with_web() -> None:
    """``aioconnpool demo --web``: the URL on stderr at once, the page up
    during the crawl and, with ``--web-for``, that long after it, showing the
    final figures; then the report, and the dashboard is gone."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "aioconnpool", "demo", "--plain"),
            *("--requests", "60", "--web", "--web-for", "3"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("dashboard: http://127.0.0.1:"), first
        address = first.split(": ", 1)[1].strip()
        done = proc.stderr.readline()
        assert done.startswith("crawl done; the dashboard stays at"), done
        # Snapshots are at most one interval (1 s) old: the final one soon.
        # The demo's 429 is sent again once where middlewares exist.
        pool_requests = 60 + HAS_CLIENT_MIDDLEWARES
        for _ in range(40):
            status = fetch_json(address + "status.json")
            if status["stats"]["requests"] == pool_requests:
                break
            time.sleep(0.05)
        assert status["stats"]["requests"] == pool_requests
        assert status["stats"]["acquired"] == 0
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "aioconnpool demo: 60 requests" in out
    with pytest.raises(urllib.error.URLError):
        fetch_json(address + "status.json")


async def test_the_politeness_figures_reach_the_dashboard(
    make_session: Session,
    server: TestServer,
    aiohttp_client: Callable[[web.Application], Awaitable[TestClient[Any, Any]]],
) -> None:
    """A paced host shows its delay, a paused one its reason, in the host
    table; the pool's pacing figures are in status.json."""
    session, connector = make_session(host_delays={"slow.test": 0.25})
    for host in ("slow.test", "fast.test"):
        async with session.get(url(server, "/small", host)) as resp:
            await resp.read()
    connector.pause_host(f"http://fast.test:{server.port}", 30, reason="429 test")
    client = await aiohttp_client(dashboard_app(connector))
    page = await (await client.get("/hosts.json?sort=delay")).json()
    rows = {r["host"].split(":")[1][2:]: r for r in page["rows"]}
    assert rows["slow.test"]["delay"] == 0.25
    assert page["rows"][0]["host"].startswith("http://slow.test")  # biggest delay
    assert rows["fast.test"]["pause_reason"] == "429 test"
    status = await (await client.get("/status.json")).json()
    assert status["stats"]["paused_hosts"] == 1
    assert status["stats"]["pauses"] == 1
    connector.resume_host(f"http://fast.test:{server.port}")


async def test_adaptive_limits_reach_the_dashboard(
    make_session: Session,
    server: TestServer,
    aiohttp_client: Callable[[web.Application], Awaitable[TestClient[Any, Any]]],
) -> None:
    """With limit_per_host="auto", the host table shows each host's learned
    limit, gradient and min RTT, and status.json the adjustments."""
    session, connector = make_session(limit_per_host="auto")
    for _ in range(25):  # past one window of samples (20)
        async with session.get(url(server, "/small", "a.test")) as resp:
            await resp.read()
    client = await aiohttp_client(dashboard_app(connector))
    page = await (await client.get("/hosts.json?sort=adaptive_limit")).json()
    assert {"adaptive_limit", "gradient", "min_rtt"} <= set(page["columns"])
    (row,) = page["rows"]
    host = connector.stats(f"http://a.test:{server.port}")
    assert row["adaptive_limit"] == host.adaptive_limit == 4  # "auto" starts at 4
    assert row["min_rtt"] == host.min_rtt
    assert row["min_rtt"] is not None
    assert row["min_rtt"] > 0
    status = await (await client.get("/status.json")).json()
    assert status["stats"]["limit_adjustments"] == 0
    assert status["stats"]["adaptive"]["max"] == 16
