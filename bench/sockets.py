"""Socket benchmarks: aioconnpool against aiohttp's TCPConnector and httpx.

Every request goes over real sockets to ``bench/harness/server.py``, a fast
keep-alive HTTP/1.1 server in a process of its own (so the client has a core
to itself on a 2-core machine; the server's CPU share is reported per run to
show it was not the bottleneck). Each measured run is a fresh Python process
(``bench/socket_workloads.py``) with a fresh client; runs of a row are
interleaved across clients, in a rotating order, so a change in machine load
hits them alike. Figures are medians over the repeats; ours / aiohttp is
also given run by run (repeat i of each), which cancels what the machine's
speed does between repeats. The hot host and the queued sweep, whose targets
are ratios of pairs, run 15 pairs: aiohttp and aioconnpool back to back,
each first in every other pair, and httpx only in the first 3 repeats, after
the pair (with httpx between them, as in the rotation before, the two runs
of a pair were up to 50 s apart); and one more run per
client and row counts the Python and C calls per request in the timed window
(cProfile, the collector off), for aiohttp and aioconnpool. That run is kept
apart (``count`` in the client's JSON, beside ``calls_per_request``) and out
of every median and ratio: profiling slows it.

1. hot host -- one host, keep-alive, 100 concurrent workers, N requests
   (after a warm-up that opens the connections): aiohttp, aioconnpool, httpx;
2. crawler sweep -- N requests issued at once over K host names
   (``h{i}.test`` through ``LoopbackResolver``), ``limit=100``,
   ``limit_per_host=2``, for each K; plus the force-close floor: N requests
   to one host, every one on a new connection (``force_close=True``), and,
   for aioconnpool only, the largest crawl with ``force_close=True``: what
   of the gap to the floor is keeping connections alive (mostly the
   collector's work, ``docs/performance.md``) and what is the hosts;
3. queued sweep -- N requests issued at once to one host, ``limit=100``;
   httpx with no pool timeout. A run that passes the time budget is stopped
   and reported as such, and that client skips the larger N;
4. fairness -- time each request waits for a connection (p50 / p99 / max),
   for one busy host beside many quiet ones: *burst* issues them all at once,
   *sustained* keeps 300 workers (half on the busy host) looping so the
   queue stays full; ``limit=100`` and no per-host limit, so the total limit
   is what requests queue for;
5. control, not a headline figure -- the queued sweep again for aiohttp and
   aioconnpool with CPython's garbage collector off in the timed window.

The collector. With N requests issued at once, every full (generation 2)
collection walks the N pending tasks the benchmark itself creates, so its
cost grows with N for any client, aiohttp's connector as much as ours. Each
run therefore times its collections (``gc.callbacks``) and the crawl and
queued tables show the collector's share of the run and, for the queued
sweep, req/s outside it; the headline figures and the targets stay as
measured with the collector on, and the gc-off control is only a diagnostic.

Sizes. The default mode uses N=20,000 for the hot host and the crawl (K up
to 15,000 hosts), N up to 50,000 for the queued sweep, 3 repeats (15 pairs
of aiohttp and aioconnpool on the hot host and the queued sweep, plus one
counting run per client and row there), and a budget of 150 s per run: about
20 minutes on a 2-core machine. Most of it is httpx (3 hot-host runs of
~30 s each, and queued runs up to the budget, after which it skips the
larger N), the 15 pairs of the queued sweep at N=50,000 (~15 s a pair) and
aiohttp's crawl at K=5,000 and 15,000; the gc-off control repeats the queued
sweep for two clients. ``--quick`` (N=5,000, 2 repeats, 3 pairs) takes about
5 minutes; ``--tiny`` is a smoke test of about 15 seconds (1 run each, so
one pair).

One server per run. Each measured run starts its own loopback server on a
fresh port. With one server shared by the whole benchmark, every socket an
earlier run closed first sits in TIME_WAIT towards that one port for 60 s;
with tens of thousands of them, the kernel searches longer for a free
ephemeral port on each ``connect()``. The rows that open a connection per
request (the force-close floor, the large crawls) then slow down by what ran
before them: the floor measured ~3,000 req/s that way against ~4,100 on a
fresh port.

The loopback server closes keep-alive connections idle for 2 s: the crawl
leaves one idle connection per host in both connectors, and 20,000 of them
would exhaust the file descriptor limit of either process.

Usage::

    .venv/bin/python bench/sockets.py [--quick] [--tiny] [--no-write]
                                      [--output PATH] [--budget S] [--verbose]
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.cli import mode_parser, pick_mode, progress_printer, publish, run_record
from harness.clients import AIOHTTP, HTTPX, OURS
from harness.machine import load_average, versions
from harness.report import ratio, spread, table, title
from harness.server import IDLE_TIMEOUT
from socket_workloads import Spec

HERE = Path(__file__).resolve().parent
WORKER = HERE / "socket_workloads.py"
RESULTS = HERE / "results" / "sockets.json"
LIMIT = 100
CRAWL_PER_HOST = 2
GC_OFF = "queued_gc_off"  # the collector-off control: never a headline figure


@dataclass(frozen=True)
class Config:
    mode: str
    repeats: int
    concurrency: int  # hot host workers
    hot_n: int
    crawl_n: int
    crawl_keys: tuple[int, ...]
    queued_n: tuple[int, ...]
    burst: tuple[int, int, int]  # big host requests, small hosts, per small host
    sustained: tuple[int, int, int, int]  # n, workers, on the big host, small hosts
    budget_s: float
    paired_repeats: int = 1  # the hot host and the queued sweep: pairs for the ratio
    flag_help: str = ""  # --quick and --tiny: what the flag does (--help)


FULL = Config(
    mode="full",
    repeats=3,
    concurrency=100,
    hot_n=20_000,
    crawl_n=20_000,
    crawl_keys=(1, 10, 1_000, 5_000, 15_000),
    queued_n=(1_000, 10_000, 50_000),
    burst=(5_000, 1_000, 5),
    sustained=(20_000, 300, 150, 1_000),
    budget_s=150.0,
    paired_repeats=15,
)
QUICK = Config(
    mode="quick",
    repeats=2,
    concurrency=100,
    hot_n=5_000,
    crawl_n=5_000,
    crawl_keys=(1, 10, 1_000, 5_000),
    queued_n=(1_000, 5_000, 10_000),
    burst=(2_000, 400, 5),
    sustained=(5_000, 300, 150, 1_000),
    budget_s=60.0,
    paired_repeats=3,
    flag_help="N=5,000, 2 repeats, 3 pairs on the hot host and the queued sweep "
    "(about 5 minutes)",
)
TINY = Config(
    mode="tiny",
    repeats=1,
    concurrency=10,  # httpx is slow at 100, even for a smoke test
    hot_n=100,
    crawl_n=100,
    crawl_keys=(1, 50),
    queued_n=(50, 100),
    burst=(100, 20, 5),
    sustained=(300, 60, 30, 20),
    budget_s=30.0,
    flag_help="a smoke test: everything tiny (seconds)",
)
MODES = (FULL, QUICK, TINY)


@dataclass
class Cell:
    """One client on one row of a section, and its runs."""

    section: str
    row: str
    client: str
    spec: Spec
    size: int  # larger is slower: a client over budget skips larger sizes
    runs: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None
    count: dict[str, Any] | None = None  # the call-counting run (not timed)


# ------------------------------------------------------------------ plan


def plan(cfg: Config, port: int) -> list[Cell]:
    base = Spec(workload="hot", client=AIOHTTP, port=port, budget_s=cfg.budget_s)
    cells: list[Cell] = []

    def add(
        section: str, row: str, size: int, clients: Sequence[str], **kw: Any
    ) -> None:
        for client in clients:
            spec = replace(base, client=client, **kw)
            cells.append(Cell(section, row, client, spec, size))

    add(
        "hot",
        f"N={cfg.hot_n:,}",
        0,
        (AIOHTTP, OURS, HTTPX),
        n=cfg.hot_n,
        concurrency=cfg.concurrency,
    )
    for keys in cfg.crawl_keys:
        if keys > cfg.crawl_n:
            continue
        add(
            "crawl",
            f"K={keys:,}",
            keys,
            (AIOHTTP, OURS),
            workload="crawl",
            n=cfg.crawl_n,
            keys=keys,
            limit_per_host=CRAWL_PER_HOST,
        )
    add(
        "crawl",
        "floor",
        0,
        (AIOHTTP, OURS),
        workload="crawl",
        n=cfg.crawl_n,
        keys=1,
        limit_per_host=CRAWL_PER_HOST,
        force_close=True,
    )
    # The decomposition of the largest crawl's gap to the floor: the same
    # crawl with every connection closed after its request, as the floor's
    # are. Ours only (aiohttp's is as slow as its keep-alive row).
    largest = max((k for k in cfg.crawl_keys if k <= cfg.crawl_n), default=0)
    if largest > 1:
        add(
            "crawl",
            f"{largest:,} hosts, force_close",
            largest,
            (OURS,),
            workload="crawl",
            n=cfg.crawl_n,
            keys=largest,
            limit_per_host=CRAWL_PER_HOST,
            force_close=True,
        )
    for n in cfg.queued_n:
        add("queued", f"N={n:,}", n, (AIOHTTP, OURS, HTTPX), workload="queued", n=n)
    big, small_hosts, per_small = cfg.burst
    add(
        "burst",
        "burst",
        0,
        (AIOHTTP, OURS),
        workload="burst",
        big=big,
        small_hosts=small_hosts,
        per_small=per_small,
    )
    n, workers, big_workers, small_hosts = cfg.sustained
    add(
        "sustained",
        "sustained",
        0,
        (AIOHTTP, OURS),
        workload="sustained",
        n=n,
        concurrency=workers,
        big_workers=big_workers,
        small_hosts=small_hosts,
    )
    for n in cfg.queued_n:
        add(GC_OFF, f"N={n:,}", n, (AIOHTTP, OURS), workload="queued", n=n, gc=False)
    return cells


SECTIONS = ("hot", "crawl", "queued", "burst", "sustained", GC_OFF)


def run_child(spec: Spec) -> dict[str, Any]:
    """Run one measurement in a fresh process; its JSON result line."""
    try:
        proc = subprocess.run(
            [sys.executable, str(WORKER), spec.to_json()],
            capture_output=True,
            text=True,
            # The child stops itself at the budget; this is the backstop.
            timeout=spec.budget_s + 120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"status": "over_budget", "budget_s": spec.budget_s, "done": None}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {
            "status": "failed",
            "returncode": proc.returncode,
            "stderr": proc.stderr[-3000:],
        }
    result: dict[str, Any] = json.loads(lines[-1])
    return result


PAIRED = ("hot", "queued")  # ours / aiohttp by pairs; calls per request counted
PAIR = (AIOHTTP, OURS)  # in PAIRED sections, run back to back, repeat by repeat
COUNTED = PAIR  # the clients whose calls are counted


def execute(
    cells: list[Cell],
    cfg: Config,
    progress: Callable[[str], None],
    run: Callable[[Spec], dict[str, Any]] = run_child,
) -> None:
    """Run every cell ``cfg.repeats`` times, section by section, row by row;
    then count the calls of each :data:`COUNTED` client once per row of the
    :data:`PAIRED` sections.

    In the paired sections, aiohttp and aioconnpool run ``cfg.paired_repeats``
    times, each repeat a pair run back to back, first one client then the
    other, in turn (``_pair_order``); any other client of the row runs
    ``cfg.repeats`` times, after the pair, never between its two runs.
    Elsewhere the clients of a row run in a rotating order."""
    for section in SECTIONS:
        rows = _unique(c.row for c in cells if c.section == section)
        paired = section in PAIRED
        repeats = max(cfg.paired_repeats, cfg.repeats) if paired else cfg.repeats
        for repeat in range(repeats):
            for row in rows:
                group = [c for c in cells if c.section == section and c.row == row]
                if paired:
                    order = _pair_order(group, repeat, cfg)
                else:
                    shift = repeat % len(group)
                    order = group[shift:] + group[:shift]
                for cell in order:
                    if cell.skipped:
                        continue
                    progress(f"{section} {row} {cell.client} run {repeat + 1}")
                    result = run(cell.spec)
                    cell.runs.append(result)
                    if result["status"] == "over_budget":
                        _skip_larger(cells, cell)
                    elif result["status"] == "failed":
                        progress(f"FAILED: {result['stderr']}")
    for cell in cells:
        if cell.section in PAIRED and cell.client in COUNTED and not cell.skipped:
            progress(f"{cell.section} {cell.row} {cell.client}: counting calls")
            cell.count = run(replace(cell.spec, count_calls=True))
            if cell.count["status"] == "failed":
                progress(f"FAILED: {cell.count['stderr']}")


def _pair_order(group: list[Cell], repeat: int, cfg: Config) -> list[Cell]:
    """The cells of a paired row to run in ``repeat``: the pair back to back,
    aiohttp first in even repeats and aioconnpool first in odd ones (so that
    neither always runs on the machine the other has just warmed, or loaded),
    then the row's other clients while ``repeat < cfg.repeats``."""
    pair = [c for c in group if c.client in PAIR]
    if repeat % 2:
        pair.reverse()
    others = [c for c in group if c.client not in PAIR]
    return pair + (others if repeat < cfg.repeats else [])


