"""The fleet scenarios' plumbing: a server that counts its own concurrent
requests per host, worker processes driven over pipes, and a reader of the
fleet's keys in Redis.

The server's count is independent of the fleet: a request is in progress from
the moment its handler starts until it ends (or the client hangs up: the
handler is cancelled then), which is inside the time the client holds its
fleet slot. So the server's peak for a host can never exceed the fleet limit
unless the fleet over-admits.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

import aioconnpool

from .worker import Summary, WorkerSpec

REPO = Path(__file__).resolve().parents[2]


class CountingServer:
    """An aiohttp server on loopback that counts, per Host (without the
    port), the requests in progress, their peak, and when each started.

    ``GET /?delay=S`` answers ``ok`` after ``S`` seconds (default 0.02).
    """

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.served: dict[str, int] = {}
        self.starts: dict[str, list[float]] = {}  # loop time of each start
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def total(self) -> int:
        """Requests answered, all hosts."""
        return sum(self.served.values())

    async def _handler(self, request: web.Request) -> web.Response:
        host = request.host.rsplit(":", 1)[0]
        delay = float(request.query.get("delay", "0.02"))
        self.now[host] = self.now.get(host, 0) + 1
        self.peak[host] = max(self.peak.get(host, 0), self.now[host])
        self.starts.setdefault(host, []).append(asyncio.get_running_loop().time())
        try:
            await asyncio.sleep(delay)
        finally:
            self.now[host] -= 1
        self.served[host] = self.served.get(host, 0) + 1
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._handler)
        # A client that hangs up (a killed worker, a cancelled request) ends
        # its request here too, so it stops counting as in progress.
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def until(
        self, predicate: Callable[[], bool], *, timeout: float, what: str
    ) -> None:
        """Wait until ``predicate()`` holds; fail after ``timeout`` seconds."""
        await until(predicate, timeout=timeout, what=what)


async def until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


class Worker:
    """One ``tests.fleet.worker`` process and its pipes."""

    def __init__(self, spec: WorkerSpec, proc: asyncio.subprocess.Process) -> None:
        self.spec = spec
        self.proc = proc
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reports: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.stderr = bytearray()
        self.ready: dict[str, Any] = {}
        self.summary: Summary | None = None
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def session(self) -> str:
        """The fleet session it started with."""
        return str(self.ready["session"])

    async def _read_stdout(self) -> None:
        # In chunks, not readline(): a summary line is longer than a
        # StreamReader's line limit.
        assert self.proc.stdout is not None
        pending = b""
        while chunk := await self.proc.stdout.read(1 << 16):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                try:
                    event = json.loads(line)
                except ValueError:
                    event = {"event": "garbage", "line": line.decode(errors="replace")}
                if event.get("event") == "report":
                    self.reports.put_nowait(event)
                else:
                    self.events.put_nowait(event)
        self.events.put_nowait({"event": "eof"})

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr += line

    def _describe(self) -> str:
        return (
            f"worker pid {self.pid} (returncode {self.proc.returncode}); stderr:\n"
            + self.stderr.decode(errors="replace")[-3000:]
        )

    async def expect(self, event: str, *, timeout: float) -> dict[str, Any]:
        """The worker's next event, which must be ``event``."""
        try:
            got = await asyncio.wait_for(self.events.get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"no {event!r} within {timeout} s from {self._describe()}"
            ) from None
        if got["event"] != event:
            if got["event"] == "eof":
                await asyncio.wait_for(self.proc.wait(), 5)
                await asyncio.gather(*self._readers)
            raise AssertionError(
                f"expected {event!r}, got {got!r} from {self._describe()}"
            )
        return got

    def send(self, command: str) -> None:
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing() and self.alive:
            stdin.write(f"{command}\n".encode())

    async def report(self, *, timeout: float = 5.0) -> dict[str, Any]:
        """The worker's figures now (for a failing test to show)."""
        self.send("report")
        return await asyncio.wait_for(self.reports.get(), timeout)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def finished(self, *, timeout: float) -> Summary:
        """Wait for the worker's summary (every request ended)."""
        self.summary = Summary.from_event(
            await self.expect("finished", timeout=timeout)
        )
        return self.summary

    async def close(self, *, timeout: float = 15.0) -> None:
        """Let it close its connector and exit; it must exit 0, quietly."""
        if self.spec.linger:
            self.send("exit")
        await self.expect("closed", timeout=timeout)
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self._readers)
        assert self.proc.returncode == 0, self._describe()
        assert not self.stderr, self._describe()

    def pause(self) -> None:
        """SIGSTOP: the whole process stalls (a long GC pause, a VM frozen)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no goodbye to Redis, sockets closed by the kernel."""
        if self.alive:
            self.proc.kill()

    async def reap(self) -> None:
        """Kill if still running, and collect the process and its pipes."""
        self.kill()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        await asyncio.wait_for(self.proc.wait(), 10)
        await asyncio.wait_for(asyncio.gather(*self._readers), 10)


