"""Smoke tests of the benchmarks in bench/: they run, and report everything.

No timing is asserted: the figures depend on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from aioconnpool import compiled_core
from tests.bench_scripts import BENCH_DIR, load_bench_script

BENCH = BENCH_DIR / "core_scaling.py"

SCENARIOS = (
    "1. release with many keys waiting",
    "2. hot key",
    "3. stats snapshot",
    "4. memory",
)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench_script("core_scaling")


def test_tiny_run_reports_every_scenario(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--tiny", "--no-write"]) == 0
    out = capsys.readouterr().out
    for title in SCENARIOS:
        assert title in out
    assert "results written" not in out


def test_tiny_run_writes_json(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "results" / "core_scaling.json"
    assert bench.main(["--quick", "--tiny", "--output", str(target)]) == 0
    capsys.readouterr()
    data = json.loads(target.read_text(encoding="utf-8"))
    for field in ("python", "platform", "cpu_count", "date", "command"):
        assert field in data
    assert data["config"]["mode"] == "tiny"
    for scenario in ("release_with_waiters", "hot_key", "stats_snapshot", "memory"):
        rows = data[scenario]
        assert [row["keys"] for row in rows] == data["config"]["keys"]
    for row in data["stats_snapshot"]:
        assert row["hosts_in_snapshot"] == row["keys"]
        for way in ("snapshot", "scrape", "read_all"):
            assert len(row[way]["ms"]) == data["config"]["snapshot_repeats"]
            assert row[way]["ms_median"] > 0
    # Every key drained in the memory scenario leaves no live key behind.
    assert all(row["live_keys_after_drain"] == 0 for row in data["memory"])
    assert not list(target.parent.glob("*.tmp"))


# ------------------------------------------------------------ socket benchmarks

SOCKET_SECTIONS = (
    "1. hot host",
    "2. crawler sweep",
    "3. queued sweep",
    "4. fairness",
    "4a. burst",
    "4b. sustained",
    "5. CONTROL, NOT A HEADLINE FIGURE",
    "targets (issue 16)",
    "diagnostic only, not targets",
)
SOCKET_CLIENTS = {
    "hot": {"aiohttp", "aioconnpool", "httpx"},
    "crawl": {"aiohttp", "aioconnpool"},
    "queued": {"aiohttp", "aioconnpool", "httpx"},
    "burst": {"aiohttp", "aioconnpool"},
    "sustained": {"aiohttp", "aioconnpool"},
    "queued_gc_off": {"aiohttp", "aioconnpool"},
}


@pytest.fixture(scope="module")
def sockets_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, dict[str, Any], Path]:
    """One tiny run of bench/sockets.py (a few seconds), shared by the tests."""
    sockets = load_bench_script("sockets")
    target = tmp_path_factory.mktemp("results") / "sockets.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = sockets.main(["--tiny", "--output", str(target)])
    assert code == 0, out.getvalue()
    return out.getvalue(), json.loads(target.read_text(encoding="utf-8")), target


def test_sockets_tiny_run_reports_every_section_and_row(
    sockets_run: tuple[str, dict[str, Any], Path],
) -> None:
    out, data, _ = sockets_run
    for title in SOCKET_SECTIONS:
        assert title in out
    cfg = data["config"]
    rows = [f"N={cfg['hot_n']:,}", "floor", "burst", "sustained"]
    rows += [f"K={k:,}" for k in cfg["crawl_keys"]]
    rows += [f"N={n:,}" for n in cfg["queued_n"]]
    for row in rows:
        assert row in out
    assert "FAILED" not in out
    assert "skipped" not in out
    for target in ("hot host N=", "crawl K=", "vs floor", "queued N=", ", calls"):
        assert target in out
    assert "calls/req aiohttp / ours" in out
    # The collector's figures, for the crawl and the queued sweep.
    for client in ("aiohttp", "aioconnpool"):
        assert f"{client} collector share" in out
        assert f"{client} req/s outside the collector" in out
    assert "httpx req/s outside the collector" in out
    assert "results written" in out
    assert "TIME_WAIT sockets at the start of a run" in out
    assert "run by run" in out
    assert "CPU/req run by run" in out
    assert ", client CPU: client CPU per request" in out
    hot = data["sections"]["hot"][0]
    assert hot["paired_cpu_ours_aiohttp"]["pairs"] >= 1
    for run in hot["clients"]["aioconnpool"]["runs"]:
        assert run["client_cpu_s"] > 0
        assert run["client_cpu_us_per_request"] > 0


def test_paired_cpu_ratios_pair_runs_in_order_and_skip_failed_ones() -> None:
    sockets = load_bench_script("sockets")

    def runs(*cpu_s: float | None) -> dict[str, Any]:
        return {
            "runs": [
                {"status": "failed"}
                if c is None
                else {"status": "ok", "requests": 1000, "client_cpu_s": c}
                for c in cpu_s
            ]
        }

    pairs = sockets.paired_cpu_ratios(
        runs(0.11, 0.09, None, 0.3), runs(0.1, 0.1, 1, 0.2)
    )
    assert pairs is not None
    assert pairs["pairs"] == 3
    assert pairs["ratios"] == pytest.approx([1.1, 0.9, 1.5])
    assert pairs["median"] == pytest.approx(1.1)
    assert (pairs["min"], pairs["max"]) == pytest.approx((0.9, 1.5))
    assert sockets.paired_cpu_ratios(runs(None), runs(0.1)) is None
    assert sockets.paired_cpu_ratios(None, runs(0.1)) is None
    # Results written before client_cpu_s: from the CPU share and the time.
    old = {"status": "ok", "requests": 100, "client_cpu_share": 0.5, "elapsed_s": 2.0}
    assert sockets.cpu_per_request(old) == pytest.approx(0.01)


def test_socket_workload_counts_bytecodes(capsys: pytest.CaptureFixture[str]) -> None:
    workloads = load_bench_script("socket_workloads")
    spec = {"workload": "hot", "client": "aioconnpool", "port": 0, "n": 40}
    spec |= {"concurrency": 4, "count_bytecodes": True}
    assert workloads.main([json.dumps(spec)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] == 40
    assert result["bytecodes_per_request"] > 100
    by_function = result["bytecodes_by_function"]
    assert 0 < len(by_function) <= 40
    assert any("aioconnpool/_aiohttp/release_paths.py" in name for name in by_function)
    # The compiled core runs no bytecode of its own.
    in_core = any("aioconnpool/_core/releases.py" in name for name in by_function)
    assert in_core is not compiled_core()
    assert result["gc"]["collections"] == [0, 0, 0]
    assert "calls" not in result


def test_counting_runs_get_a_server_that_keeps_idle_connections() -> None:
    # A traced run is slow enough for the usual 2 s idle timeout to close
    # connections as they are reused: the reconnections would be counted.
    workloads = load_bench_script("socket_workloads")
    spec = workloads.Spec(workload="hot", client="aiohttp", port=0)
    assert workloads._idle_timeout(spec) == workloads.IDLE_TIMEOUT == 2.0
    for flag in ("count_calls", "count_bytecodes"):
        for workload in ("hot", "queued"):
            counted = replace(spec, workload=workload, **{flag: True})
            assert workloads._idle_timeout(counted) == 600.0
        # The crawl relies on 2 s to stay within the descriptor limit.
        crawl = replace(spec, workload="crawl", **{flag: True})
        assert workloads._idle_timeout(crawl) == 2.0


def test_instruction_counts_are_read_from_callgrind_summaries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    instructions = load_bench_script("instructions")
    out = tmp_path / "callgrind.out"
    out.write_text("events: Ir\nfl=a.c\nfn=f\n3 10\nsummary: 123456789\ntotals: 1\n")
    assert instructions.instructions_of(out) == 123_456_789
    out.write_text("events: Ir\n")
    with pytest.raises(RuntimeError, match="no 'summary:' line"):
        instructions.instructions_of(out)
    with pytest.raises(SystemExit):
        instructions.main(["--small", "400", "--large", "200"])
    assert "need 0 < --small < --large, got 400, 200" in capsys.readouterr().err


def test_paired_ratios_pair_runs_in_order_and_skip_failed_ones() -> None:
    sockets = load_bench_script("sockets")

    def runs(*rates: float | None) -> dict[str, Any]:
        return {
            "runs": [
                {"status": "failed"} if r is None else {"status": "ok", "req_per_s": r}
                for r in rates
            ]
        }

    pairs = sockets.paired_ratios(runs(110, 90, None, 300), runs(100, 100, 50, 200))
    assert pairs == {"median": 1.1, "min": 0.9, "max": 1.5, "pairs": 3}
    assert sockets.paired_ratios(runs(None), runs(100)) is None
    assert sockets.paired_ratios(None, runs(100)) is None


def test_target_values_are_never_rounded_across_their_goal() -> None:
    sockets = load_bench_script("sockets")

    def shown(value: float | None, goal: float = 1.0) -> str:
        target = {"value": value, "goal": goal, "holds": None}
        return str(sockets._value(target))

    assert shown(0.98) == "0.98"
    assert shown(1.02) == "1.02"
    assert shown(0.99999) == "0.99999"  # "1.00" beside "FAILS" misled
    assert shown(0.9951) == "0.99510"
    assert shown(0.84999, goal=0.85) == "0.84999"
    assert shown(1.004) == "1.00"  # holds, and reads so
    assert shown(None) == "-"


def test_time_wait_count_is_read_from_sockstat(tmp_path: Path) -> None:
    machine = load_bench_script("harness.machine")
    sockstat = tmp_path / "sockstat"
    sockstat.write_text(
        "sockets: used 8\nTCP: inuse 3 orphan 0 tw 4711 alloc 5 mem 2\n"
        "UDP: inuse 0 mem 0\n",
        encoding="ascii",
    )
    assert machine.tcp_time_wait_sockets(str(sockstat)) == 4711
    sockstat.write_text("UDP: inuse 0 mem 0\n", encoding="ascii")
    assert machine.tcp_time_wait_sockets(str(sockstat)) is None
    assert machine.tcp_time_wait_sockets(str(tmp_path / "missing")) is None


def test_sockets_tiny_run_writes_json(
    sockets_run: tuple[str, dict[str, Any], Path],
) -> None:
    _, data, target = sockets_run
    for field in (
        "python",
        "platform",
        "cpu_count",
        "date",
        "command",
        "versions",
        "load_average",
    ):
        assert field in data
    assert data["config"]["mode"] == "tiny"
    sections = data["sections"]
    assert set(sections) == set(SOCKET_CLIENTS)
    largest = max(data["config"]["crawl_keys"])
    assert [r["row"] for r in sections["crawl"]] == [
        *(f"K={k:,}" for k in data["config"]["crawl_keys"]),
        "floor",
        f"{largest:,} hosts, force_close",
    ]
    # The decomposition row: ours only, the largest crawl, no keep-alive.
    [decomposed] = [r for r in sections["crawl"] if "force_close" in r["row"]]
    assert set(decomposed["clients"]) == {"aioconnpool"}
    assert decomposed["clients"]["aioconnpool"]["spec"]["force_close"] is True
    assert decomposed["clients"]["aioconnpool"]["spec"]["keys"] == largest
    assert decomposed["ratio_ours_aiohttp"] is None
    assert decomposed["ours_vs_aiohttp_floor"] > 0
    # The gc-off control repeats the queued sweep's rows, with the collector off.
    queued_rows = [f"N={n:,}" for n in data["config"]["queued_n"]]
    assert [r["row"] for r in sections["queued"]] == queued_rows
    assert [r["row"] for r in sections["queued_gc_off"]] == queued_rows
    for name, rows in sections.items():
        for row in rows:
            if row is not decomposed:
                assert set(row["clients"]) == SOCKET_CLIENTS[name]
                assert row["ratio_ours_aiohttp"] is not None
                # --tiny: one run each, so the one pair's ratio is the ratio.
                pairs = row["paired_ours_aiohttp"]
                assert pairs["pairs"] == 1
                assert pairs["median"] == pytest.approx(row["ratio_ours_aiohttp"])
            for summary in row["clients"].values():
                assert summary["status"] == "ok"
                [run] = summary["runs"]  # --tiny: one run each
                # Every request was answered, by the loopback server.
                assert run["ok"] == run["requests"] > 0
                assert run["errors"] == {}
                assert summary["median_req_per_s"] > 0
                _check_collector(run, summary)
                tw = run["tcp_time_wait_before"]
                assert tw is None or (isinstance(tw, int) and tw >= 0)
                # The collector is off in the control's runs only.
                assert summary["spec"]["gc"] is (name != "queued_gc_off")
                if name == "queued_gc_off":
                    assert run["gc"]["collections"] == [0, 0, 0]
    # The fairness runs timed the wait of every request, on both connectors.
    for name in ("burst", "sustained"):
        for summary in sections[name][0]["clients"].values():
            [run] = summary["runs"]
            wait = run["wait"]
            assert wait["all"]["count"] == run["requests"]
            assert (
                wait["big host"]["count"] + wait["small hosts"]["count"]
                == (run["requests"])
            )
    # aioconnpool's own stats agree with the number of requests made.
    crawl_ours = sections["crawl"][0]["clients"]["aioconnpool"]["runs"][0]
    assert crawl_ours["pool"]["requests"] == crawl_ours["requests"]
    # The real checks come first and are never diagnostics; the diagnostics
    # follow, each marked as such.
    checks = data["targets"]
    last_key = f"K={data['config']['crawl_keys'][-1]:,}"
    hot = f"hot host N={data['config']['hot_n']:,}"
    real = [hot, f"{hot}, calls"]
    for n in data["config"]["queued_n"]:
        real += [f"queued N={n:,}", f"queued N={n:,}, calls"]
    real.append(f"crawl {last_key} vs floor")
    assert [t["target"] for t in checks[: len(real)]] == real
    assert not any(t["diagnostic"] for t in checks[: len(real)])
    # Every target was measured: pairs, floor and counted calls alike.
    assert all(t["value"] is not None for t in checks[: len(real)])
    # One counting run per client and row, kept apart from the timed runs:
    # the collector off, the calls counted over every request.
    for row in (*sections["hot"], *sections["queued"]):
        for client in ("aiohttp", "aioconnpool"):
            summary = row["clients"][client]
            count = summary["count"]
            assert count["status"] == "ok"
            assert count["ok"] == count["requests"] > 0
            assert count["gc"]["collections"] == [0, 0, 0]
            assert count["calls"] >= count["requests"]
            assert summary["calls_per_request"] == pytest.approx(
                count["calls"] / count["requests"]
            )
            assert all("calls" not in run for run in summary["runs"])
        assert "calls_per_request" not in row["clients"]["httpx"]
        assert "count" not in row["clients"]["httpx"]
    for name in ("crawl", "burst", "sustained", "queued_gc_off"):
        for row in sections[name]:
            assert all("count" not in s for s in row["clients"].values())
    diagnostics = checks[len(real) :]
    # The client CPU per request (hot host, each queued N), then the steps.
    assert len(diagnostics) == 1 + len(data["config"]["queued_n"]) + 4
    for check in diagnostics:
        assert check["diagnostic"] is True
        assert check["target"].startswith("diagnostic: ")
        assert check["value"] is not None
    assert not list(target.parent.glob("*.tmp"))


def _check_collector(run: dict[str, Any], summary: dict[str, Any]) -> None:
    """A run's collector figures are present and sane (no timing asserted)."""
    gc_figures = run["gc"]
    assert len(gc_figures["collections"]) == len(gc_figures["seconds"]) == 3
    for count, seconds in zip(
        gc_figures["collections"], gc_figures["seconds"], strict=True
    ):
        assert isinstance(count, int)
        assert count >= 0
        assert seconds >= 0.0
        assert count or seconds == 0.0  # no time without a collection
    assert 0.0 <= gc_figures["share"] <= 1.0
    # Time outside the collector is at most the run's time.
    assert run["req_per_s_outside_gc"] >= run["req_per_s"]
    assert summary["median_gc_share"] == gc_figures["share"]
    assert summary["median_req_per_s_outside_gc"] == run["req_per_s_outside_gc"]


