"""``aioconnpool demo`` runs against its loopback server and reports every host.

A plain (sync) test: ``main()`` runs its own event loop with ``asyncio.run``.
Pool figures are not hard-coded: only the request count, which the test
chooses, and relations that hold whatever the scheduling was.
"""

from __future__ import annotations

import pytest

from aioconnpool.__main__ import main
from aioconnpool._demo import HOSTS

COLUMNS = ("host", "requests", "created", "reused", "acquired", "idle")


def _host_rows(out: str) -> dict[str, dict[str, int]]:
    rows: dict[str, dict[str, int]] = {}
    for line in out.splitlines():
        cells = line.split()
        if cells and (cells[0] in HOSTS or cells[0] == "total"):
            rows[cells[0]] = {
                name: int(cell)
                for name, cell in zip(COLUMNS[1:], cells[1:], strict=False)
            }
    return rows


def test_demo_reports_every_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--requests", "60"]) == 0
    out = capsys.readouterr().out

    rows = _host_rows(out)
    assert set(HOSTS) <= set(rows)
    per_host = [rows[host] for host in HOSTS]
    assert sum(row["requests"] for row in per_host) == 60
    assert rows["total"]["requests"] == 60
    for row in per_host:
        # Every request completed: each took a new or a reused connection,
        # and gave it back before the snapshot.
        assert row["created"] + row["reused"] == row["requests"]
        assert row["acquired"] == 0
    assert "socket reuse" in out
    assert "errors: 0" in out


def test_demo_rejects_a_bad_request_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        main(["demo", "--requests", "0"])
    assert exc_info.value.code == 2
    assert "--requests" in capsys.readouterr().err