class Workers:
    """Every worker a test started; all reaped at the end, whatever happens."""

    def __init__(self) -> None:
        self.all: list[Worker] = []

    async def spawn(self, spec: WorkerSpec) -> Worker:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-W",
            "error",
            "-m",
            "tests.fleet.worker",
            spec.to_json(),
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        worker = Worker(spec, proc)
        self.all.append(worker)
        return worker

    async def start(
        self, specs: list[WorkerSpec], *, timeout: float = 30.0
    ) -> list[Worker]:
        """Spawn workers and wait until each is ready (it has not sent
        anything yet). They import this checkout's ``aioconnpool``."""
        workers = [await self.spawn(spec) for spec in specs]
        readies = await asyncio.gather(
            *(w.expect("ready", timeout=timeout) for w in workers)
        )
        for worker, ready in zip(workers, readies, strict=True):
            worker.ready = ready
            # The same code as this process's (tox installs a copy of the
            # checkout: compare what the fleet runs, not where it lies).
            for part in (
                "fleet/_redis.py",
                "fleet/_connect.py",
                "fleet/_script.lua",
                "_aiohttp/fleet_gate.py",
            ):
                theirs = Path(ready["module"]).parent / part
                ours = Path(aioconnpool.__file__).parent / part
                assert theirs.read_bytes() == ours.read_bytes(), (part, ready)
        return workers

    async def run(
        self, specs: list[WorkerSpec], *, timeout: float = 60.0
    ) -> list[Summary]:
        """Start workers together, let them crawl to the end, close them."""
        workers = await self.start(specs)
        for worker in workers:
            worker.send("go")
        summaries = await asyncio.gather(
            *(w.finished(timeout=timeout) for w in workers)
        )
        for worker in workers:
            await worker.close()
        return list(summaries)

    async def reap(self) -> None:
        errors = await asyncio.gather(
            *(w.reap() for w in self.all), return_exceptions=True
        )
        for error in errors:
            if isinstance(error, BaseException):
                raise error


