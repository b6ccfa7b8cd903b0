"""``aioconnpool demo`` runs against its loopback server and reports every host.

``main()`` runs its own event loop with ``asyncio.run``, so those tests are
plain (sync) ones; the live view is driven through ``run_demo`` with a rich
console on a StringIO. Pool figures are not hard-coded: only the request
count, which the test chooses, and relations that hold whatever the
scheduling was.
"""

from __future__ import annotations

from collections import Counter
from io import StringIO

import pytest
from rich.console import Console

from aioconnpool.cli.demo import HOSTS, DemoOptions, plan_jobs, run_demo
from aioconnpool.cli.main import main
from aioconnpool.cli.render import HOST_HEADERS
from tests.conftest import table

REQUESTS = 60


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
        assert figures[host]["requests"] == planned[host]
    assert figures["total"]["requests"] == REQUESTS
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
