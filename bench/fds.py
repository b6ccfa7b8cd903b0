"""File descriptors: the sockets each client holds while it crawls many hosts,
and whether it survives a low ``RLIMIT_NOFILE``.

The workload is a crawl with every connector setting left at its default
(``limit=100``, no per-host limit, 15 s keep-alive): ``requests`` requests
issued at once over ``hosts`` host names, request ``i`` going to host
``i % hosts``. The loopback server keeps idle keep-alive connections for 60 s,
as a real server would (nginx keeps them 75 s). So a client keeps every idle
socket it does not close itself.

Each run is a child process of its own. Its soft ``RLIMIT_NOFILE`` is set for
the run, and it counts its open file descriptors (``/proc/self/fd``) every
few milliseconds. The server runs in another process, so only the client's
descriptors count. Two parts:

* ``limit`` -- 4,000 requests over 2,000 hosts under ``ulimit -n 1024``, the
  default on most Linux systems: how many requests complete, and the first
  one to fail;
* ``sweep`` -- 1,000, 5,000 and 15,000 hosts (two requests each) with the soft
  limit raised to the hard one: the peak of open descriptors per client.

Usage::

    .venv/bin/python bench/fds.py [--quick] [--tiny] [--no-write] [--verbose]
    .venv/bin/python bench/fds.py --child '{"client": "aioconnpool",
        "hosts": 2000, "requests": 4000, "nofile": 1024, "port": 8080}'
"""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from harness.cli import mode_parser, pick_mode, progress_printer, publish, run_record
from harness.clients import AIOHTTP, OURS, connector, host_name, url_for
from harness.report import table, title
from harness.server import ServerProcess

from aioconnpool import PoolConnector

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "fds.json"
SERVER_IDLE = 60.0  # seconds the server keeps an idle keep-alive connection
CLIENTS = (AIOHTTP, OURS)


@dataclass(frozen=True)
class Config:
    mode: str
    flag_help: str
    limit_hosts: int  # the `limit` part: hosts, twice as many requests
    nofile: int  # its soft RLIMIT_NOFILE
    sweep: tuple[int, ...]  # the `sweep` part: hosts, two requests each


FULL = Config("full", "", 2_000, 1_024, (1_000, 5_000, 15_000))
QUICK = Config(
    "quick", "the limit part only, and a sweep up to 5,000 hosts", 2_000, 1_024,
    (1_000, 5_000),
)  # fmt: skip
TINY = Config(
    "tiny", "a smoke test: 200 hosts under ulimit -n 128 (seconds)", 200, 128, (200,)
)
MODES = (FULL, QUICK, TINY)


@dataclass(frozen=True)
class Spec:
    """One run: ``client`` crawls ``hosts`` with ``requests`` requests under a
    soft limit of ``nofile`` open files (``None``: the hard limit)."""

    client: str
    hosts: int
    requests: int
    nofile: int | None
    port: int


def _open_fds() -> int:
    """This process's open descriptors; at the limit itself listing them
    needs one more, so the limit is what is open then."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError as exc:
        if exc.errno != errno.EMFILE:
            raise
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _full_collection_ms(repeats: int = 5) -> float:
    """The median time of a full collection (generation 2), in ms: what
    every object the process still holds costs the collector."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def _error_kind(exc: BaseException) -> str:
    """A failure's class, with the errno that caused it (EMFILE...)."""
    seen: BaseException | None = exc
    while seen is not None:
        number = getattr(seen, "errno", None)
        if isinstance(number, int) and number in errno.errorcode:
            return f"{type(exc).__name__} ({errno.errorcode[number]})"
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