def _skip_larger(cells: list[Cell], over: Cell) -> None:
    why = f"{over.row} took over {over.spec.budget_s:.0f} s"
    for cell in cells:
        if (
            cell.section == over.section
            and cell.client == over.client
            and cell.size >= over.size
        ):
            cell.skipped = why if cell is not over else "over budget"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --------------------------------------------------------------- summary


def summarize(cell: Cell) -> dict[str, Any]:
    ok = [r for r in cell.runs if r["status"] == "ok"]
    out: dict[str, Any] = {
        "client": cell.client,
        "spec": {k: v for k, v in vars(cell.spec).items() if k != "port"},
        "runs": cell.runs,
        "status": _status(cell),
        "skipped": cell.skipped,
    }
    if cell.count is not None:
        # The counting run, apart from ``runs``: its timing is no throughput.
        out["count"] = cell.count
        if "calls_per_request" in cell.count:
            out["calls_per_request"] = cell.count["calls_per_request"]
    if ok:
        rates = [r["req_per_s"] for r in ok]
        out["req_per_s"] = rates
        out["median_req_per_s"] = statistics.median(rates)
        out["errors"] = sum(sum(r["errors"].values()) for r in ok)
        out["max_server_cpu_share"] = max(r["server_cpu_share"] for r in ok)
        waits = [r.get("tcp_time_wait_before") for r in ok]
        known = [w for w in waits if w is not None]
        out["max_tcp_time_wait_before"] = max(known) if known else None
        if all("gc" in r for r in ok):
            out["median_gc_share"] = statistics.median(r["gc"]["share"] for r in ok)
            out["median_req_per_s_outside_gc"] = statistics.median(
                r["req_per_s_outside_gc"] for r in ok
            )
        if "wait" in ok[0]:
            out["wait"] = {
                group: {
                    stat: statistics.median(r["wait"][group][stat] for r in ok)
                    for stat in ("p50_ms", "p99_ms", "max_ms")
                }
                for group in ok[0]["wait"]
            }
    return out


