"""One measured run of a socket benchmark, in a process of its own.

``bench/sockets.py`` starts this script once per run, with the run described
as JSON on the command line, and reads one JSON line back from stdout. A
fresh interpreter per run means no client inherits another's heap, sockets or
caches, and a run that goes over its time budget can be stopped at once:
at the budget the script prints what it completed and exits without
unwinding (cancelling 50,000 queued httpx requests is itself quadratic).

Clients (opened by ``harness.clients``): ``aiohttp`` (``TCPConnector``),
``aioconnpool`` (``PoolConnector``), ``httpx`` (``AsyncClient``). Workloads:

* ``hot`` -- ``concurrency`` workers loop over one keep-alive host until ``n``
  requests are done; timed after a warm-up that opens the connections;
* ``crawl`` -- ``n`` requests issued at once over ``keys`` host names
  ``h{i}.test`` (request ``i`` goes to host ``i % keys``), fresh connector;
* ``queued`` -- ``n`` requests issued at once to one host, fresh connector;
* ``burst`` (fairness) -- ``big`` requests to one host and ``per_small``
  requests to each of ``small_hosts`` hosts, issued at once in a shuffled
  order;
* ``sustained`` (fairness) -- ``concurrency`` workers loop until ``n``
  requests are done: ``big_workers`` of them on one host, the others each
  time on a random one of ``small_hosts`` hosts, so the queue stays long
  with one host holding many waiters and many hosts a few each.

The fairness workloads record each request's wait for a connection, from
``on_request_start`` to ``on_connection_create_end`` or
``on_connection_reuseconn`` (so the wait for a new connection includes
opening it), per group: the big host, the small hosts, all.

Every run also times each collection of CPython's cyclic garbage collector
inside the timed window (``gc.callbacks``, per generation): with thousands of
requests in flight a full collection walks every pending task, whatever the
client. ``"gc": false`` in the spec disables the collector for the timed
window only: a diagnostic control, not a headline figure.

``"count_calls": true`` runs ``await timed()`` under ``cProfile`` with the
collector off and adds ``"calls"`` (every call the profiler saw, Python and
C: the sum of ``nc`` over its entries) and ``"calls_per_request"`` to the
result. That count is deterministic for a given client and N; the run's
timing is not a throughput figure (profiling slows it), so
``bench/sockets.py`` keeps such runs out of every median and ratio.

``"count_bytecodes": true`` (a diagnostic, not run by ``bench/sockets.py``)
runs the timed window under a ``sys.settrace`` hook that counts every
bytecode instruction the interpreter runs, per function, the collector off,
and adds ``"bytecodes_per_request"`` and ``"bytecodes_by_function"`` (per
request, the 40 largest). Like the call count it is deterministic, and it
sees what the call count cannot: a function that runs 200 instructions costs
one call, as does one that runs 5. It is about 50 times slower than a plain
run: use a few thousand requests. Compare two clients function by function::

    .venv/bin/python bench/socket_workloads.py \
        '{"workload": "hot", "client": "aioconnpool", "port": 0, "n": 5000,
          "count_bytecodes": true}'

Usage (normally only by ``bench/sockets.py``; with ``"port": 0`` it starts
a loopback server of its own, handy with ``--profile``)::

    .venv/bin/python bench/socket_workloads.py [--profile OUT.prof] \\
        '{"workload": "crawl", "client": "aioconnpool", "port": 0,
          "n": 20000, "keys": 15000, "limit_per_host": 2}'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import Any

import aiohttp
from harness.clients import Client, Fetch, host_name, open_client, url_for
from harness.machine import tcp_time_wait_sockets
from harness.server import (
    HOST,
    IDLE_TIMEOUT,
    ServerProcess,
    raise_fd_limit,
    server_info,
)
from harness.timing import GcTimer, collector_paused, percentiles

WORKLOADS = ("hot", "crawl", "queued", "burst", "sustained")
FAIRNESS = ("burst", "sustained")
BIG_HOST = "big.test"


@dataclass(frozen=True)
class Spec:
    """What one run does; sent to the child process as JSON."""

    workload: str
    client: str
    port: int
    n: int = 0
    keys: int = 1
    concurrency: int = 100
    limit: int = 100
    limit_per_host: int = 0
    force_close: bool = False
    big: int = 0
    big_workers: int = 0
    small_hosts: int = 0
    per_small: int = 0
    seed: int = 1
    budget_s: float = 60.0
    gc: bool = True  # False: the collector is off in the timed window (control)
    # True: count the Python and C calls of the timed window (cProfile, the
    # collector off). Profiling slows the run: its req/s is no throughput.
    count_calls: bool = False
    # True: count the bytecode instructions of the timed window, per function
    # (sys.settrace, the collector off); far slower still: no throughput.
    count_bytecodes: bool = False
    # PoolConnector's own keywords (aioconnpool only), e.g. {"max_idle": 0}.
    pool_options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Spec:
        return cls(**json.loads(text))


@dataclass
class Tally:
    """What the requests of a run came to."""

    done: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)


async def _guarded(fetch: Fetch, url: str, tally: Tally) -> None:
    try:
        await fetch(url)
    except Exception as exc:
        tally.errors[type(exc).__name__] += 1
    else:
        tally.ok += 1
    finally:
        tally.done += 1


# ---------------------------------------------------------------- workloads


def _base(spec: Spec) -> str:
    return url_for(HOST, spec.port)


async def _hot(
    client: Client, spec: Spec, tally: Tally
) -> Callable[[], Awaitable[Any]]:
    url = _base(spec)
    warm = Tally()
    for _ in range(2):  # open the connections, then reuse them once
        await asyncio.gather(
            *(_guarded(client.fetch, url, warm) for _ in range(spec.concurrency))
        )
    if warm.errors:
        raise RuntimeError(f"warm-up failed: {dict(warm.errors)}")
    remaining = spec.n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await _guarded(client.fetch, url, tally)

    return lambda: asyncio.gather(*(worker() for _ in range(spec.concurrency)))


def _issue_all(
    client: Client, urls: Sequence[str], tally: Tally
) -> Callable[[], Awaitable[Any]]:
    return lambda: asyncio.gather(*(_guarded(client.fetch, u, tally) for u in urls))


def _crawl_urls(spec: Spec) -> list[str]:
    return [url_for(host_name(i % spec.keys), spec.port) for i in range(spec.n)]


def _burst_urls(spec: Spec) -> list[str]:
    urls = [url_for(BIG_HOST, spec.port)] * spec.big
    urls += [
        url_for(host_name(j), spec.port)
        for j in range(spec.small_hosts)
        for _ in range(spec.per_small)
    ]
    random.Random(spec.seed).shuffle(urls)
    return urls


def _sustained(
    client: Client, spec: Spec, tally: Tally
) -> Callable[[], Awaitable[Any]]:
    rng = random.Random(spec.seed)
    big = url_for(BIG_HOST, spec.port)
    small = [url_for(host_name(j), spec.port) for j in range(spec.small_hosts)]
    remaining = spec.n

    async def worker(on_big: bool) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            url = big if on_big else small[rng.randrange(len(small))]
            await _guarded(client.fetch, url, tally)

    return lambda: asyncio.gather(
        *(worker(i < spec.big_workers) for i in range(spec.concurrency))
    )


class WaitTimes:
    """Per-request wait for a connection, from aiohttp's trace signals."""

    def __init__(self) -> None:
        self.by_group: dict[str, list[float]] = {"big host": [], "small hosts": []}
        self.config = aiohttp.TraceConfig()
        self.config.on_request_start.append(self._start)
        self.config.on_connection_create_end.append(self._got)
        self.config.on_connection_reuseconn.append(self._got)
        self.config.on_request_end.append(self._end)

    async def _start(self, s: object, ctx: SimpleNamespace, params: Any) -> None:
        ctx.t0 = time.perf_counter()
        ctx.t1 = None
        ctx.group = "big host" if params.url.host == BIG_HOST else "small hosts"

    async def _got(self, s: object, ctx: SimpleNamespace, params: object) -> None:
        if ctx.t1 is None:
            ctx.t1 = time.perf_counter()

    async def _end(self, s: object, ctx: SimpleNamespace, params: object) -> None:
        if ctx.t1 is not None:
            self.by_group[ctx.group].append(ctx.t1 - ctx.t0)

    def summary(self) -> dict[str, dict[str, float]]:
        groups = dict(self.by_group)
        groups["all"] = [w for waits in self.by_group.values() for w in waits]
        return {name: percentiles(waits) for name, waits in groups.items()}