def _answered(spec: Any) -> dict[str, Any]:
    """A made-up run in which every request was answered, at 1 req/s."""
    return {
        "status": "ok",
        "requests": spec.n,
        "ok": spec.n,
        "errors": {},
        "req_per_s": 1.0,
        "server_cpu_share": 0.0,
    }


def test_sockets_budget_skips_larger_sizes() -> None:
    """A client over budget is stopped and skips the larger N; others go on."""
    sockets = load_bench_script("sockets")
    workloads = load_bench_script("socket_workloads")
    cfg = sockets.TINY
    cells = sockets.plan(cfg, port=1)
    calls: list[tuple[str, str, int]] = []

    def run(spec: Any) -> dict[str, Any]:
        # Neither the gc-off control nor the call counts are what this test
        # is about.
        if spec.gc and not spec.count_calls:
            calls.append((spec.workload, spec.client, spec.n))
        if spec.workload == "queued" and spec.client == "httpx":
            return {"status": "over_budget", "budget_s": 1.0, "done": 3}
        return _answered(spec)

    sockets.execute(
        cells, replace(cfg, repeats=2, paired_repeats=2), lambda msg: None, run
    )
    small, large = cfg.queued_n
    httpx_queued = [c for c in calls if c[:2] == ("queued", "httpx")]
    assert httpx_queued == [("queued", "httpx", small)]
    assert calls.count(("queued", "aiohttp", large)) == 2
    sections = sockets.build_results(cells)
    texts = [sockets._rate_text(row["clients"]["httpx"]) for row in sections["queued"]]
    assert texts[0] == f"skipped: >1 s, 3/{small:,} done"
    assert texts[1].startswith("skipped (")
    assert isinstance(workloads.Spec.from_json(cells[0].spec.to_json()), workloads.Spec)