def _status(cell: Cell) -> str:
    statuses = {r["status"] for r in cell.runs}
    if "failed" in statuses:
        return "failed"
    if "over_budget" in statuses:
        return "over_budget"
    if not cell.runs:
        return "skipped"
    return "ok"


def build_results(cells: list[Cell]) -> dict[str, list[dict[str, Any]]]:
    sections: dict[str, list[dict[str, Any]]] = {}
    for section in SECTIONS:
        rows = []
        for row in _unique(c.row for c in cells if c.section == section):
            group = {
                c.client: summarize(c)
                for c in cells
                if c.section == section and c.row == row
            }
            entry: dict[str, Any] = {"row": row, "clients": group}
            entry["ratio_ours_aiohttp"] = _ratio(group.get(OURS), group.get(AIOHTTP))
            entry["paired_ours_aiohttp"] = paired_ratios(
                group.get(OURS), group.get(AIOHTTP)
            )
            entry["paired_cpu_ours_aiohttp"] = paired_cpu_ratios(
                group.get(OURS), group.get(AIOHTTP)
            )
            rows.append(entry)
        sections[section] = rows
    crawl = sections["crawl"]
    floors = [r["clients"].get(AIOHTTP) for r in crawl if r["row"] == "floor"]
    floor_rate = _rate(floors[0]) if floors else None
    for entry in crawl:
        ours = _rate(entry["clients"].get(OURS))
        entry["ours_vs_aiohttp_floor"] = (
            ours / floor_rate if ours and floor_rate else None
        )
    return sections


