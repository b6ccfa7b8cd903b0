"""One process of a fleet: ``python -W error -m tests.fleet.worker SPEC_JSON``.

It builds a ``RedisFleet`` and a ``PoolConnector`` (host names resolved to
127.0.0.1 by ``LoopbackResolver``), sends requests to a loopback server with
bounded concurrency, and says what happened. The test drives it over pipes:
one JSON object a line on stdout, one command a line on stdin.

    -> {"event": "ready", "pid", "session", "module"}   built, nothing sent yet
    <- go        start the crawl (without ``wait_for_go``, it starts at once)
    <- stop      send no new request; those in flight end
    <- report    (any time) -> {"event": "report", "local", "fleet"}: the
                 connector's figures now, for a failing test to show
    -> {"event": "finished", ...}   every request ended: a ``Summary``, taken
                                    before the connector closes
    <- exit      (with ``linger`` only) close the session and the connector
    -> {"event": "closed", "fleet_state"}

End of file on stdin counts as go, stop and exit at once, so a worker never
outlives its test's pipe. It exits 0 with nothing on stderr, or the test
fails (the test runs it with ``-W error``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

import aioconnpool
from aioconnpool import PoolConnector
from aioconnpool.fleet import FleetUnavailableError, RedisFleet
from aioconnpool.testing import LoopbackResolver

SAMPLES = 3  # messages kept per kind of error


@dataclass
class WorkerSpec:
    """What one worker does (sent as JSON on its command line)."""

    redis_url: str
    port: int  # the counting server's
    hosts: list[str]  # request i goes to hosts[i % len(hosts)]
    name: str = "fleet-test"
    limit_per_host: int = 2
    host_limits: dict[str, int | None] | None = None
    lease_ttl: float = 10.0
    on_unavailable: str = "local"
    acquire_timeout: float | None = None
    redis_timeout: float = 2.0
    path: str = "/?delay=0.02"
    requests: int = 100  # at most; "stop" ends the crawl sooner
    concurrency: int = 8  # requests in flight at once
    local_limit: int = 100
    local_limit_per_host: int = 8
    timeout: float = 10.0  # ClientTimeout(total=...) of every request
    cancel_rate: float = 0.0  # share of requests cancelled at a random moment
    seed: int = 0
    wait_for_go: bool = True
    linger: bool = False  # after "finished", wait for "exit" before closing
    cluster: bool = False  # redis_url names a node of a Redis Cluster
    delay_per_host: float = 0.0  # pacing, fleet-wide with the fleet

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        return cls(**json.loads(text))


@dataclass
class Summary:
    """What a worker reports when every request has ended.

    ``outcomes`` counts requests by outcome: ``"ok"``, ``"cancelled"`` or an
    exception's class name. ``requests`` holds one ``[start, duration,
    outcome]`` per request (``start`` in wall-clock seconds, comparable across
    processes on one machine). ``local`` is ``connector.stats()``'s
    ``acquired``, ``connecting`` and ``waiting``; ``fleet`` the fleet figures,
    with ``mine`` and ``waiting_here`` summed over hosts.
    """

    pid: int
    outcomes: dict[str, int]
    samples: dict[str, list[str]]
    unavailable_hosts: list[str]
    unavailable_addresses: list[str]
    requests: list[tuple[float, float, str]]
    local: dict[str, int]
    fleet: dict[str, Any]
    warnings: list[str]

    @property
    def ok(self) -> int:
        return self.outcomes.get("ok", 0)

    @property
    def failed(self) -> dict[str, int]:
        """Outcomes other than ``ok`` and ``cancelled``."""
        return {k: n for k, n in self.outcomes.items() if k not in ("ok", "cancelled")}

    @property
    def max_duration(self) -> float:
        return max((d for _, d, _ in self.requests), default=0.0)

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Summary:
        fields = {k: v for k, v in event.items() if k != "event"}
        fields["requests"] = [tuple(r) for r in fields["requests"]]
        return cls(**fields)


@dataclass
class Commands:
    """The test's commands, read from stdin."""

    go: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    exit: asyncio.Event = field(default_factory=asyncio.Event)
    on_report: Callable[[], None] | None = None

    async def read(self, reader: asyncio.StreamReader) -> None:
        events = {"go": self.go, "stop": self.stop, "exit": self.exit}
        while True:
            line = await reader.readline()
            if not line:  # the test is gone or done: finish
                for event in events.values():
                    event.set()
                return
            command = line.decode().strip()
            if command in events:
                events[command].set()
            elif command == "report" and self.on_report is not None:
                self.on_report()
            else:  # anything on stderr fails the test
                print(f"worker: unknown command {command!r}", file=sys.stderr)


