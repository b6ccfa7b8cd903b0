"""``aioconnpool demo`` runs against its loopback server and reports every host.

``main()`` runs its own event loop with ``asyncio.run``, so those tests are
plain (sync) ones; the live view is driven through ``run_demo`` with a rich
console on a StringIO. Pool figures are not hard-coded: only the request
count, which the test chooses, and relations that hold whatever the
scheduling was.
"""

from __future__ import annotations

import re
from collections import Counter
from io import StringIO

import pytest
from rich.console import Console

from aioconnpool._aiohttp.compat import HAS_CLIENT_MIDDLEWARES
from aioconnpool.cli.demo import (
    HOSTS,
    PACED_DELAY,
    RETRY_AFTER,
    DemoOptions,
    plan_jobs,
    run_demo,
)
from aioconnpool.cli.main import main
from aioconnpool.cli.render import HOST_HEADERS
from tests.conftest import table

REQUESTS = 60
# busy.test's 429 is sent again once by backoff_middleware (aiohttp 3.12+):
# one more request in the pool's figures than the demo planned.
RETRIED = {"busy.test": 1} if HAS_CLIENT_MIDDLEWARES else {}


def counts(cell: str) -> Counter[str]:
    """``eof=3 release=1`` (or ``-``) as a Counter."""
    if cell == "-":
        return Counter()
    return Counter({k: int(v) for k, v in (p.split("=") for p in cell.split())})


@pytest.fixture(scope="module")
def demo_output() -> str:
    # One run shared by the checks below: the demo takes a moment.
    capture = StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdout", capture)
        assert main(["demo", "--requests", str(REQUESTS)]) == 0
    return capture.getvalue()


def test_no_terminal_means_plain_text(demo_output: str) -> None:
    assert "\x1b[" not in demo_output
    assert "errors: 0" in demo_output


def test_demo_reports_every_host(demo_output: str) -> None:
    rows = table(demo_output, "per host")
    assert set(rows) == {*HOSTS, "total"}
    figures = {
        host: dict(zip(HOST_HEADERS[1:9], map(int, cells[:8]), strict=True))
        for host, cells in rows.items()
    }
    per_host = [figures[host] for host in HOSTS]
    planned = Counter(job.host for job in plan_jobs(REQUESTS, seed=1))
    for host in HOSTS:
        assert figures[host]["requests"] == planned[host] + RETRIED.get(host, 0)
    assert figures["total"]["requests"] == REQUESTS + sum(RETRIED.values())
    for row in per_host:
        # Every request completed: each took a new or a reused connection,
        # and gave it back before the snapshot.
        assert row["created"] + row["reused"] == row["requests"]
        assert row["acquired"] == row["connecting"] == row["waiting"] == 0
        assert row["limit"] == 4
    assert figures["total"]["limit"] == 20


def test_demo_reports_how_acquisitions_ended(demo_output: str) -> None:
    rows = table(demo_output, "how acquisitions ended, why connections closed")
    by_host = table(demo_output, "per host")
    for host in HOSTS:
        released, closed, no_connection = rows[host]
        requests = int(by_host[host][5])
        assert counts(released).total() == requests
        assert no_connection == "-"
        if host == "close.test":
            assert counts(closed)["server"] == requests
    # Some big.test responses were released unread on purpose.
    assert counts(rows["big.test"][0])["release"] > 0


def test_demo_reuse_histogram_sees_every_socket(demo_output: str) -> None:
    rows = table(demo_output, "socket reuse (requests served by each local socket)")
    histogram = {int(k): int(v[0]) for k, v in rows.items() if k.isdigit()}
    total = table(demo_output, "per host")["total"]
    created, reused = int(total[6]), int(total[7])
    # Sampled as each request went out, every socket is seen with its count.
    assert sum(histogram.values()) == created
    assert sum(n * sockets for n, sockets in histogram.items()) == created + reused
    assert f"seen: {created} of the {created} sockets opened" in demo_output


def test_demo_shows_a_paced_host_and_a_429_host(demo_output: str) -> None:
    block = demo_output.split("politeness (", 1)[1].split("\n\n", 1)[0]
    sent = re.search(r"smallest gap between two sent: ([0-9.]+) s", block)
    assert sent is not None, block
    # The pool paces when requests start; the client writes them at once.
    assert float(sent[1]) >= PACED_DELAY - 0.005
    counters = re.search(r"paced=(\d+) pauses=(\d+)", block)
    assert counters is not None, block
    if HAS_CLIENT_MIDDLEWARES:
        pause = re.search(r"longest gap between two arrivals: ([0-9.]+) s", block)
        assert pause is not None, block
        # The pause starts when the 429 reaches the client, a moment after
        # the server's last arrival before it.
        assert float(pause[1]) >= RETRY_AFTER - 0.1
        assert "throttled=1 retried=1" in block
        assert int(counters[2]) == 1
    else:
        assert "backoff_middleware needs aiohttp >= 3.12" in block
    assert int(counters[1]) > 0


async def test_demo_live_view_on_a_forced_terminal() -> None:
    screen = StringIO()
    console = Console(file=screen, force_terminal=True, width=140, height=30)
    out = StringIO()

    assert await run_demo(DemoOptions(requests=25), out, console) == 0

    assert out.getvalue() == ""  # everything went to the console
    drawn = screen.getvalue()
    assert "\x1b[" in drawn
    assert "demo crawl" in drawn  # the progress bar's description
    assert "25/25" in drawn
    for host in HOSTS:
        assert host in drawn
    assert "socket reuse" in drawn


def test_demo_rejects_a_bad_request_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        main(["demo", "--requests", "0"])
    assert exc_info.value.code == 2
    assert "--requests" in capsys.readouterr().err