def _rate(
    summary: dict[str, Any] | None, key: str = "median_req_per_s"
) -> float | None:
    if summary is None:
        return None
    rate: float | None = summary.get(key)
    return rate


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    ra, rb = _rate(a), _rate(b)
    return ra / rb if ra and rb else None


def paired_ratios(
    ours: dict[str, Any] | None, theirs: dict[str, Any] | None
) -> dict[str, float] | None:
    """Run-by-run ratios of two clients' req/s: median, min and max.

    Repeat ``i`` of each client runs back to back, so their ratio cancels
    what the shared machine's speed does over minutes (it moved by up to 2x
    here); the ratio of the two medians does not. ``None`` unless some
    repeat has an ``ok`` run for both.
    """
    return _summary(_pairs(ours, theirs, _rate_of_run))


def cpu_per_request(run: dict[str, Any]) -> float | None:
    """The client process's CPU seconds per request in an ``ok`` run (from
    its CPU share in results written before ``client_cpu_s`` was recorded)."""
    if run["status"] != "ok" or not run.get("requests"):
        return None
    cpu = run.get("client_cpu_s")
    if cpu is None and "client_cpu_share" in run:
        cpu = run["client_cpu_share"] * run["elapsed_s"]
    return None if cpu is None else float(cpu) / float(run["requests"])