def test_sockets_collector_figures_feed_only_the_diagnostics() -> None:
    """The queued targets are checked on req/s with the collector on, pair by
    pair, and on counted calls; the diagnostics use req/s outside the
    collector and the gc-off control."""
    sockets = load_bench_script("sockets")
    cfg = sockets.TINY
    large = cfg.queued_n[-1]
    cells = sockets.plan(cfg, port=1)

    def run(spec: Any) -> dict[str, Any]:
        # Made-up figures: with the collector on, the queued sweep halves from
        # the small N to the large one, all of it in the collector.
        rate, gc_share = 100.0, 0.0
        if spec.workload == "queued" and spec.n == large:
            rate = 95.0 if not spec.gc else 50.0
            gc_share = 0.5 if spec.gc else 0.0
        return {
            "status": "ok",
            "requests": spec.n,
            "ok": spec.n,
            "errors": {},
            "req_per_s": rate,
            "server_cpu_share": 0.0,
            "gc": {"collections": [0, 0, 0], "seconds": [0.0] * 3, "share": gc_share},
            "req_per_s_outside_gc": rate / (1.0 - gc_share),
            # Counted calls: only in the counting runs.
            **(
                {"calls_per_request": 100.0 if spec.client == "aiohttp" else 90.0}
                if spec.count_calls
                else {}
            ),
        }

    sockets.execute(cells, cfg, lambda msg: None, run)
    sections = sockets.build_results(cells)
    [large_row] = [r for r in sections["queued"] if r["row"] == f"N={large:,}"]
    ours = large_row["clients"]["aioconnpool"]
    assert ours["median_gc_share"] == 0.5
    assert ours["median_req_per_s_outside_gc"] == 100.0
    checks = {t["target"]: t for t in sockets.targets(sections)}
    # Both clients got the same made-up rates: every pair's ratio is 1, so
    # the collector's halving of the large N fails no target.
    for n in cfg.queued_n:
        queued = checks[f"queued N={n:,}"]
        assert (queued["value"], queued["holds"], queued["diagnostic"]) == (
            1.0,
            True,
            False,
        )
        counted = checks[f"queued N={n:,}, calls"]
        assert counted["value"] == pytest.approx(100.0 / 90.0)
        assert counted["holds"] is True
        assert "aiohttp 100.0, ours 90.0" in counted["rule"]
    assert ours["calls_per_request"] == 90.0
    for client in ("aioconnpool", "aiohttp"):
        outside = checks[
            f"diagnostic: queued sweep, req/s outside the collector, {client}"
        ]
        assert (outside["value"], outside["diagnostic"]) == (1.0, True)
        off = checks[
            f"diagnostic: gc-off control (queued sweep, gc disabled), {client}"
        ]
        assert (off["value"], off["diagnostic"]) == (0.95, True)
    text = sockets._collector_table(sections["queued"], ("aioconnpool",), outside=True)
    assert "aioconnpool collector share" in text
    assert "50%" in text