# --------------------------------------------------------------------- run


async def measure(spec: Spec) -> dict[str, Any]:
    """Run ``spec`` once; the timed part stops the process at the budget."""
    tally = Tally()
    waits = WaitTimes() if spec.workload in FAIRNESS else None
    traces = [waits.config] if waits is not None else []
    async with open_client(
        spec.client,
        limit=spec.limit,
        limit_per_host=spec.limit_per_host,
        force_close=spec.force_close,
        trace_configs=traces,
        pool_options=spec.pool_options,
    ) as client:
        if spec.workload == "hot":
            timed = await _hot(client, spec, tally)
            total = spec.n
        elif spec.workload == "crawl":
            timed = _issue_all(client, _crawl_urls(spec), tally)
            total = spec.n
        elif spec.workload == "queued":
            timed = _issue_all(client, [_base(spec)] * spec.n, tally)
            total = spec.n
        elif spec.workload == "burst":
            urls = _burst_urls(spec)
            timed = _issue_all(client, urls, tally)
            total = len(urls)
        elif spec.workload == "sustained":
            timed = _sustained(client, spec, tally)
            total = spec.n
        else:
            raise ValueError(f"unknown workload {spec.workload!r}")
        before = await server_info(spec.port)
        time_wait = tcp_time_wait_sockets()
        # Registered (and the collector off, for the control) in the timed
        # window only: the set-up's and the other runs' collections are not
        # this run's.
        profiler: cProfile.Profile | BytecodeCounter | None = None
        if spec.count_calls:
            profiler = cProfile.Profile()
        elif spec.count_bytecodes:
            profiler = BytecodeCounter()
        paused = not spec.gc or spec.count_calls or spec.count_bytecodes
        with collector_paused(paused), GcTimer() as collector:
            start = time.perf_counter()
            cpu = time.process_time()
            # A thread, not loop.call_later: a client whose queue handling
            # blocks the event loop for seconds at a time must still be
            # stopped on time.
            watchdog = threading.Timer(
                spec.budget_s, _over_budget, (spec, tally, start)
            )
            watchdog.daemon = True
            watchdog.start()
            # The profiler sees the requests only, not the watchdog's start
            # (cProfile profiles this thread alone).
            if profiler is not None:
                profiler.enable()
            await timed()
            if profiler is not None:
                profiler.disable()
            elapsed = time.perf_counter() - start
            client_cpu = time.process_time() - cpu
        watchdog.cancel()
        after = await server_info(spec.port)
        pool = client.pool()
    result: dict[str, Any] = {
        "status": "ok",
        "requests": total,
        "ok": tally.ok,
        "errors": dict(tally.errors),
        "elapsed_s": elapsed,
        "req_per_s": total / elapsed,
        "client_cpu_share": client_cpu / elapsed,
        # The client process's own CPU time (time.process_time, all its
        # threads) in the timed window, per request.
        "client_cpu_s": client_cpu,
        "client_cpu_us_per_request": client_cpu / total * 1e6,
        "server_cpu_share": (after["cpu_s"] - before["cpu_s"]) / elapsed,
        "server_open_before": int(before["open"]) - 1,  # minus the info request
        "tcp_time_wait_before": time_wait,
        "gc": {
            "collections": collector.collections,
            "seconds": collector.seconds,
            "share": collector.total_s / elapsed,
        },
        # Collector time is inside the timed window, so this is always > 0.
        "req_per_s_outside_gc": total / (elapsed - collector.total_s),
    }
    if isinstance(profiler, cProfile.Profile):
        calls = count_calls(profiler)
        result["calls"] = calls
        result["calls_per_request"] = calls / total
    elif isinstance(profiler, BytecodeCounter):
        result["bytecodes_per_request"] = sum(profiler.counts.values()) / total
        result["bytecodes_by_function"] = {
            name: count / total for name, count in profiler.counts.most_common(40)
        }
    if pool:
        result["pool"] = pool
    if waits is not None:
        result["wait"] = waits.summary()
    return result