def paired_cpu_ratios(
    ours: dict[str, Any] | None, theirs: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Run-by-run ratios of two clients' CPU seconds per request (ours /
    theirs: below 1 means ours spends less): median, min, max and every pair.

    The client's own CPU time leaves out the time it waited for the server
    and for the CPU while other processes ran, the larger part of wall
    time's noise on a shared machine; what remains (caches, the other
    hyperthread, how many responses one loop turn collects) still moves it,
    so it is read next to the throughput ratio, pair by pair, not instead of
    it. ``None`` unless some repeat has an ``ok`` run for both.
    """
    ratios = _pairs(ours, theirs, cpu_per_request)
    summary: dict[str, Any] | None = _summary(ratios)
    if summary is not None:
        summary["ratios"] = ratios
    return summary


def _rate_of_run(run: dict[str, Any]) -> float | None:
    rate: float | None = run["req_per_s"] if run["status"] == "ok" else None
    return rate


def _pairs(
    ours: dict[str, Any] | None,
    theirs: dict[str, Any] | None,
    figure: Callable[[dict[str, Any]], float | None],
) -> list[float]:
    """``figure`` of ours / of theirs, repeat by repeat, where both have it."""
    if ours is None or theirs is None:
        return []
    ratios = []
    for a, b in zip(ours["runs"], theirs["runs"], strict=False):
        mine, other = figure(a), figure(b)
        if mine is not None and other:
            ratios.append(mine / other)
    return ratios


def _summary(ratios: list[float]) -> dict[str, float] | None:
    if not ratios:
        return None
    return {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "pairs": len(ratios),
    }


def _worst_step(
    rows: list[dict[str, Any]], client: str, key: str = "median_req_per_s"
) -> float | None:
    """The lowest ratio of a client's req/s at one N to that at the N before."""
    rates = [_rate(r["clients"].get(client), key) or 0.0 for r in rows]
    if len(rates) < 2 or not all(rates):
        return None
    return min(b / a for a, b in itertools.pairwise(rates))