async def crawl(spec: Spec) -> dict[str, Any]:
    """The workload, in this process (see the module docstring)."""
    peak = start = _open_fds()
    errors: Counter[str] = Counter()
    first_failure: int | None = None
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _open_fds())
            await asyncio.sleep(0.002)

    conn = connector(spec.client)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:

        async def one(i: int) -> bool:
            nonlocal first_failure
            url = url_for(host_name(i % spec.hosts), spec.port)
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    return resp.status == 200
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                errors[_error_kind(exc)] += 1
                if first_failure is None or i < first_failure:
                    first_failure = i
                return False

        sampler = asyncio.create_task(sample())
        began = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(spec.requests)))
        seconds = time.perf_counter() - began
        peak = max(peak, _open_fds())
        done.set()
        await sampler
        held = _open_fds() - start
        gc_held = _full_collection_ms()
        pool: dict[str, Any] = {}
        if isinstance(conn, PoolConnector):
            stats = conn.stats()
            pool = {
                "fd_budget": stats.fd_budget,
                "closed_fd_budget": stats.closed["fd_budget"],
                "requests": stats.requests,
                "created": stats.created,
                "open_at_end": stats.open,
            }
            # A snapshot of 15,000 hosts is four tracked objects per host:
            # kept, it would be billed to the collection after close below.
            del stats
    await asyncio.sleep(0.1)  # let the closed transports go
    gc_after = _full_collection_ms()
    return {
        **asdict(spec),
        "ok": sum(results),
        "failed": len(results) - sum(results),
        "errors": dict(errors.most_common()),
        "first_failure": first_failure,
        "fds_at_start": start,
        "peak_fds": peak,
        "seconds": seconds,
        "held_at_end": held,
        "gc_ms_held": gc_held,
        "gc_ms_after_close": gc_after,
        "pool": pool,
    }


def child(spec: Spec) -> dict[str, Any]:
    """Set the soft limit, then crawl."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (spec.nofile or hard, hard))
    return asyncio.run(crawl(spec))


def run_child(spec: Spec) -> dict[str, Any]:
    """One run in a fresh interpreter: no run inherits another's sockets."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(asdict(spec))],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"run {spec} failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def run(cfg: Config, progress: Any) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with ServerProcess(idle_timeout=SERVER_IDLE) as server:
        parts: list[tuple[str, int, int | None]] = [
            ("limit", cfg.limit_hosts, cfg.nofile)
        ]
        parts += [("sweep", hosts, None) for hosts in cfg.sweep]
        for part, hosts, nofile in parts:
            for client in CLIENTS:
                progress(f"{part}: {client}, {hosts:,} hosts, nofile={nofile}")
                spec = Spec(client, hosts, 2 * hosts, nofile, server.port)
                rows.append({"part": part, **run_child(spec)})
    return {"config": asdict(cfg), "runs": rows}


def report(results: dict[str, Any]) -> str:
    def row(r: dict[str, Any]) -> list[str]:
        pool = r["pool"]
        errors = ", ".join(f"{n:,} {kind}" for kind, n in r["errors"].items())
        return [
            r["client"],
            f"{r['hosts']:,}",
            f"{r['requests']:,}",
            "raised" if r["nofile"] is None else f"{r['nofile']:,}",
            f"{r['ok']:,}",
            "-" if r["first_failure"] is None else f"{r['first_failure']:,}",
            f"{r['peak_fds']:,}",
            "-" if not pool or pool["fd_budget"] is None else f"{pool['fd_budget']:,}",
            "-" if not pool else f"{pool['closed_fd_budget']:,}",
            f"{r['seconds']:.1f}",
            errors or "-",
        ]

    headers = (
        "client",
        "hosts",
        "requests",
        "ulimit -n",
        "ok",
        "first failed",
        "peak fds",
        "fd_budget",
        "closed fd_budget",
        "s",
        "errors",
    )
    lines = [title("file descriptors", results), ""]
    for part, heading in (
        ("limit", "1. a crawl under a low RLIMIT_NOFILE (default settings)"),
        ("sweep", "2. peak open descriptors, soft limit raised to the hard one"),
    ):
        rows = [row(r) for r in results["runs"] if r["part"] == part]
        lines += [heading, table(headers, rows), ""]
    gc_rows = [
        [
            r["client"],
            f"{r['hosts']:,}",
            f"{r['held_at_end']:,}",
            f"{r['gc_ms_held']:.1f}",
            f"{r['gc_ms_after_close']:.1f}",
        ]
        for r in results["runs"]
        if r["part"] == "sweep"
    ]
    lines += [
        "3. the collector: a full collection (median of 5) with the crawl's "
        "sockets still held, and after the session closed",
        table(
            ("client", "hosts", "fds held", "gc ms held", "gc ms after close"),
            gc_rows,
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = mode_parser(__doc__.splitlines()[0], RESULTS, MODES)
    parser.add_argument("--child", help="run one spec (JSON) and print its result")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(Spec(**json.loads(args.child)))))
        return 0
    cfg = pick_mode(args, MODES)
    results = {
        **run_record("fds", "bench/fds.py", argv),
        **run(cfg, progress_printer(args)),
    }
    publish(args, results, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
