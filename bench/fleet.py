"""Fleet-wide limits on Redis: what they cost, and what they hold.

A real ``redis-server`` (``aioconnpool.testing.RedisServer``) on loopback,
and three parts:

* ``overhead`` -- one process, the fleet on against off, in interleaved
  pairs: a hot host (``workers`` concurrent requests on keep-alive, fleet
  limit above the workers so nobody waits: the cost of the fleet alone), and
  ``hosts`` hosts (one request per host at a time). The fast loopback server
  of ``harness.server`` runs in its own process. Reported: req/s of each, the
  ratio on/off (median and range over the pairs), and Redis round trips per
  request.
* ``processes`` -- 1, 2 and 4 processes sharing one fleet (limit
  ``fleet_limit`` per host) over ``shared_hosts`` hosts, each process with
  16 concurrent workers, against a server in this process that counts its
  concurrent requests per host (each answer takes 5 ms): aggregate req/s and
  the highest per-host concurrency the server saw (must not exceed the fleet
  limit).
* ``fairness`` -- 4 processes of 16 workers contending for one host (fleet
  limit 2): each process's p50 and p99 request latency; under contention
  that is mostly the wait for a slot, so close figures mean a fair queue.

Usage::

    .venv/bin/python bench/fleet.py [--quick] [--tiny] [--no-write] [--verbose]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from harness.cli import mode_parser, pick_mode, progress_printer, publish, run_record
from harness.clients import host_name, pool_connector, url_for
from harness.report import table, title
from harness.server import ServerProcess
from harness.timing import percentiles

from aioconnpool.fleet import RedisFleet
from aioconnpool.testing import RedisServer

HERE = Path(__file__).resolve().parent
SCRIPT = Path(__file__).resolve()
RESULTS = HERE / "results" / "fleet.json"
# Concurrent requests per process in the multi-process parts: more than a
# host's fleet limit, so processes contend for slots all the time.
WORKERS_PER_PROCESS = 16


@dataclass(frozen=True)
class Config:
    mode: str
    flag_help: str
    pairs: int  # interleaved on/off pairs per overhead workload
    hot_requests: int
    workers: int
    hosts: int  # the many-hosts overhead workload
    shared_requests: int  # per process, in the processes part
    shared_hosts: int
    fleet_limit: int
    fair_requests: int  # per process, in the fairness part


FULL = Config("full", "", 7, 20_000, 50, 1_000, 1_500, 10, 4, 300)
QUICK = Config("quick", "fewer pairs and requests", 3, 5_000, 50, 500, 600, 10, 4, 150)
TINY = Config("tiny", "a smoke test (seconds)", 1, 300, 20, 50, 60, 4, 2, 30)
MODES = (FULL, QUICK, TINY)


# ----------------------------------------------------------------- overhead


async def _overhead_run(
    redis_url: str | None, port: int, *, requests: int, workers: int, hosts: int
) -> dict[str, float]:
    """``requests`` requests over ``hosts`` hosts by ``workers`` workers;
    with a fleet when ``redis_url`` is given."""
    fleet = None
    if redis_url is not None:
        fleet = RedisFleet(
            redis_url,
            name=f"bench-{time.monotonic_ns()}",
            limit_per_host=max(workers, 1) * 2,  # nobody waits on the fleet
        )
    conn = pool_connector(limit=0, fleet=fleet)
    urls = [url_for(host_name(i), port) for i in range(hosts)]
    async with aiohttp.ClientSession(connector=conn) as session:
        counter = iter(range(requests))

        async def worker() -> None:
            for i in counter:
                async with session.get(urls[i % hosts]) as resp:
                    await resp.read()

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        seconds = time.perf_counter() - began
        fleet_stats = conn.stats().fleet
    trips = 0 if fleet_stats is None else fleet_stats.round_trips
    return {"rps": requests / seconds, "round_trips_per_request": trips / requests}


def overhead(config: Config, redis_url: str, progress: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    workloads = {
        "hot": {"requests": config.hot_requests, "workers": config.workers, "hosts": 1},
        "many_hosts": {
            "requests": config.hosts * 2,
            "workers": config.workers,
            "hosts": config.hosts,
        },
    }
    with ServerProcess() as server:
        for name, shape in workloads.items():
            off: list[float] = []
            on: list[float] = []
            trips: list[float] = []
            for pair in range(config.pairs):
                # Alternate which one goes first: neither always gets the
                # warmer machine.
                order = ("off", "on") if pair % 2 == 0 else ("on", "off")
                for which in order:
                    result = asyncio.run(
                        _overhead_run(
                            redis_url if which == "on" else None,
                            server.port,
                            **shape,
                        )
                    )
                    if which == "on":
                        on.append(result["rps"])
                        trips.append(result["round_trips_per_request"])
                    else:
                        off.append(result["rps"])
                progress(
                    f"overhead {name} pair {pair + 1}: "
                    f"off {off[-1]:,.0f} on {on[-1]:,.0f}"
                )
            ratios = [a / b for a, b in zip(on, off, strict=True)]
            out[name] = {
                **shape,
                "off_rps": off,
                "on_rps": on,
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "round_trips_per_request": statistics.median(trips),
            }
    return out


# ------------------------------------------------------- several processes


def latency_cdf(values: list[float]) -> list[float]:
    """The nearest-rank latency (ms) at 0, 1, ..., 100 percent."""
    ordered = sorted(values)
    if not ordered:
        return []
    last = len(ordered) - 1
    return [ordered[min(last, round(q / 100 * last))] * 1e3 for q in range(101)]


async def _child(spec: dict[str, Any]) -> dict[str, Any]:
    fleet = RedisFleet(
        spec["redis_url"], name=spec["name"], limit_per_host=spec["fleet_limit"]
    )
    conn = pool_connector(
        limit=100, limit_per_host=spec["fleet_limit"] * 4, fleet=fleet
    )
    latencies: list[float] = []
    hosts = spec["hosts"]
    async with aiohttp.ClientSession(connector=conn) as session:

        async def one(i: int) -> None:
            url = f"{url_for(host_name(i % hosts), spec['port'])}?delay={spec['delay']}"
            began = time.perf_counter()
            async with session.get(url) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            latencies.append(time.perf_counter() - began)

        counter = iter(range(spec["requests"]))

        async def worker() -> None:
            for i in counter:
                await one(i)

        # Everyone starts together: the parent says when.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(spec["workers"])))
        seconds = time.perf_counter() - began
        fleet_stats = conn.stats().fleet
        assert fleet_stats is not None
    return {
        "seconds": seconds,
        "requests": spec["requests"],
        "latency": percentiles(latencies),
        # For the fairness chart (bench/charts.py): the latency at each
        # percent, 0 to 100, in milliseconds.
        "latency_cdf_ms": latency_cdf(latencies),
        "round_trips": fleet_stats.round_trips,
        "outages": fleet_stats.outages,
    }


class CountingServer:
    """An aiohttp server in this process counting concurrent requests per Host."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handler(request: web.Request) -> web.Response:
            host = request.host.split(":")[0]
            self.now[host] = self.now.get(host, 0) + 1
            self.peak[host] = max(self.peak.get(host, 0), self.now[host])
            try:
                await asyncio.sleep(float(request.query.get("delay", "0")))
            finally:
                self.now[host] -= 1
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/", handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def _processes(
    n: int, *, redis_url: str, requests: int, hosts: int, fleet_limit: int, delay: float
) -> dict[str, Any]:
    server = CountingServer()
    await server.start()
    spec = {
        "redis_url": redis_url,
        "name": f"bench-procs-{time.monotonic_ns()}",
        "fleet_limit": fleet_limit,
        "hosts": hosts,
        "requests": requests,
        "port": server.port,
        "delay": delay,
        "workers": WORKERS_PER_PROCESS,
    }
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            "--child",
            json.dumps(spec),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for _ in range(n)
    ]
    try:
        await asyncio.sleep(1.0)  # imports done everywhere
        began = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        outputs = [await child.communicate() for child in children]
        seconds = time.perf_counter() - began
        codes = [child.returncode for child in children]
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
        await server.stop()
    if any(codes):
        raise RuntimeError(f"a fleet bench process failed: exit codes {codes}")
    results = [json.loads(out) for out, _ in outputs]
    return {
        "processes": n,
        "requests": n * requests,
        "seconds": seconds,
        "rps": n * requests / seconds,
        "peak_per_host": max(server.peak.values()),
        "fleet_limit": fleet_limit,
        "per_process": results,
    }


