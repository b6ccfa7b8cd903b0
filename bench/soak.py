"""Randomised soak: thousands of requests, faults, cancellations and timeouts.

A ``PoolConnector`` (``limit=20``, ``limit_per_host=4``, short keep-alive)
sends requests over many host names (``h0.test``...; all resolve to
127.0.0.1) to four misbehaving loopback servers from ``tests/faulty.py``: one
answering by path (good answers, resets, hangs, malformed answers, short and
long bodies, idle closes, stale reuse, a client send that blocks), one that
closes each connection right after accepting it, one that resets it, one that
accepts slowly. Each request ends by reading the body, releasing it unread,
closing it, being cancelled after a random delay, or timing out.

Invariants are checked *during* the run (a sampler takes ``stats()`` every
few milliseconds: gauges >= 0, acquired + connecting <= limit in total and
per host, per-host figures add up to the totals, every acquisition ends
once) and *after* each round of requests and at the end (nothing acquired,
connecting or waiting; ``open`` equals the sockets the OS says we hold).

The plan (which request, host, fault, ending and delay) is a pure function of
``--seed`` and ``--requests``: the same seed replays the same plan (its digest
is printed). Socket timing still varies from run to run.

Usage::

    .venv/bin/python bench/soak.py [--duration SECONDS] [--requests N] [--seed N]
                                   [--hosts N] [--concurrency N]

Exits 1 if any invariant was broken, 0 otherwise. ``tests/test_soak.py``
runs a short version of :func:`soak` in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from harness.clients import host_name, pool_connector

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the tests package importable
    sys.path.insert(0, str(ROOT))

from aioconnpool import PoolConnector  # noqa: E402
from tests.faulty import FaultServer, client_sockets, settle_pool, violations  # noqa: E402

LIMIT = 20
LIMIT_PER_HOST = 4
KEEPALIVE = 0.3
BACKSTOP = aiohttp.ClientTimeout(total=2.0)  # no request may run longer
STUCK_AFTER = 5.0  # a request still running then ignored its timeouts
ROUND = 400  # requests between two quiet checkpoints
SAMPLE_EVERY = 0.005

# Which server a request goes to: the one answering by path, or one of the
# connection-level faults.
SERVERS: dict[str, float] = {
    "by-path": 0.85,
    "accept-close": 0.04,
    "accept-reset": 0.04,
    "slow-accept": 0.07,
}
# Faults of the by-path server, and their weights.
PATH_FAULTS: dict[str, float] = {
    "ok": 0.45,
    "close-idle": 0.07,
    "drop-next": 0.07,
    "reset-headers": 0.05,
    "reset-body": 0.05,
    "bad-status": 0.04,
    "bad-header": 0.04,
    "short-body": 0.05,
    "long-body": 0.04,
    "hang": 0.05,
    "trickle": 0.05,
    "sink": 0.04,
}
# Faults that never finish on their own: only sent with an ending that stops them.
ENDLESS = frozenset({"hang", "trickle", "sink"})
ENDINGS: dict[str, float] = {
    "read": 0.45,
    "release": 0.12,
    "close": 0.08,
    "cancel": 0.2,
    "timeout": 0.15,
}


@dataclass(frozen=True, slots=True)
class Step:
    host: str
    server: str
    fault: str
    ending: str
    delay: float  # when to cancel, or the total timeout


def make_plan(seed: int, requests: int, hosts: int) -> list[Step]:
    """The whole run, decided up front from the seed alone."""
    rng = random.Random(seed)
    plan: list[Step] = []
    for _ in range(requests):
        server = rng.choices(list(SERVERS), weights=list(SERVERS.values()))[0]
        fault = "ok"
        if server == "by-path":
            fault = rng.choices(list(PATH_FAULTS), weights=list(PATH_FAULTS.values()))[
                0
            ]
        ending = rng.choices(list(ENDINGS), weights=list(ENDINGS.values()))[0]
        if fault in ENDLESS and ending not in ("cancel", "timeout"):
            ending = rng.choice(("cancel", "timeout"))
        delay = rng.uniform(0.001, 0.03)  # never 0: total=0 means "no timeout"
        host = host_name(int(rng.paretovariate(1.2)) % hosts)  # a few hot hosts
        plan.append(Step(host, server, fault, ending, round(delay, 4)))
    return plan


def plan_digest(plan: Sequence[Step]) -> str:
    return hashlib.sha256(repr(list(plan)).encode()).hexdigest()[:16]


@dataclass
class Report:
    seed: int
    digest: str
    requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    logged: Counter[str] = field(default_factory=Counter)  # asyncio's error reports
    samples: int = 0
    checkpoints: int = 0
    leaks: int = 0  # checkpoints where the quiet pool disagreed with the OS
    violations: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    final: str = ""

    @property
    def cancellations(self) -> int:
        return self.outcomes["cancelled"]

    @property
    def timeouts(self) -> int:
        return self.outcomes["timeout"]


async def _big_body() -> AsyncIterator[bytes]:
    chunk = b"x" * 65536
    for _ in range(64):
        yield chunk


async def _request(session: aiohttp.ClientSession, target: str, step: Step) -> None:
    timeout = BACKSTOP
    if step.ending == "timeout":
        timeout = aiohttp.ClientTimeout(total=step.delay)
    if step.fault == "sink":  # a body big enough to block on a full buffer
        ctx = session.post(target, data=_big_body(), timeout=timeout)
    else:
        ctx = session.get(target, timeout=timeout)
    async with ctx as resp:
        if step.ending == "release":
            return  # leaving the block releases the response unread
        if step.ending == "close":
            resp.close()
            return
        await resp.read()


async def _run_step(
    session: aiohttp.ClientSession,
    connector: PoolConnector,
    servers: dict[str, FaultServer],
    step: Step,
    report: Report,
) -> None:
    target = servers[step.server].url(step.fault, host=step.host)
    report.faults[step.fault if step.server == "by-path" else step.server] += 1
    task = asyncio.create_task(_request(session, target, step))
    if step.ending == "cancel":
        await asyncio.sleep(step.delay)
        task.cancel()
    done, _ = await asyncio.wait({task}, timeout=STUCK_AFTER)
    if not done:
        # Past every timeout it was given: dump where it hangs, then end it.
        frames = "".join(traceback.format_stack(task.get_stack(limit=8)[-1]))
        report.violations.append(
            f"{step}: still running after {STUCK_AFTER} s; pool {connector!r}; "
            f"stuck at:\n{frames}"
        )
        task.cancel()
    try:
        await task
        outcome = "ok"
    except asyncio.CancelledError:
        outcome = "cancelled"
    except asyncio.TimeoutError:
        # aiohttp's socket timeouts are TimeoutErrors too; BACKSTOP firing
        # on an ending that was meant to finish would be a stuck request.
        outcome = "timeout" if step.ending == "timeout" else "stuck"
    except aiohttp.ClientError as exc:
        outcome = f"error:{type(exc).__name__}"
    except Exception as exc:  # anything else is a finding
        outcome = f"unexpected:{type(exc).__name__}"
        report.violations.append(f"{step}: unexpected {exc!r}")
    report.outcomes[outcome] += 1
    report.requests += 1


async def _worker(
    session: aiohttp.ClientSession,
    connector: PoolConnector,
    servers: dict[str, FaultServer],
    steps: Iterator[Step],
    report: Report,
) -> None:
    for step in steps:  # one iterator shared by all workers: each step runs once
        await _run_step(session, connector, servers, step, report)


async def _sampler(connector: PoolConnector, report: Report) -> None:
    while True:
        found = violations(connector.stats())
        report.samples += 1
        if found:
            report.violations.extend(f"during the run: {v}" for v in found)
        await asyncio.sleep(SAMPLE_EVERY)


async def soak(
    *,
    duration: float,
    requests: int,
    seed: int,
    hosts: int = 200,
    concurrency: int = 40,
) -> Report:
    """Run the plan for ``seed`` until it is done or ``duration`` has passed."""
    plan = make_plan(seed, requests, hosts)
    report = Report(seed=seed, digest=plan_digest(plan))
    started = time.monotonic()
    servers = {
        "by-path": FaultServer(sink_for=0.2),
        "accept-close": FaultServer(on_accept="close"),
        "accept-reset": FaultServer(on_accept="reset"),
        "slow-accept": FaultServer(accept_delay=0.005),
    }
    ports = tuple(s.port for s in servers.values())
    connector = pool_connector(
        limit=LIMIT, limit_per_host=LIMIT_PER_HOST, keepalive_timeout=KEEPALIVE
    )
    for srv in servers.values():
        await srv.__aenter__()
    loop = asyncio.get_running_loop()
    previous_handler = loop.get_exception_handler()

    def on_asyncio_error(
        loop: asyncio.AbstractEventLoop, context: dict[str, object]
    ) -> None:
        # "Future exception was never retrieved", "Unclosed ...": leaks too.
        exc = context.get("exception")
        report.logged[f"{context.get('message')}: {exc!r}"[:160]] += 1

    loop.set_exception_handler(on_asyncio_error)
    sampler: asyncio.Task[None] | None = None
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            sampler = asyncio.create_task(_sampler(connector, report))
            for start in range(0, len(plan), ROUND):
                if time.monotonic() - started >= duration:
                    break
                steps = iter(plan[start : start + ROUND])
                await asyncio.gather(
                    *(
                        _worker(session, connector, servers, steps, report)
                        for _ in range(concurrency)
                    )
                )
                found = await settle_pool(connector, ports)
                report.checkpoints += 1
                if found:
                    report.leaks += 1
                    report.violations.extend(
                        f"after request {report.requests}: {v}" for v in found
                    )
        # The session closed the connector: nothing may be left open.
        found = await settle_pool(connector, ports)
        if found:
            report.leaks += 1
            report.violations.extend(f"after close: {v}" for v in found)
        final = connector.stats()
        report.final = (
            f"requests={final.requests} created={final.created} "
            f"reused={final.reused} connect_errors={final.connect_errors} "
            f"open={final.open} os_sockets={client_sockets(*ports)}\n"
            f"released={dict(final.released)}\nclosed={dict(final.closed)}"
        )
    finally:
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        for srv in servers.values():
            await srv.close()
        gc.collect()  # unretrieved futures are reported when collected
        loop.set_exception_handler(previous_handler)
    for message, count in report.logged.items():
        report.violations.append(f"asyncio reported {count}x: {message}")
    if report.outcomes["stuck"]:
        report.violations.append(f"{report.outcomes['stuck']} requests never ended")
    report.elapsed = time.monotonic() - started
    return report


def render(report: Report) -> str:
    lines = [
        f"seed {report.seed}, plan digest {report.digest}",
        f"requests made:  {report.requests} in {report.elapsed:.1f} s",
        f"cancellations:  {report.cancellations}",
        f"timeouts:       {report.timeouts}",
        "faults injected by kind:",
        *(f"  {k:<14} {v}" for k, v in sorted(report.faults.items())),
        "outcomes:",
        *(f"  {k:<34} {v}" for k, v in sorted(report.outcomes.items())),
        f"stats() samples checked during the run: {report.samples}",
        f"quiet checkpoints (pool vs OS): {report.checkpoints}",
        f"leaks found:    {report.leaks}",
        f"errors reported by asyncio: {sum(report.logged.values())}",
        f"invariant violations: {len(report.violations)}",
        *(f"  {v}" for v in report.violations[:20]),
        "final pool:",
        *(f"  {line}" for line in report.final.splitlines()),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=40)
    args = parser.parse_args(argv)
    report = asyncio.run(
        soak(
            duration=args.duration,
            requests=args.requests,
            seed=args.seed,
            hosts=args.hosts,
            concurrency=args.concurrency,
        )
    )
    print(render(report))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