class Warnings(logging.Handler):
    """aioconnpool's log records at WARNING and above."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Crawl:
    """``spec.requests`` requests, ``spec.concurrency`` at a time."""

    def __init__(self, spec: WorkerSpec, session: aiohttp.ClientSession) -> None:
        self.spec = spec
        self.session = session
        self.outcomes: dict[str, int] = {}
        self.samples: dict[str, list[str]] = {}
        self.unavailable_hosts: set[str] = set()
        self.unavailable_addresses: set[str] = set()
        self.requests: list[tuple[float, float, str]] = []

    async def fetch(self, url: str) -> None:
        async with self.session.get(url) as resp:
            body = await resp.read()
            if resp.status != 200 or body != b"ok":
                raise RuntimeError(f"HTTP {resp.status}: {body[:100]!r}")

    def ended(self, start: float, started: float, task: asyncio.Task[None]) -> None:
        duration = asyncio.get_running_loop().time() - started
        if task.cancelled():
            outcome = "cancelled"
        else:
            exc = task.exception()
            if exc is None:
                outcome = "ok"
            else:
                outcome = type(exc).__name__
                kept = self.samples.setdefault(outcome, [])
                if len(kept) < SAMPLES:
                    kept.append(str(exc))
                if isinstance(exc, FleetUnavailableError):
                    self.unavailable_hosts.add(exc.host.host)
                    self.unavailable_addresses.add(exc.address)
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.requests.append((round(start, 3), round(duration, 4), outcome))

    async def run(self, commands: Commands) -> None:
        spec = self.spec
        loop = asyncio.get_running_loop()
        rng = random.Random(spec.seed)
        room = asyncio.Semaphore(spec.concurrency)
        tasks: set[asyncio.Task[None]] = set()

        def done(start: float, started: float, task: asyncio.Task[None]) -> None:
            room.release()
            tasks.discard(task)
            self.ended(start, started, task)

        for i in range(spec.requests):
            await room.acquire()
            if commands.stop.is_set():
                room.release()
                break
            host = spec.hosts[i % len(spec.hosts)]
            url = f"http://{host}:{spec.port}{spec.path}"
            task = loop.create_task(self.fetch(url))
            tasks.add(task)
            start, started = time.time(), loop.time()
            task.add_done_callback(functools.partial(done, start, started))
            if spec.cancel_rate and rng.random() < spec.cancel_rate:
                how = rng.randrange(3)
                if how == 0:
                    task.cancel()  # before it even starts
                elif how == 1:
                    loop.call_soon(task.cancel)  # right after its first step
                else:
                    loop.call_later(rng.uniform(0, 0.05), task.cancel)
        while tasks:
            await asyncio.wait(set(tasks))


def summary(crawl: Crawl, connector: PoolConnector, logged: Warnings) -> Summary:
    st = connector.stats()
    fleet = st.fleet
    assert fleet is not None
    return Summary(
        pid=os.getpid(),
        outcomes=crawl.outcomes,
        samples=crawl.samples,
        unavailable_hosts=sorted(crawl.unavailable_hosts),
        unavailable_addresses=sorted(crawl.unavailable_addresses),
        requests=crawl.requests,
        local={
            "acquired": st.acquired,
            "connecting": st.connecting,
            "waiting": st.waiting,
        },
        fleet={
            "state": fleet.state,
            "session": fleet.session,
            "address": fleet.address,
            "outages": fleet.outages,
            "lapses": fleet.lapses,
            "local_grants": fleet.local_grants,
            "round_trips": fleet.round_trips,
            "mine": sum(h.mine for h in fleet.hosts.values()),
            "waiting_here": sum(h.waiting_here for h in fleet.hosts.values()),
            "repr": repr(fleet),
        },
        warnings=logged.messages,
    )


async def main(spec: WorkerSpec) -> None:
    logged = Warnings()
    logging.getLogger("aioconnpool").addHandler(logged)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin
    )
    commands = Commands()
    reading = loop.create_task(commands.read(stdin))
    fleet = RedisFleet(
        spec.redis_url,
        name=spec.name,
        limit_per_host=spec.limit_per_host,
        host_limits=spec.host_limits,
        lease_ttl=spec.lease_ttl,
        on_unavailable=spec.on_unavailable,
        acquire_timeout=spec.acquire_timeout,
        redis_timeout=spec.redis_timeout,
        cluster=spec.cluster,
    )
    connector = PoolConnector(
        limit=spec.local_limit,
        limit_per_host=spec.local_limit_per_host,
        fleet=fleet,
        resolver=LoopbackResolver(suffix=".test"),
        delay_per_host=spec.delay_per_host,
    )

    def report() -> None:
        st = connector.stats()
        assert st.fleet is not None
        emit(
            "report",
            pid=os.getpid(),
            local={"acquired": st.acquired, "connecting": st.connecting},
            fleet=st.fleet.to_dict(),
        )

    commands.on_report = report
    try:
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=spec.timeout)
        ) as session:
            st = connector.stats().fleet
            assert st is not None
            emit(
                "ready",
                pid=os.getpid(),
                session=st.session,
                module=aioconnpool.__file__,
            )
            if spec.wait_for_go:
                await commands.go.wait()
            crawl = Crawl(spec, session)
            await crawl.run(commands)
            # Let the last releases and cancels reach the pool's books.
            for _ in range(3):
                await asyncio.sleep(0)
            emit("finished", **asdict(summary(crawl, connector, logged)))
            if spec.linger:
                await commands.exit.wait()
        st = connector.stats().fleet
        assert st is not None
        emit("closed", fleet_state=st.state)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        transport.close()


if __name__ == "__main__":
    asyncio.run(main(WorkerSpec.from_json(sys.argv[1])))