def test_sockets_pairs_run_back_to_back_in_turn() -> None:
    """In the paired sections, aiohttp and aioconnpool run back to back, each
    first in every other repeat; httpx runs after the pair, only in the first
    ``repeats`` repeats; the other sections keep their rotating order."""
    sockets = load_bench_script("sockets")
    cfg = replace(sockets.TINY, repeats=2, paired_repeats=4, queued_n=(50,))
    cells = sockets.plan(cfg, port=1)
    order: list[tuple[str, str]] = []

    def run(spec: Any) -> dict[str, Any]:
        if not spec.count_calls and spec.gc:
            order.append((spec.workload, spec.client))
        return _answered(spec)

    sockets.execute(cells, cfg, lambda msg: None, run)
    pair, flipped = ["aiohttp", "aioconnpool"], ["aioconnpool", "aiohttp"]
    for workload in ("hot", "queued"):
        clients = [client for w, client in order if w == workload]
        assert clients == [*pair, "httpx", *flipped, "httpx", *pair, *flipped], workload
    burst = [client for w, client in order if w == "burst"]
    assert burst == ["aiohttp", "aioconnpool", "aioconnpool", "aiohttp"]
    sections = sockets.build_results(cells)
    assert sections["hot"][0]["paired_ours_aiohttp"]["pairs"] == 4


