"""``aioconnpool crawl``, JSON export and the human tables, against loopback.

Crawls target aiohttp servers started by the test on 127.0.0.1 that count
what they see: requests per path and per client socket (the peer address is
the client's local socket), so the pool's figures are checked against the
other end of the wire, not against themselves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import socket
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from io import StringIO
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from rich.console import Console
from yarl import URL

from aioconnpool import ConnectionInfo, HostStats, PoolConnector, PoolKey, PoolStats
from aioconnpool._export import stats_to_dict
from aioconnpool.cli.main import CrawlOptions, _console, main, run_crawl
from aioconnpool.cli.render import HOST_HEADERS, pool_blocks, to_text
from tests.conftest import table, url

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]
BIG = b"y" * (256 * 1024)


class Seen:
    """What one target server saw."""

    def __init__(self) -> None:
        self.paths: Counter[str] = Counter()
        self.sockets: Counter[tuple[str, int]] = Counter()

    @property
    def requests(self) -> int:
        return sum(self.paths.values())


def target_app(seen: Seen) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        seen.paths[request.path] += 1
        assert request.transport is not None
        host, port = request.transport.get_extra_info("peername")[:2]
        seen.sockets[(host, port)] += 1
        if request.path == "/big":
            return web.Response(body=BIG)
        if request.path == "/close":
            return web.Response(text="bye", headers={"Connection": "close"})
        if request.path == "/error":
            return web.Response(status=500, text="boom")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


Target = tuple[TestServer, Seen]


@pytest.fixture
async def make_target(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Callable[[], Awaitable[Target]]:
    async def start() -> Target:
        seen = Seen()
        return await aiohttp_server(target_app(seen)), seen

    return start


def key_of(server: TestServer) -> str:
    return str(PoolKey("127.0.0.1", server.port, False))  # type: ignore[arg-type]


def dead_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ------------------------------------------------------------------ crawl


async def test_crawl_json_matches_what_the_servers_saw(
    make_target: Callable[[], Awaitable[Target]],
) -> None:
    (a, seen_a), (b, seen_b) = await make_target(), await make_target()
    urls = [url(a, "/small"), url(a, "/big"), url(a, "/close"), url(b, "/error")]
    options = CrawlOptions(
        urls=tuple(URL(u) for u in urls), limit_per_host=2, requests_per_url=4
    )
    out, err = StringIO(), StringIO()

    status = await run_crawl(options, out, as_json=True, err=err)

    assert status == 0
    assert err.getvalue() == ""
    stats = json.loads(out.getvalue())  # stdout holds the JSON and nothing else
    assert set(stats["hosts"]) == {key_of(a), key_of(b)}
    for server, seen in ((a, seen_a), (b, seen_b)):
        host = stats["hosts"][key_of(server)]
        assert host["requests"] == seen.requests
        # Every socket the pool opened carried requests the server saw.
        assert host["created"] == len(seen.sockets)
        assert host["reused"] == seen.requests - len(seen.sockets)
        assert sum(host["released"].values()) == seen.requests
        assert host["closed"]["server"] == seen.paths["/close"]
        assert host["acquired"] == host["waiting"] == 0
        assert host["limit"] == 2
        assert host["open"] == host["idle"]
    assert seen_a.paths == {"/small": 4, "/big": 4, "/close": 4}
    assert stats["requests"] == seen_a.requests + seen_b.requests
    assert stats["limit_per_host"] == 2


async def test_crawl_plain_report(
    make_target: Callable[[], Awaitable[Target]],
) -> None:
    (a, seen_a), (b, seen_b) = await make_target(), await make_target()
    options = CrawlOptions(
        urls=(URL(url(a, "/small")), URL(url(b, "/error"))),
        limit_per_host=2,
        requests_per_url=3,
    )
    out = StringIO()

    assert await run_crawl(options, out) == 0

    text = out.getvalue()
    assert "errors: 0" in text
    assert f"{seen_a.requests} x 200, {seen_b.requests} x 500" in text
    hosts = table(text, "per host")
    columns = HOST_HEADERS[1:9]  # acquired ... reused
    for server, seen in ((a, seen_a), (b, seen_b)):
        row = dict(zip(columns, map(int, hosts[key_of(server)][:8]), strict=True))
        assert row["requests"] == seen.requests
        assert row["created"] == len(seen.sockets)
    total = dict(zip(columns[5:], map(int, hosts["total"][5:8]), strict=True))
    assert total["requests"] == seen_a.requests + seen_b.requests
    # Every request went out with its socket alive, so the reuse histogram
    # (requests: sockets) matches the server's view of client sockets.
    histogram = table(text, "socket reuse (requests served by each local socket)")
    served = Counter(n for seen in (seen_a, seen_b) for n in seen.sockets.values())
    rows = {int(k): int(v[0]) for k, v in histogram.items() if k.isdigit()}
    assert rows == served


async def test_crawl_counts_network_errors(
    make_target: Callable[[], Awaitable[Target]],
) -> None:
    a, seen_a = await make_target()
    dead = f"http://127.0.0.1:{dead_port()}/nothing"
    options = CrawlOptions(urls=(URL(url(a, "/small")), URL(dead)), requests_per_url=2)
    out, err = StringIO(), StringIO()

    status = await run_crawl(options, out, as_json=True, err=err)

    assert status == 1
    stats = json.loads(out.getvalue())
    dead_key = str(PoolKey("127.0.0.1", URL(dead).port or 0, False))
    assert stats["hosts"][dead_key]["connect_errors"] == 2
    assert stats["hosts"][dead_key]["created"] == 0
    assert stats["hosts"][key_of(a)]["requests"] == seen_a.requests == 2
    assert "errors: 2" in err.getvalue()
    assert f"error (x2): {dead}: ClientConnectorError" in err.getvalue()

    plain = StringIO()
    assert await run_crawl(options, plain) == 1
    endings = table(plain.getvalue(), "how acquisitions ended, why connections closed")
    assert endings[dead_key][-1] == "connect_error=2"


async def test_crawl_never_prints_url_credentials(
    make_target: Callable[[], Awaitable[Target]],
) -> None:
    a, seen_a = await make_target()
    dead = f"http://user:s3cret@127.0.0.1:{dead_port()}/"
    options = CrawlOptions(urls=(URL(url(a, "/small")).with_user("u"), URL(dead)))
    out = StringIO()
    assert await run_crawl(options, out) == 1
    assert seen_a.requests == 1
    assert "s3cret" not in out.getvalue()
    assert "user:" not in out.getvalue()
    assert "u@" not in out.getvalue()


async def test_crawl_command_in_a_subprocess(
    make_target: Callable[[], Awaitable[Target]],
) -> None:
    a, seen_a = await make_target()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioconnpool",
        "crawl",
        "--json",
        "--requests-per-url=3",
        "--limit=1",
        url(a, "/small"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    stats = json.loads(stdout)
    assert stats["requests"] == seen_a.requests == 3
    assert stats["limit"] == 1
    assert stats["created"] == len(seen_a.sockets)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["ftp://example.org/x"], "'ftp://example.org/x'"),
        (["http://"], "'http://'"),
        (["relative/path"], "'relative/path'"),
        (["http://[::1"], "'http://[::1'"),
        (["http://u:pw@[::1"], "'http://***@[::1'"),
    ],
)
def test_crawl_rejects_bad_urls(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc_info:
        main(["crawl", *argv])
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument URL" in err
    assert named in err
    assert "pw" not in err


def test_crawl_rejects_a_bad_limit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["crawl", "--limit=-1", "http://127.0.0.1:1/"])
    assert "--limit" in capsys.readouterr().err


# ------------------------------------------------------------------ export


async def _busy_pool(
    server: TestServer, make_session: Build
) -> tuple[PoolConnector, aiohttp.ClientResponse]:
    """Three hosts served, and a response still held (an acquired connection)."""
    session, conn = make_session(limit_per_host=2)
    for host in ("a.test", "b.test", "c.test"):
        async with session.get(url(server, "/small", host=host)) as resp:
            await resp.read()
    held = await session.get(url(server, "/big", host="d.test"))
    return conn, held


def _check_round_trip(obj: object) -> dict[str, Any]:
    d = stats_to_dict(obj)
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    names = [f.name for f in dataclasses.fields(obj)]  # type: ignore[arg-type]
    assert list(d)[: len(names)] == names
    return d


def _check_counters(d: Mapping[str, Any], h: HostStats | PoolStats) -> None:
    for name in ("acquired", "idle", "connecting", "waiting", "open", "requests"):
        assert d[name] == getattr(h, name), name
    assert d["released"] == dict(h.released)
    assert d["closed"] == dict(h.closed)


async def test_to_dict_round_trips(server: TestServer, make_session: Build) -> None:
    conn, held = await _busy_pool(server, make_session)
    stats = conn.stats()
    assert stats.acquired == 1  # the held /big response

    d = _check_round_trip(stats)
    assert stats.to_dict() == d  # the public method is the same serializer
    _check_counters(d, stats)
    assert d["limit_per_host"] == 2
    assert set(d["hosts"]) == {str(key) for key in stats.hosts}
    for key, host in stats.hosts.items():
        _check_counters(d["hosts"][str(key)], host)
    _check_counters(d["forgotten"], stats.forgotten)

    one = conn.stats(url(server, "/", host="d.test"))
    _check_counters(_check_round_trip(one), one)
    assert one.to_dict() == stats_to_dict(one)

    infos = conn.connections()
    assert infos
    for info in infos:
        di = _check_round_trip(info)
        assert info.to_dict() == di
        assert di["key"] == str(info.key)
        assert di["state"] == info.state
        assert di["local"] == (None if info.local is None else list(info.local))
        assert di["requests"] == info.requests
    held.release()


@dataclasses.dataclass(frozen=True)
class FutureStats:
    """Stands for fields the stats types may grow: generic handling."""

    rejected: int
    bounds: tuple[float, ...]
    by_key: Mapping[PoolKey, int]
    info: ConnectionInfo | None = None

    @property
    def doubled(self) -> int:
        return 2 * self.rejected


def test_to_dict_is_generic() -> None:
    key = PoolKey("::1", 8443, True)
    d = stats_to_dict(
        FutureStats(
            rejected=3, bounds=(0.5, math.inf, math.nan), by_key={key: 7}, info=None
        )
    )
    assert d == {
        "rejected": 3,
        "bounds": [0.5, "+Inf", None],
        "by_key": {"https://[::1]:8443": 7},
        "info": None,
        "doubled": 6,
    }
    json.dumps(d, allow_nan=False)


def test_to_dict_refuses_what_it_cannot_write() -> None:
    with pytest.raises(TypeError, match=r"takes a PoolStats"):
        stats_to_dict({"requests": 1})

    @dataclasses.dataclass
    class Odd:
        tags: frozenset[str]

    with pytest.raises(TypeError, match=r"Odd\.tags is a frozenset"):
        stats_to_dict(Odd(frozenset({"x"})))


# ------------------------------------------------------------------ render


async def test_plain_render_shows_every_host(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session()
    hosts = [f"h{i}.test" for i in range(12)]
    for host in hosts:
        async with session.get(url(server, "/small", host=host)) as resp:
            await resp.read()
    stats = conn.stats()

    text = to_text(pool_blocks(stats))
    rows = table(text, "per host")
    assert set(rows) == {str(key) for key in stats.hosts} | {"total"}
    assert len(rows) == len(hosts) + 1
    assert int(rows["total"][5]) == stats.requests == len(hosts)

    short = table(to_text(pool_blocks(stats, max_rows=5)), "per host")
    assert len(short) == 5 + 2  # five hosts, "... N more hosts", total
    assert "... 7 more hosts" in short


async def test_live_view_on_a_forced_terminal(
    make_target: Callable[[], Awaitable[Target]],
) -> None:
    """The rich path, as on a terminal, without one: a console on a StringIO."""
    a, seen_a = await make_target()
    screen = StringIO()
    console = Console(file=screen, force_terminal=True, width=140, height=40)
    options = CrawlOptions(urls=(URL(url(a, "/big")),), requests_per_url=6)

    assert await run_crawl(options, StringIO(), console=console) == 0

    drawn = screen.getvalue()
    assert "\x1b[" in drawn  # terminal control codes: the live view ran
    assert "6/6" in drawn  # the progress bar, complete (MofN column)
    assert key_of(a) in drawn
    # The final report, as rich tables.
    assert "how acquisitions ended, why connections closed" in drawn
    assert "socket reuse" in drawn
    assert seen_a.requests == 6


class FakeTerminal(StringIO):
    def isatty(self) -> bool:
        return True


def test_live_view_needs_a_terminal_and_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _console(FakeTerminal(), plain=False) is not None
    assert _console(FakeTerminal(), plain=True) is None
    assert _console(StringIO(), plain=False) is None
    monkeypatch.setitem(sys.modules, "rich", None)  # as if not installed
    assert _console(FakeTerminal(), plain=False) is None
