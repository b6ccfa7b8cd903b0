"""Benchmark of per-host pacing in the pure pacer: no sockets, no event loop.

One request's pacing work is ``arrive`` (its start decided, queued) then,
once its time has come, ``due`` (let go) and ``ended`` (it started). This
measures that work per request with 1 paced host and with ``--hosts``
(100,000 by default) paced hosts each holding a waiting request, against an
unpaced request (``arrive`` answering "not paced", the only work pacing adds
to a host without a delay in a connector that paces others; a connector
that paces nobody runs no pacing code at all). It prints ns per request and
calls per request (counted by a profile hook: flat if the algorithm is,
whatever the caches do) and the ratios to the unpaced request and to one
host. Timed loops run with the garbage collector off (``harness.timing``).

Usage::

    .venv/bin/python bench/pacing.py [--hosts N] [--batches N]
"""

from __future__ import annotations

import argparse
import statistics

from harness.timing import calls_per_op, timed_batches

from aioconnpool._core.pacing import Pacer

DELAY = 1.0


def paced_round(hosts: int) -> tuple[Pacer[str], list[str]]:
    """A pacer with ``hosts`` paced hosts, each with a request waiting."""
    pacer: Pacer[str] = Pacer(delay_for=lambda key: DELAY)
    keys = [f"h{i}.test" for i in range(hosts)]
    for key in keys:
        first, _ = pacer.arrive(key, 0.0)
        assert first is not None
        pacer.ended(first, 0.0, sent=True)
    return pacer, keys


def measure(hosts: int, batches: int) -> tuple[float, float]:
    """ns and calls per request: each batch lets one request of every host
    go (``due``, ``ended``) and queues the next (``arrive``)."""
    pacer, keys = paced_round(hosts)
    for key in keys:
        pacer.arrive(key, 0.0)  # one waiting request per host
    clock = [0.0]

    def run_batch(_batch: int) -> None:
        clock[0] += DELAY
        now = clock[0]
        released = pacer.due(now)
        for ticket in released:
            pacer.ended(ticket, now, sent=True)
        for key in keys:
            pacer.arrive(key, now)

    ns = statistics.median(timed_batches(run_batch, batches, hosts))
    calls = calls_per_op(run_batch, batches, hosts)
    return ns, calls


def measure_unpaced(requests: int, batches: int) -> tuple[float, float]:
    pacer: Pacer[str] = Pacer(delay_for=lambda key: 0.0)
    keys = [f"h{i}.test" for i in range(requests)]

    def run_batch(_batch: int) -> None:
        for key in keys:
            pacer.arrive(key, 0.0)

    ns = statistics.median(timed_batches(run_batch, batches, requests))
    return ns, calls_per_op(run_batch, 0, requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=7)
    args = parser.parse_args()
    unpaced_ns, unpaced_calls = measure_unpaced(args.hosts, args.batches)
    one_ns, one_calls = measure(1, args.batches * 1000)
    many_ns, many_calls = measure(args.hosts, args.batches)
    rows = [
        ("unpaced (arrive: not paced)", unpaced_ns, unpaced_calls),
        ("1 paced host", one_ns, one_calls),
        (f"{args.hosts:,} paced hosts", many_ns, many_calls),
    ]
    print(f"{'per request':<30} {'ns':>8} {'calls':>7}")
    for name, ns, calls in rows:
        print(f"{name:<30} {ns:>8.0f} {calls:>7.1f}")
    print(
        f"{args.hosts:,} paced hosts vs unpaced: {many_ns / unpaced_ns:.1f}x time, "
        f"{many_calls / unpaced_calls:.1f}x calls"
    )
    print(
        f"{args.hosts:,} paced hosts vs 1 paced host: {many_ns / one_ns:.2f}x time, "
        f"{many_calls / one_calls:.2f}x calls"
    )


if __name__ == "__main__":
    main()