def test_sockets_modes_follow_issue_16() -> None:
    """Pairs on the hot host and the queued sweep; the crawl up to 15,000."""
    sockets = load_bench_script("sockets")
    assert [m.paired_repeats for m in sockets.MODES] == [15, 3, 1]
    assert sockets.FULL.repeats == 3
    assert sockets.FULL.crawl_keys == (1, 10, 1_000, 5_000, 15_000)
    assert sockets.FULL.crawl_n == 20_000
    assert sockets.FULL.queued_n == (1_000, 10_000, 50_000)
    cfg = replace(sockets.TINY, repeats=2, paired_repeats=3)
    cells = sockets.plan(cfg, port=1)
    counted: list[tuple[str, str, str]] = []

    def run(spec: Any) -> dict[str, Any]:
        if spec.count_calls:
            # A counting run that fails is reported, not dropped.
            if spec.workload == "hot" and spec.client == "aioconnpool":
                return {"status": "failed", "returncode": 1, "stderr": "boom"}
            return {"status": "ok", "calls": 10 * spec.n, "calls_per_request": 10.0}
        return _answered(spec)

    messages: list[str] = []
    sockets.execute(cells, cfg, messages.append, run)
    for cell in cells:
        paired = cell.section in ("hot", "queued") and cell.client != "httpx"
        timed = 3 if paired else 2
        assert len(cell.runs) == timed, (cell.section, cell.row, cell.client)
        assert all(r["status"] == "ok" for r in cell.runs)
        if cell.count is not None:
            counted.append((cell.section, cell.row, cell.client))
    rows = [("hot", f"N={cfg.hot_n:,}")]
    rows += [("queued", f"N={n:,}") for n in cfg.queued_n]
    assert counted == [
        (section, row, client)
        for section, row in rows
        for client in ("aiohttp", "aioconnpool")
    ]
    assert "FAILED: boom" in messages
    sections = sockets.build_results(cells)
    [hot] = sections["hot"]
    assert hot["paired_ours_aiohttp"]["pairs"] == 3
    assert sockets._calls_text(hot) == "10.0 / FAILED"
    assert sockets._calls_text(sections["queued"][0]) == "10.0 / 10.0"
    assert hot["clients"]["aioconnpool"]["status"] == "ok"  # its timed runs
    checks = {t["target"]: t for t in sockets.targets(sections)}
    calls = checks[f"hot host N={cfg.hot_n:,}, calls"]
    assert (calls["value"], calls["holds"]) == (None, None)
    assert "3 pairs, range 1.00-1.00" in checks[f"hot host N={cfg.hot_n:,}"]["rule"]


