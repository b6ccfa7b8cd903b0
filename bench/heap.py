"""The heap the garbage collector walks: objects it tracks per kept connection
and host, and its full collections during the many-hosts crawl.

Counts, not seconds: on a shared machine a run's time moves by more than the
changes this measures, while the number of tracked objects a connector keeps
does not move at all, and the number of full collections only a little.
Two parts, each client in a process of its own (no heap inherited), against
the loopback server of ``harness.server`` in a third:

* ``kept`` -- ``hosts`` requests issued at once, one per host (``h{i}.test``),
  ``limit=100``, ``limit_per_host=2``, after a warm-up of 50 other hosts:
  ``len(gc.get_objects())`` after ``gc.collect()`` before and after, per
  host (each request leaves one idle connection and one pool key behind),
  and which types make the difference (``--types``). The server keeps idle
  connections for 60 s here, so none is closed under the count.
* ``crawl`` -- the many-hosts socket benchmark's crawl (``n`` requests issued
  at once over ``keys`` hosts, ``limit=100``, ``limit_per_host=2``, the
  server's 2 s idle timeout): collections per generation, and the tracked
  objects at the start of each full collection (``gc.callbacks``; counting
  them there adds time to the run, never objects to the count) -- the peak
  and each one, and with ``--types`` the heap's commonest types at the peak.

Usage::

    .venv/bin/python bench/heap.py kept [--hosts 1000] [--types 25]
    .venv/bin/python bench/heap.py crawl [--n 20000] [--keys 15000] [--rounds 1] \\
        [--clients floor,aiohttp,aioconnpool]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from harness.clients import AIOHTTP, OURS, host_name, open_client, url_for
from harness.server import ServerProcess, raise_fd_limit

HERE = Path(__file__).resolve()
# The socket benchmark's floor: aiohttp closing every connection, one host.
FLOOR = "floor"
WARM_HOSTS = 50


def _type_name(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _histogram() -> Counter[str]:
    return Counter(_type_name(o) for o in gc.get_objects())


async def _kept(client: str, port: int, hosts: int, types: int) -> dict[str, Any]:
    async with open_client(client, limit=100, limit_per_host=2) as c:
        warm = [url_for(f"warm{i}.test", port) for i in range(WARM_HOSTS)]
        await asyncio.gather(*(c.fetch(u) for u in warm))
        urls = [url_for(host_name(i), port) for i in range(hosts)]
        gc.collect()
        before = len(gc.get_objects())
        before_types = _histogram() if types else Counter()
        await asyncio.gather(*(c.fetch(u) for u in urls))
        del urls
        gc.collect()
        after = len(gc.get_objects())
        diff: Counter[str] = Counter()
        if types:
            diff = _histogram()
            diff.subtract(before_types)
        pool = c.pool()
    result: dict[str, Any] = {
        "client": client,
        "hosts": hosts,
        "tracked_before": before,
        "tracked_after": after,
        "per_host": (after - before) / hosts,
    }
    if pool:
        result["pool"] = pool
    if types:
        result["types_per_host"] = {
            name: count / hosts
            for name, count in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:types]
            if count
        }
    return result


class _FullCollections:
    """Counts collections per generation and the tracked objects at the start
    of each full one."""

    def __init__(self, types: int) -> None:
        self.collections = [0, 0, 0]
        self.at_full: list[int] = []
        self.types = types
        self.peak_types: Counter[str] = Counter()

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        generation = info["generation"]
        if phase == "start" and generation == 2:
            tracked = len(gc.get_objects())
            if self.types and tracked > max(self.at_full, default=0):
                self.peak_types = _histogram()
            self.at_full.append(tracked)
        elif phase == "stop":
            self.collections[generation] += 1


async def _crawl(
    client: str, *, port: int, n: int, keys: int, force_close: bool, types: int
) -> dict[str, Any]:
    done = {"ok": 0, "errors": 0}
    async with open_client(
        client, limit=100, limit_per_host=2, force_close=force_close
    ) as c:
        urls = [url_for(host_name(i % keys), port) for i in range(n)]

        async def one(url: str) -> None:
            try:
                await c.fetch(url)
            except Exception:
                done["errors"] += 1
            else:
                done["ok"] += 1

        gc.collect()
        start = len(gc.get_objects())
        probe = _FullCollections(types)
        gc.callbacks.append(probe)
        try:
            await asyncio.gather(*(one(u) for u in urls))
        finally:
            gc.callbacks.remove(probe)
        end = len(gc.get_objects())
        pool = c.pool()
    result: dict[str, Any] = {
        "client": client,
        "n": n,
        "keys": keys,
        "force_close": force_close,
        **done,
        "collections": probe.collections,
        "tracked_at_start": start,
        "tracked_at_end": end,
        "peak_at_full": max(probe.at_full, default=0),
        "at_full": probe.at_full,
    }
    if types:
        result["types_at_peak"] = dict(probe.peak_types.most_common(types))
    if pool:
        result["pool"] = pool
    return result


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    raise_fd_limit()
    if spec["part"] == "kept":
        return asyncio.run(
            _kept(spec["client"], spec["port"], spec["hosts"], spec["types"])
        )
    return asyncio.run(
        _crawl(
            spec["client"],
            port=spec["port"],
            n=spec["n"],
            keys=spec["keys"],
            force_close=spec["force_close"],
            types=spec["types"],
        )
    )


def _run_child(spec: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(HERE), "--child", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", nargs="?", choices=("kept", "crawl"))
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--types", type=int, default=0, help="top N types by diff")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=15_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--clients",
        default=f"{AIOHTTP},{OURS}",
        help=f"comma-separated; {FLOOR!r}: aiohttp, force_close=True, one host",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))), flush=True)
        return 0
    if args.part is None:
        parser.error("name a part: kept or crawl")
    # Idle connections outlive the kept count (60 s); the crawl keeps the
    # socket benchmark's 2 s.
    idle = 60.0 if args.part == "kept" else 2.0
    with ServerProcess(idle_timeout=idle) as server:
        for _ in range(args.rounds):
            for client in args.clients.split(","):
                floor = client == FLOOR
                spec = {
                    "part": args.part,
                    "client": AIOHTTP if floor else client,
                    "port": server.port,
                    "hosts": args.hosts,
                    "types": args.types,
                    "n": args.n,
                    "keys": 1 if floor else args.keys,
                    "force_close": floor,
                }
                print(json.dumps(_run_child(spec)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