@dataclass(frozen=True)
class FleetResidue:
    """What the fleet ``name`` still has in Redis.

    ``held``: host -> session -> slots held; ``queue``: host -> the
    sessions of its queue entries, in order; ``granted``: host -> session ->
    tickets granted and not yet taken; ``queued``: host -> session -> its
    count of queue entries; ``live``: sessions whose lease has not run out;
    ``sessions``: every session in the lease table, with ``lease_left``
    (seconds; negative: run out, not yet collected) and ``info``; ``keys``:
    every key of the fleet.
    """

    live: frozenset[str]
    sessions: frozenset[str]
    lease_left: dict[str, float] = field(default_factory=dict)  # seconds
    info: dict[str, str] = field(default_factory=dict)  # "pid host ttl started"
    held: dict[str, dict[str, int]] = field(default_factory=dict)
    queue: dict[str, list[str]] = field(default_factory=dict)
    granted: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    queued: dict[str, dict[str, int]] = field(default_factory=dict)
    keys: frozenset[str] = frozenset()

    def entries(self, sessions: frozenset[str] | None = None) -> list[str]:
        """Every held slot, queue entry, stored grant and queued count (of
        ``sessions`` only, when given), described; empty when nothing is left."""
        found = []
        for host, holders in self.held.items():
            for s, n in holders.items():
                if n and (sessions is None or s in sessions):
                    found.append(f"{s} holds {n} of {host}")
        for host, entries in self.queue.items():
            for s in entries:
                if sessions is None or s in sessions:
                    found.append(f"{s} queued for {host}")
        for host, grants in self.granted.items():
            for s, tickets in grants.items():
                if tickets and (sessions is None or s in sessions):
                    found.append(f"{s} granted {tickets} of {host}, not taken")
        for host, counts in self.queued.items():
            for s, n in counts.items():
                if n and (sessions is None or s in sessions):
                    found.append(f"{s} counted {n} queued for {host}")
        return found

    def of_live(self) -> list[str]:
        """Entries that belong to live sessions: leaks, once those sessions
        have nothing in progress."""
        return self.entries(self.live)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def fleet_residue(redis_url: str, name: str) -> FleetResidue:
    """Read every key under ``aioconnpool:{name}:`` (the layout is described
    at the top of ``aioconnpool/fleet/_script.lua``)."""
    prefix = f"aioconnpool:{{{name}}}:"
    client: Any = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = {k async for k in client.scan_iter(match=_glob_escape(prefix) + "*")}
        seconds, micros = await client.time()
        now_ms = seconds * 1000 + micros // 1000
        leases = dict(await client.zrange(f"{prefix}sessions", 0, -1, withscores=True))
        info = await client.hgetall(f"{prefix}sinfo")
        held: dict[str, dict[str, int]] = {}
        queue: dict[str, list[str]] = {}
        granted: dict[str, dict[str, list[str]]] = {}
        queued: dict[str, dict[str, int]] = {}
        for key in sorted(keys):
            if not key.startswith(prefix + "h:"):
                continue
            host, _, what = key[len(prefix) + 2 :].rpartition(":")
            if what == "holders":
                held[host] = {s: int(n) for s, n in (await client.hgetall(key)).items()}
            elif what == "queue":
                entries = await client.zrange(key, 0, -1)
                queue[host] = [e.split(" ", 1)[0] for e in entries]
            elif what == "granted":
                granted[host] = {
                    s: t.split() for s, t in (await client.hgetall(key)).items()
                }
            elif what == "queued":
                queued[host] = {
                    s: int(n) for s, n in (await client.hgetall(key)).items()
                }
    finally:
        await client.aclose()
    return FleetResidue(
        live=frozenset(s for s, expiry in leases.items() if expiry > now_ms),
        sessions=frozenset(leases),
        lease_left={s: (expiry - now_ms) / 1000 for s, expiry in leases.items()},
        info=info,
        held=held,
        queue=queue,
        granted=granted,
        queued=queued,
        keys=frozenset(keys),
    )


async def settled_residue(
    redis_url: str, name: str, *, timeout: float = 3.0
) -> FleetResidue:
    """The fleet's residue once the live sessions' entries are gone, or as
    it is after ``timeout`` seconds: releases and cancels travel with a
    process's next call, so they reach Redis a round trip late, but a leak
    stays."""
    deadline = time.monotonic() + timeout
    while True:
        residue = await fleet_residue(redis_url, name)
        if not residue.of_live() or time.monotonic() > deadline:
            return residue
        await asyncio.sleep(0.05)


async def check_fleet_left(redis_url: str, name: str) -> None:
    """Every worker closed: each left the fleet at once, so Redis has no
    session of the fleet, and nothing held, queued or granted."""
    residue = await settled_residue(redis_url, name)
    assert residue.sessions == frozenset(), residue
    assert residue.entries() == [], residue