def processes(config: Config, redis_url: str, progress: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"scaling": [], "fairness": None}
    for n in (1, 2, 4):
        result = asyncio.run(
            _processes(
                n,
                redis_url=redis_url,
                requests=config.shared_requests,
                hosts=config.shared_hosts,
                fleet_limit=config.fleet_limit,
                delay=0.005,
            )
        )
        progress(
            f"{n} processes: {result['rps']:,.0f} req/s, peak {result['peak_per_host']}"
        )
        out["scaling"].append(result)
    out["fairness"] = asyncio.run(
        _processes(
            4,
            redis_url=redis_url,
            requests=config.fair_requests,
            hosts=1,
            fleet_limit=2,
            delay=0.005,
        )
    )
    return out


# ------------------------------------------------------------------ report


def report(results: dict[str, Any]) -> str:
    lines = [title("fleet", results)]
    rows = []
    for name, r in results["overhead"].items():
        rows.append(
            [
                name,
                f"{statistics.median(r['off_rps']):,.0f}",
                f"{statistics.median(r['on_rps']):,.0f}",
                f"{r['ratio_median']:.2f}x ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})",
                f"{r['round_trips_per_request']:.3f}",
            ]
        )
    lines.append("One process, fleet on vs off (interleaved pairs):")
    lines.append(
        table(
            ["workload", "off req/s", "on req/s", "on/off", "Redis calls/request"], rows
        )
    )
    rows = [
        [
            str(r["processes"]),
            f"{r['rps']:,.0f}",
            f"{r['peak_per_host']} (limit {r['fleet_limit']})",
            f"{sum(p['round_trips'] for p in r['per_process']) / r['requests']:.3f}",
        ]
        for r in results["processes"]["scaling"]
    ]
    lines.append("Processes sharing one fleet (server-side peak per host):")
    lines.append(
        table(
            ["processes", "aggregate req/s", "peak per host", "Redis calls/request"],
            rows,
        )
    )
    fair = results["processes"]["fairness"]
    rows = [
        [
            str(i + 1),
            f"{p['latency']['p50_ms']:.1f}",
            f"{p['latency']['p99_ms']:.1f}",
        ]
        for i, p in enumerate(fair["per_process"])
    ]
    lines.append(
        f"Fairness: 4 processes on one host, fleet limit 2 (peak seen "
        f"{fair['peak_per_host']}); request latency per process, ms:"
    )
    lines.append(table(["process", "p50", "p99"], rows))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["--child"]:
        print(json.dumps(asyncio.run(_child(json.loads(args_list[1])))))
        return 0
    parser = mode_parser(__doc__.splitlines()[0], RESULTS, MODES)
    args = parser.parse_args(argv)
    config = pick_mode(args, MODES)
    progress = progress_printer(args)
    results = run_record("fleet", __file__, argv)
    results["config"] = asdict(config)
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp))
        try:
            results["overhead"] = overhead(config, redis.url, progress)
            results["processes"] = processes(config, redis.url, progress)
        finally:
            redis.stop()
    publish(args, results, report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