class BytecodeCounter:
    """Counts the bytecode instructions run in this thread between
    ``enable()`` and ``disable()``, per function (``file:line name``).

    A ``sys.settrace`` hook with per-opcode events: frames started while it
    is on are counted, so the ``await timed()`` frame itself is not, but
    every callback, task step and call it leads to is."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._before: Any = None

    def enable(self) -> None:
        self._before = sys.gettrace()  # a coverage tool's, say: put back after
        sys.settrace(self._start)

    def disable(self) -> None:
        sys.settrace(self._before)

    def _start(self, frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return self._step

    def _step(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "opcode":
            code = frame.f_code
            where = code.co_filename.rsplit("site-packages/", 1)[-1]
            self.counts[f"{where}:{code.co_firstlineno} {code.co_name}"] += 1
        return self._step


def count_calls(profiler: cProfile.Profile) -> int:
    """Every call the profiler saw, Python and C, recursive ones included."""
    stats = pstats.Stats(profiler)
    return sum(entry[1] for entry in stats.stats.values())  # type: ignore[attr-defined]


def _over_budget(spec: Spec, tally: Tally, start: float) -> None:
    # Report and leave at once: unwinding thousands of queued requests can
    # take longer than the run itself.
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "status": "over_budget",
                "budget_s": spec.budget_s,
                "elapsed_s": elapsed,
                "done": tally.done,
                "ok": tally.ok,
                "errors": dict(tally.errors),
            }
        ),
        flush=True,
    )
    os._exit(0)


def _idle_timeout(spec: Spec) -> float:
    """How long the run's own server keeps an idle connection.

    A counting run is 10 to 50 times slower than a timed one: on the hot
    host and the queued sweep, each connection then sits idle for about as
    long as the server's usual 2 s, and the server closes some just as the
    client reuses them (``ServerDisconnectedError``, and a new connection
    for each, counted into the request's figures). Those runs get a server
    that keeps idle connections for 10 minutes, so that the count is of the
    requests, not of the reconnections. The crawl keeps the 2 s: it relies
    on it to stay within the file descriptor limit (module docstring of
    ``sockets.py``).
    """
    counting = spec.count_calls or spec.count_bytecodes
    if counting and spec.workload in ("hot", "queued"):
        return 600.0
    return IDLE_TIMEOUT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One run of a socket benchmark.")
    parser.add_argument("spec", help="the run, as Spec JSON; port 0 starts a server")
    parser.add_argument(
        "--profile", type=Path, help="run under cProfile and dump the stats here"
    )
    args = parser.parse_args(argv)
    spec = Spec.from_json(args.spec)
    raise_fd_limit()
    with contextlib.ExitStack() as stack:
        if spec.port == 0:
            server = stack.enter_context(
                ServerProcess(idle_timeout=_idle_timeout(spec))
            )
            spec = replace(spec, port=server.port)
        if args.profile is None:
            result = asyncio.run(measure(spec))
        else:
            profiler = cProfile.Profile()
            result = profiler.runcall(asyncio.run, measure(spec))
            profiler.dump_stats(args.profile)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