def targets(sections: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Issue 16's targets, checked against this run's figures.

    Throughput targets use the run-by-run ratios (``paired_ratios``): repeat
    ``i`` of each client ran back to back, which cancels what the machine's
    speed does between repeats. Calls per request are counted once per client
    and row, deterministically (cProfile, the collector off); the value is
    aiohttp's count / ours, so >= 1 means ours makes no more calls. The entries
    marked ``diagnostic`` come after them: the client CPU per request, pair by
    pair (``paired_cpu_ratios``; the value is aiohttp / ours, so >= 1 means
    ours spends no more), and the queued sweep's worst step outside the
    collector and with it off, to show how much of a step is the collector's;
    they are no target and never stand in for one.
    """
    out: list[dict[str, Any]] = []

    def check(
        name: str, value: float | None, goal: float, rule: str, diagnostic: bool
    ) -> None:
        out.append(
            {
                "target": name,
                "rule": rule,
                "value": value,
                "goal": goal,
                "holds": None if value is None else value >= goal,
                "diagnostic": diagnostic,
            }
        )

    def by_pairs(name: str, row: dict[str, Any]) -> None:
        pairs = row.get("paired_ours_aiohttp")
        rule = "median of ours / aiohttp over back-to-back pairs >= 1.00"
        if pairs and pairs["pairs"] > 1:
            rule += f" ({pairs['pairs']} pairs, range {_paired_range(pairs)})"
        elif pairs:
            rule += " (1 pair)"
        check(name, pairs["median"] if pairs else None, 1.0, rule, False)

    def cpu(name: str, row: dict[str, Any]) -> None:
        pairs = row.get("paired_cpu_ours_aiohttp")
        rule = (
            "client CPU per request, median of ours / aiohttp over back-to-back "
            "pairs <= 1.00 (value: its inverse, >= 1.00"
        )
        if pairs:
            rule += f"; ours / aiohttp {ratio(pairs['median'])}"
            rule += f", range {_paired_range(pairs)}" if pairs["pairs"] > 1 else ""
        check(
            name,
            1 / pairs["median"] if pairs and pairs["median"] else None,
            1.0,
            rule + ")",
            True,
        )

    def calls(name: str, row: dict[str, Any]) -> None:
        ours = row["clients"].get(OURS, {}).get("calls_per_request")
        theirs = row["clients"].get(AIOHTTP, {}).get("calls_per_request")
        value = theirs / ours if ours and theirs else None
        rule = "calls per request, ours <= aiohttp (value: aiohttp / ours >= 1.00)"
        if ours and theirs:
            rule += f": aiohttp {theirs:.1f}, ours {ours:.1f}"
        check(name, value, 1.0, rule, False)

    hot = sections["hot"][0]
    by_pairs(f"hot host {hot['row']}", hot)
    calls(f"hot host {hot['row']}, calls", hot)
    for row in sections["queued"]:
        by_pairs(f"queued {row['row']}", row)
        calls(f"queued {row['row']}, calls", row)
    keyed = [r for r in sections["crawl"] if r["row"].startswith("K=")]
    if keyed:
        last = keyed[-1]
        theirs = last["ratio_ours_aiohttp"]
        check(
            f"crawl {last['row']} vs floor",
            last["ours_vs_aiohttp_floor"],
            0.85,
            "ours / aiohttp's force-close floor >= 0.85 (ours / aiohttp: "
            f"{ratio(theirs)})",
            False,
        )
    cpu(f"diagnostic: hot host {hot['row']}, client CPU", hot)
    for row in sections["queued"]:
        cpu(f"diagnostic: queued {row['row']}, client CPU", row)
    step_rule = "lowest req/s at one N / req/s at the next smaller N >= 0.9"
    for client in (OURS, AIOHTTP):
        check(
            f"diagnostic: queued sweep, req/s outside the collector, {client}",
            _worst_step(sections["queued"], client, "median_req_per_s_outside_gc"),
            0.9,
            step_rule,
            True,
        )
    for client in (OURS, AIOHTTP):
        check(
            f"diagnostic: gc-off control (queued sweep, gc disabled), {client}",
            _worst_step(sections[GC_OFF], client),
            0.9,
            step_rule,
            True,
        )
    return out


def _paired_range(pairs: dict[str, float]) -> str:
    return spread([pairs["min"], pairs["max"]], ".2f")


# ---------------------------------------------------------------- report


def _rate_text(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "-"
    status = summary["status"]
    if status == "failed":
        return "FAILED"
    if status == "over_budget":
        over = next(r for r in summary["runs"] if r["status"] == "over_budget")
        done = over.get("done")
        total = summary["spec"]["n"]
        part = f", {done:,}/{total:,} done" if done is not None else ""
        return f"skipped: >{over['budget_s']:.0f} s{part}"
    if status == "skipped":
        return f"skipped ({summary['skipped']})"
    text = f"{summary['median_req_per_s']:,.0f}"
    return text + " (errors!)" if summary["errors"] else text


def _server_cpu(row: dict[str, Any]) -> str:
    shares = [
        s["max_server_cpu_share"]
        for s in row["clients"].values()
        if "max_server_cpu_share" in s
    ]
    return f"{max(shares):.0%}" if shares else "-"


def _throughput_table(
    rows: list[dict[str, Any]],
    clients: Sequence[str],
    label: str,
    extra: Sequence[tuple[str, Callable[[dict[str, Any]], str]]] = (),
) -> str:
    headers = [
        label,
        *clients,
        "ours/aiohttp",
        "run by run",
        "CPU/req run by run",
        *(h for h, _ in extra),
        "server CPU",
    ]
    body = [
        [
            row["row"],
            *(_rate_text(row["clients"].get(c)) for c in clients),
            ratio(row["ratio_ours_aiohttp"]),
            _paired_text(row.get("paired_ours_aiohttp")),
            _paired_text(row.get("paired_cpu_ours_aiohttp")),
            *(f(row) for _, f in extra),
            _server_cpu(row),
        ]
        for row in rows
    ]
    return table(headers, body)


def _paired_text(pairs: dict[str, float] | None) -> str:
    if pairs is None:
        return "-"
    if pairs["pairs"] == 1:
        return ratio(pairs["median"])
    return f"{ratio(pairs['median'])} ({_paired_range(pairs)})"


def _figure(summary: dict[str, Any] | None, key: str, spec: str) -> str:
    if summary is None or key not in summary:
        return "-"
    return format(summary[key], spec)


def _collector_table(
    rows: list[dict[str, Any]], clients: Sequence[str], outside: bool
) -> str:
    """The collector's share of each client's runs (and, with ``outside``,
    req/s over the time outside the collector): one line per client and
    figure, one column per row of the section, so the labels stay whole."""
    body = [
        [
            f"{c} collector share",
            *(_figure(r["clients"].get(c), "median_gc_share", ".0%") for r in rows),
        ]
        for c in clients
    ]
    if outside:
        body += [
            [
                f"{c} req/s outside the collector",
                *(
                    _figure(r["clients"].get(c), "median_req_per_s_outside_gc", ",.0f")
                    for r in rows
                ),
            ]
            for c in clients
        ]
    return table(["collector", *(r["row"] for r in rows)], body)


def _calls_text(row: dict[str, Any]) -> str:
    return " / ".join(_count_text(row["clients"].get(c)) for c in COUNTED)


def _count_text(summary: dict[str, Any] | None) -> str:
    count = None if summary is None else summary.get("count")
    if count is None:
        return "-"
    if count["status"] == "failed":
        return "FAILED"
    if count["status"] == "over_budget":
        return "over budget"
    return f"{count['calls_per_request']:.1f}"


CALLS = [("calls/req aiohttp / ours", _calls_text)]
CALLS_NOTE = (
    "  (calls/req: Python and C calls per request in the timed window, counted "
    "with cProfile in one extra run per client, the collector off)"
)

COLLECTOR_NOTE = (
    "  (collector share: time in CPython's garbage collections, every "
    "generation, timed with gc.callbacks, / run time; median over runs)"
)


def _wait_table(row: dict[str, Any]) -> str:
    body = []
    for client, summary in row["clients"].items():
        if "wait" not in summary:
            body.append([client, "-", _rate_text(summary), "-", "-", "-"])
            continue
        for group, stats in summary["wait"].items():
            body.append(
                [
                    client,
                    group,
                    _rate_text(summary) if group == "all" else "",
                    f"{stats['p50_ms']:,.1f}",
                    f"{stats['p99_ms']:,.1f}",
                    f"{stats['max_ms']:,.1f}",
                ]
            )
    return table(["client", "requests to", "req/s", "p50 ms", "p99 ms", "max ms"], body)


def report(results: dict[str, Any]) -> str:
    cfg = results["config"]
    s = results["sections"]
    v = results["versions"]
    load = results["load_average"]
    big, small_hosts, per_small = cfg["burst"]
    n_sus, workers, big_workers, sus_hosts = cfg["sustained"]
    out = [
        title("socket benchmarks", results),
        f"aiohttp {v['aiohttp']}, httpx {v['httpx']} (httpcore {v['httpcore']}), "
        f"aioconnpool {v['aioconnpool']}",
        f"load average before: {_load(load['before'])}; after: {_load(load['after'])}",
        f"req/s: median of {cfg['repeats']} runs (aiohttp and aioconnpool: "
        f"{cfg['paired_repeats']} on the hot host and the queued sweep, as pairs "
        "run back to back, each client first in every other pair), each in a "
        "fresh process "
        "(N / time from first request issued to last response read); "
        "server CPU: the loopback server's highest CPU share in any run of the row",
        "ours/aiohttp: ratio of the medians; run by run: median (min-max) of "
        "ours / aiohttp over runs made back to back; CPU/req run by run: the "
        "same for the client process's CPU seconds per request (below 1.00: "
        "ours spends less)",
        f"budget {cfg['budget_s']:.0f} s per run: a run over it is stopped, and "
        "that client skips the larger sizes",
        "",
        f"1. hot host: keep-alive, {cfg['concurrency']} concurrent workers, "
        f"limit={LIMIT}, after a warm-up",
        _throughput_table(s["hot"], (AIOHTTP, OURS, HTTPX), "requests", CALLS),
        CALLS_NOTE,
        "",
        f"2. crawler sweep: N={cfg['crawl_n']:,} requests at once over K hosts, "
        f"limit={LIMIT}, limit_per_host={CRAWL_PER_HOST}; floor: one host, "
        "force_close=True (every request on a new connection); "
        "'hosts, force_close': the largest crawl, every connection closed "
        "after its request",
        _throughput_table(
            s["crawl"],
            (AIOHTTP, OURS),
            "hosts",
            [("ours/floor", lambda r: ratio(r["ours_vs_aiohttp_floor"]))],
        ),
        "  (ours/floor: aioconnpool against aiohttp's force-close floor)",
        _time_wait_line(s["crawl"]),
        _collector_table(s["crawl"], (AIOHTTP, OURS), outside=False),
        COLLECTOR_NOTE,
        "",
        f"3. queued sweep: N requests at once to one host, limit={LIMIT}; "
        "httpx max_connections=100, no pool timeout",
        _throughput_table(s["queued"], (AIOHTTP, OURS, HTTPX), "requests", CALLS),
        CALLS_NOTE,
        _collector_table(s["queued"], (AIOHTTP, OURS, HTTPX), outside=True),
        COLLECTOR_NOTE,
        "  (req/s outside the collector: N / (run time - collector time))",
        "",
        "4. fairness: time each request waited for a connection (median over "
        f"runs), limit={LIMIT}, no per-host limit",
        f"4a. burst: {big:,} requests to one host and {per_small} to each of "
        f"{small_hosts:,} other hosts, all at once, shuffled",
        _wait_table(s["burst"][0]),
        "",
        f"4b. sustained: {workers} workers loop for {n_sus:,} requests: "
        f"{big_workers} on one host, the others each time on a random one of "
        f"{sus_hosts:,} hosts",
        _wait_table(s["sustained"][0]),
        "",
        "5. CONTROL, NOT A HEADLINE FIGURE: the queued sweep with CPython's "
        "garbage collector disabled in the timed window (gc.disable()); "
        "aiohttp and aioconnpool only",
        _throughput_table(s[GC_OFF], (AIOHTTP, OURS), "requests"),
        _collector_table(s[GC_OFF], (AIOHTTP, OURS), outside=False),
        "",
        "targets (issue 16), on this run's figures (collector on):",
    ]
    targets_ = [t for t in results["targets"] if not t["diagnostic"]]
    diagnostics = [t for t in results["targets"] if t["diagnostic"]]
    for t in targets_:
        verdict = {True: "holds", False: "FAILS", None: "not measured"}[t["holds"]]
        out.append(f"  {t['target']}: {t['rule']}: {_value(t)} -> {verdict}")
    out += [
        "",
        "diagnostic only, not targets (the client's CPU per request, pair by "
        "pair; how much of the queued sweep's worst step is the collector's):",
    ]
    for t in diagnostics:
        verdict = {True: "yes", False: "no", None: "not measured"}[t["holds"]]
        out.append(f"  {t['target']}: {t['rule']}? {_value(t)} -> {verdict}")
    errors = [
        f"{sec} {row['row']} {client}: {r['errors']}"
        for sec, rows in s.items()
        for row in rows
        for client, summary in row["clients"].items()
        for r in summary["runs"]
        if r.get("errors")
    ]
    if errors:
        out += ["", "request errors:", *(f"  {e}" for e in errors)]
    out += ["", f"total run time: {results['elapsed_s']:.0f} s"]
    return "\n".join(out)


def _time_wait_line(rows: list[dict[str, Any]]) -> str:
    """The most TIME_WAIT sockets any run of each row started with: many of
    them slow down every ``connect()`` (see ``tcp_time_wait_sockets``)."""
    cells = []
    for row in rows:
        counts = [
            s.get("max_tcp_time_wait_before")
            for s in row["clients"].values()
            if s.get("max_tcp_time_wait_before") is not None
        ]
        cells.append(f"{row['row']}: {max(counts):,}" if counts else f"{row['row']}: -")
    return "  (TIME_WAIT sockets at the start of a run, most in the row: " + (
        "; ".join(cells) + ")"
    )


def _value(target: dict[str, Any]) -> str:
    """The value to two decimals, or to five when two would put it on the
    other side of its goal (0.99999 against 1.00 printed "1.00 -> FAILS")."""
    value = target["value"]
    if value is None:
        return "-"
    shown = f"{value:.2f}"
    goal = target.get("goal")
    if goal is not None and (float(shown) >= goal) != (value >= goal):
        shown = f"{value:.5f}"
    return shown


def _load(values: Sequence[float] | None) -> str:
    return " ".join(f"{x:.2f}" for x in values) if values else "n/a"


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = mode_parser(
        "Socket benchmarks: aioconnpool vs aiohttp and httpx.", RESULTS, MODES
    )
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds per run before stopping it"
    )
    args = parser.parse_args(argv)
    cfg = pick_mode(args, MODES)
    if args.budget is not None:
        cfg = replace(cfg, budget_s=args.budget)
    started = time.perf_counter()
    load_before = load_average()
    # Port 0: every run starts a server of its own, on a fresh port (see the
    # module docstring, "One server per run").
    cells = plan(cfg, 0)
    execute(cells, cfg, progress_printer(args))
    sections = build_results(cells)
    results: dict[str, Any] = {
        **run_record("sockets", __file__, argv),
        "versions": versions("aiohttp", "httpx", "httpcore", "aioconnpool"),
        "load_average": {"before": load_before, "after": load_average()},
        "config": {
            "mode": cfg.mode,
            "repeats": cfg.repeats,
            "paired_repeats": cfg.paired_repeats,
            "limit": LIMIT,
            "concurrency": cfg.concurrency,
            "hot_n": cfg.hot_n,
            "crawl_n": cfg.crawl_n,
            "crawl_keys": list(cfg.crawl_keys),
            "crawl_limit_per_host": CRAWL_PER_HOST,
            "queued_n": list(cfg.queued_n),
            "gc_off_control": "the queued sweep's N, aiohttp and aioconnpool, "
            "gc.disable() in the timed window; a diagnostic, not a headline",
            "burst": list(cfg.burst),
            "sustained": list(cfg.sustained),
            "budget_s": cfg.budget_s,
            "server_idle_timeout_s": IDLE_TIMEOUT,
            "dns_cache": "aiohttp defaults (use_dns_cache=True, ttl 10 s) for both",
        },
        "sections": sections,
        "targets": targets(sections),
        "elapsed_s": time.perf_counter() - started,
    }
    publish(args, results, report(results))
    failed = any(
        summary["status"] == "failed"
        or summary.get("count", {}).get("status") == "failed"
        for rows in sections.values()
        for row in rows
        for summary in row["clients"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