def test_percentiles_are_nearest_rank() -> None:
    timing = load_bench_script("harness.timing")
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    stats = timing.percentiles(values)
    assert stats == {"count": 100, "p50_ms": 50.0, "p99_ms": 99.0, "max_ms": 100.0}
    assert timing.percentiles([])["count"] == 0


async def _exchange(port: int, request: bytes) -> tuple[bytes, bool]:
    """Send ``request`` up to twice on one connection (stopping at an answer
    with ``Connection: close``); the answers, and whether the server closed
    the connection after them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        answers = b""
        for _ in range(2):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            answers += head + await reader.readexactly(length)
            if b"connection: close" in head.lower():
                break
        closed = await reader.read() == b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return answers, closed


def test_loopback_server_keep_alive_and_close() -> None:
    server_mod = load_bench_script("harness.server")

    async def scenario(port: int) -> None:
        get = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"
        post = b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello"
        close = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
        for request in (get, post):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(2):  # keep-alive: two answers on one connection
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 OK")
                assert b"connection: close" not in head.lower()
                assert await reader.readexactly(2) == b"ok"
            writer.close()
            await writer.wait_closed()
        answers, closed = await _exchange(port, close)
        assert answers.count(b"HTTP/1.1 200 OK") == 1
        assert closed
        info = await server_mod.server_info(port)
        assert info["requests"] == 6  # 2 GET, 2 POST, 1 close, this one
        for _ in range(100):  # the server sees our closes in its own time
            if info["open"] == 1:  # only the info request's own connection
                break
            await asyncio.sleep(0.01)
            info = await server_mod.server_info(port)
        assert info["open"] == 1

    with server_mod.ServerProcess() as server:
        assert server.port > 0
        asyncio.run(scenario(server.port))


def test_run_all_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    run_all = load_bench_script("run_all")
    assert run_all.main(["--tiny", "--no-write"]) == 0
    out = capsys.readouterr().out
    for name in run_all.SCRIPTS:
        assert f"{name}: exit 0" in out


def test_fleet_bench_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bench/fleet.py runs against a real Redis and reports every part; the
    processes sharing a fleet never exceeded its limit at the server."""
    fleet = load_bench_script("fleet")
    target = tmp_path / "fleet.json"
    assert fleet.main(["--tiny", "--output", str(target)]) == 0
    out = capsys.readouterr().out
    assert "fleet on vs off" in out
    assert "Fairness" in out
    data = json.loads(target.read_text())
    for name in ("hot", "many_hosts"):
        part = data["overhead"][name]
        assert part["ratio_min"] <= part["ratio_median"] <= part["ratio_max"]
        assert part["round_trips_per_request"] <= 2  # one per acquire and release
    for run in data["processes"]["scaling"]:
        assert 1 <= run["peak_per_host"] <= run["fleet_limit"]
    fair = data["processes"]["fairness"]
    assert fair["peak_per_host"] <= 2
    assert len(fair["per_process"]) == 4
    for p in fair["per_process"]:
        cdf = p["latency_cdf_ms"]
        assert len(cdf) == 101
        assert cdf == sorted(cdf)
    # The docs' charts, drawn from these results and the committed sockets'.
    charts = load_bench_script("charts")
    results = tmp_path / "results"
    results.mkdir()
    (results / "fleet.json").write_text(target.read_text())
    sockets = BENCH_DIR / "results" / "sockets.json"
    (results / "sockets.json").write_text(sockets.read_text())
    out_dir = tmp_path / "img"
    assert charts.main(["--results", str(results), "--out", str(out_dir)]) == 0
    drawn = sorted(p.name for p in out_dir.iterdir())
    assert drawn == ["bench-fairness.svg", "bench-hosts.svg", "bench-queued.svg"]
    for path in out_dir.iterdir():
        svg = path.read_text()
        assert svg.lstrip().startswith("<?xml"), path.name
        assert "<svg" in svg, path.name
        assert "requests" in svg or "process 1" in svg, path.name  # labels drawn


def test_heap_bench_counts_kept_objects_and_full_collections(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """bench/heap.py: both parts run for both clients and report their counts
    (each child a process of its own, against a loopback server)."""
    heap = load_bench_script("heap")
    assert heap.main(["kept", "--hosts", "20", "--types", "5"]) == 0
    kept = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["client"] for r in kept] == ["aiohttp", "aioconnpool"]
    for r in kept:
        assert r["per_host"] > 0
        assert r["types_per_host"]
    # Every request left its connection idle: 50 warm-up hosts, then 20.
    assert kept[1]["pool"]["idle_at_end"] == heap.WARM_HOSTS + 20
    args = ["crawl", "--n", "300", "--keys", "200", "--clients", "floor,aioconnpool"]
    assert heap.main(args) == 0
    crawl = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["client"], r["force_close"], r["keys"]) for r in crawl] == [
        ("aiohttp", True, 1),
        ("aioconnpool", False, 200),
    ]
    for r in crawl:
        assert r["ok"] == 300
        assert len(r["collections"]) == 3
        assert r["peak_at_full"] == max(r["at_full"], default=0)
