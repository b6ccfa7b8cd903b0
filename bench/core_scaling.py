"""Benchmark of the accounting core alone: no sockets, no event loop.

Drives :class:`aioconnpool._core.PoolCore` with fake connection handles (ints)
and fake keys (ints, grouped into one ``PoolKey`` each) to show how the cost
of the pool's bookkeeping grows with the number of keys and of waiters:

1. release with many keys waiting -- a full pool (limit 100, 2 per key) with
   W requests queued over K keys; each operation releases one connection
   keep-alive, completes the request it wakes and queues a new request on a
   random key, so the queue length stays constant;
2. hot key -- one busy key (arrive, reuse, release) beside K quiet live keys;
3. stats snapshot -- ``build_pool_stats`` over K live keys: alone, as a
   metric scrape (rank every host, read the busiest 50), every host read;
4. memory -- tracemalloc bytes per live key, and after every key drained.

Every figure printed is measured on this run; nothing is hard-coded. Timed
loops run with the garbage collector disabled, as ``timeit`` does, so a full
collection of the benchmark's own heap is not billed to one operation
(``harness.timing``).

Usage::

    .venv/bin/python bench/core_scaling.py [--quick] [--tiny] [--no-write]
                                           [--output PATH] [--seed N] [--verbose]
"""

from __future__ import annotations

import gc
import random
import statistics
import sys
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.cli import mode_parser, pick_mode, progress_printer, publish, run_record
from harness.report import ratio, size, spread, table, title
from harness.timing import calls_per_op, timed_batches

from aioconnpool._core import CLOSED, GRANTED, Decision, KeyFigures, PoolCore, Ticket
from aioconnpool._exporting import busiest
from aioconnpool._keys import PoolKey
from aioconnpool._stats import PoolStats, build_pool_stats

RESULTS = Path(__file__).resolve().parent / "results" / "core_scaling.json"

TOTAL_LIMIT = 100
PER_KEY_LIMIT = 2
HISTORY = 1_000
KEEPALIVE = 15.0

Core = PoolCore[Hashable, Hashable, PoolKey]


@dataclass(frozen=True)
class Config:
    mode: str
    keys: tuple[int, ...]
    min_waiters: int
    max_waiters: int
    waiter_sweep_keys: int
    waiter_sweep: tuple[int, ...]
    ops: int  # operations per timed batch
    repeats: int  # timed batches; the median is reported
    snapshot_repeats: int
    flag_help: str = ""  # --quick and --tiny: what the flag does (--help)


FULL = Config(
    mode="full",
    keys=(10, 1_000, 100_000),
    min_waiters=10_000,
    max_waiters=200_000,
    waiter_sweep_keys=1_000,
    waiter_sweep=(1_000, 10_000, 100_000),
    ops=20_000,
    repeats=5,
    snapshot_repeats=5,
)
QUICK = Config(
    mode="quick",
    keys=(10, 1_000, 10_000),
    min_waiters=10_000,
    max_waiters=20_000,
    waiter_sweep_keys=1_000,
    waiter_sweep=(1_000, 10_000, 30_000),
    ops=10_000,
    repeats=5,
    snapshot_repeats=5,
    flag_help="keys up to 10,000 instead of 100,000",
)
TINY = Config(
    mode="tiny",
    keys=(10, 100, 1_000),
    min_waiters=500,
    max_waiters=2_000,
    waiter_sweep_keys=100,
    waiter_sweep=(100, 1_000),
    ops=300,
    repeats=3,
    snapshot_repeats=3,
    flag_help="a smoke test: everything tiny (< 2 s)",
)
MODES = (FULL, QUICK, TINY)


# ---------------------------------------------------------------- helpers


def _group(key: Hashable) -> PoolKey:
    return PoolKey(f"h{key}.test", 80, False)


def _per_key(key: Hashable) -> int | None:
    return PER_KEY_LIMIT


def _unlimited(key: Hashable) -> int | None:
    return None


class FakeClock:
    """A clock the memory scenario can move forward to expire connections."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _new_core(
    limit_for: Callable[[Hashable], int | None],
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Core:
    return PoolCore(
        limit=TOTAL_LIMIT,
        limit_for=limit_for,
        group=_group,
        keepalive_timeout=KEEPALIVE,
        clock=clock,
        history=HISTORY,
    )


class Driver:
    """Plays the connector's part: completes granted tickets with fake handles."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.next_handle = 0
        self.acquired: deque[int] = deque()
        self.wakes = 0
        self.reuses = 0
        self.connects = 0
        self.closes = 0  # idle connections found expired when reused

    def complete(self, ticket: Ticket) -> None:
        """The request behind a granted ticket takes its connection."""
        if ticket.state != GRANTED:
            raise RuntimeError(f"expected a granted ticket, got {ticket!r}")
        if ticket.conn is None:
            handle = self.next_handle
            self.next_handle += 1
            self.core.connect_succeeded(ticket, handle)
            self.connects += 1
        else:
            handle = ticket.conn  # type: ignore[assignment]
            self.core.handed_over(ticket)
            self.reuses += 1
        self.acquired.append(handle)

    def arrive(self, key: int) -> None:
        ticket, decision = self.core.arrive(key)
        self.closes += len(decision.close)
        if ticket.state == GRANTED:
            self.complete(ticket)
        elif ticket.state == CLOSED:
            raise RuntimeError("the pool closed under the benchmark")

    def carry_out(self, decision: Decision | None) -> None:
        if decision is None:
            raise RuntimeError("released a connection the core does not hold")
        self.closes += len(decision.close)
        for ticket in decision.wake:
            self.wakes += 1
            self.complete(ticket)

    def leave_idle(self, key: int) -> None:
        """A request on ``key`` that releases its connection keep-alive."""
        self.arrive(key)
        self.carry_out(self.core.release(self.acquired.pop(), "eof", None))


def _per_op(
    run_batch: Callable[[int], None], cfg: Config, *, count_calls: bool = True
) -> dict[str, Any]:
    """ns per operation of ``cfg.repeats`` timed batches of ``cfg.ops``
    operations, after one more that warms up and is discarded; with
    ``count_calls``, one more batch, untimed, counts the calls per operation."""
    batches = cfg.repeats + 1
    ns = timed_batches(run_batch, batches, cfg.ops)[1:]
    counted: dict[str, Any] = {}
    if count_calls:
        counted = {
            "ops_per_batch": cfg.ops,
            "calls_per_op": calls_per_op(run_batch, batches, cfg.ops),
        }
    return {**counted, "ns_per_op": ns, "ns_per_op_median": statistics.median(ns)}


def _waiters_for(keys: int, cfg: Config) -> int:
    return min(max(keys * 2, cfg.min_waiters), cfg.max_waiters)


# ---------------------------------------------------------------- scenario 1


def release_with_waiters(
    keys: int, waiters: int, cfg: Config, seed: int
) -> dict[str, Any]:
    """Steady state of a full pool with ``waiters`` queued over ``keys`` keys."""
    rng = random.Random(seed)
    core = _new_core(_per_key)
    drv = Driver(core)
    # Fill the pool: up to TOTAL_LIMIT connections, round-robin over the keys
    # (with few keys the per-key limit caps the fill below TOTAL_LIMIT; the
    # extra requests then queue like any other).
    for i in range(TOTAL_LIMIT):
        drv.arrive(i % keys)
    for _ in range(waiters):
        drv.arrive(rng.randrange(keys))
    fill = core.acquired
    queued = core.waiting
    batches = cfg.repeats + 1  # the first batch warms up (see _per_op)
    # One more batch, untimed, counts the calls per operation.
    plan = [rng.randrange(keys) for _ in range((batches + 1) * cfg.ops)]
    ops = cfg.ops

    def run_batch(batch: int) -> None:
        acquired = drv.acquired
        release = core.release
        carry_out = drv.carry_out
        arrive = drv.arrive
        base = batch * ops
        for i in range(base, base + ops):
            carry_out(release(acquired.popleft(), "eof", None))
            arrive(plan[i])

    wakes_before = drv.wakes
    reuses_before, connects_before = drv.reuses, drv.connects
    per_op = _per_op(run_batch, cfg)
    total_ops = (batches + 1) * ops
    return {
        "keys": keys,
        "waiters": waiters,
        "queued_before": queued,
        "queued_after": core.waiting,
        "acquired": fill,
        "acquired_after": core.acquired,
        "idle_after": core.idle,
        "live_keys_after": sum(1 for _ in _live_keys(core)),
        "wakes_per_op": (drv.wakes - wakes_before) / total_ops,
        "reuse_share": _share(
            drv.reuses - reuses_before, drv.connects - connects_before
        ),
        "idle_closed_on_reuse": drv.closes,
        **per_op,
    }


def _live_keys(core: Core) -> Iterator[KeyFigures]:
    return (
        f
        for f in core.all_figures()
        if f.acquired or f.idle or f.waiting or f.connecting
    )


def _share(part: int, other: int) -> float:
    return part / (part + other) if part + other else 0.0


class _Probe:
    __slots__ = ("count", "items")

    def __init__(self) -> None:
        self.count = 0
        self.items: dict[int, None] = {}


def cache_control(keys: int, cfg: Config, seed: int) -> dict[str, Any]:
    """No pool at all: touch a random one of ``keys`` small objects per op.

    Puts the timings of scenario 1 in context: what the memory hierarchy alone
    charges for working on a random key among ``keys``.
    """
    rng = random.Random(seed)
    probes = {key: _Probe() for key in range(keys)}
    ops = cfg.ops
    plan = [rng.randrange(keys) for _ in range((cfg.repeats + 1) * ops)]

    def run_batch(batch: int) -> None:
        for i in range(batch * ops, (batch + 1) * ops):
            key = plan[i]
            probe = probes[key]
            probe.count += 1
            probe.items[key] = None
            del probe.items[key]

    return {"keys": keys, **_per_op(run_batch, cfg, count_calls=False)}


# ---------------------------------------------------------------- scenario 2


def hot_key(keys: int, cfg: Config) -> dict[str, Any]:
    """One busy key next to ``keys - 1`` quiet keys holding an idle connection."""
    core = _new_core(_unlimited)
    drv = Driver(core)
    for key in range(1, keys):
        drv.leave_idle(key)
    hot = 0
    reuses_before, connects_before = drv.reuses, drv.connects
    ops = cfg.ops

    def run_batch(batch: int) -> None:
        acquired = drv.acquired
        arrive = drv.arrive
        release = core.release
        carry_out = drv.carry_out
        for _ in range(ops):
            arrive(hot)
            carry_out(release(acquired.pop(), "eof", None))

    per_op = _per_op(run_batch, cfg)
    return {
        "keys": keys,
        "live_keys": sum(1 for _ in _live_keys(core)),
        "reuse_share": _share(
            drv.reuses - reuses_before, drv.connects - connects_before
        ),
        **per_op,
    }


# ---------------------------------------------------------------- scenario 3


def _core_with_idle_keys(
    keys: int, clock: Callable[[], float] = time.monotonic
) -> Core:
    core = _new_core(_per_key, clock=clock)
    drv = Driver(core)
    for key in range(keys):
        drv.leave_idle(key)
    return core


SCRAPE_HOSTS = 50  # the Prometheus exporter's default max_hosts


def stats_snapshot(keys: int, cfg: Config) -> dict[str, Any]:
    """Time ``build_pool_stats`` over ``keys`` live keys three ways: the
    snapshot alone (per-host ``HostStats`` are built when read), a metric
    scrape (snapshot, rank every host, read the busiest 50) and a snapshot
    whose every host is read."""
    core = _core_with_idle_keys(keys)
    hosts = 0

    def snapshot() -> PoolStats:
        return build_pool_stats(
            core, limit_per_host=PER_KEY_LIMIT, host_limits={}, group=_group
        )

    def snapshot_only(batch: int) -> None:
        nonlocal hosts
        hosts = len(snapshot().hosts)

    def scrape(batch: int) -> None:
        nonlocal hosts
        snap = snapshot()
        hosts = len([snap.hosts[key] for key in busiest(snap.hosts, SCRAPE_HOSTS)])

    def read_all(batch: int) -> None:
        nonlocal hosts
        hosts = len(list(snapshot().hosts.values()))

    out: dict[str, Any] = {"keys": keys}
    for name, run_batch in (
        ("snapshot", snapshot_only),
        ("scrape", scrape),
        ("read_all", read_all),
    ):
        ns = timed_batches(run_batch, cfg.snapshot_repeats, 1)
        median_ms = statistics.median(ns) / 1e6
        out[name] = {
            "ms": [n / 1e6 for n in ns],
            "ms_median": median_ms,
            "us_per_key": median_ms * 1e3 / keys,
        }
        if name == "snapshot":
            out["hosts_in_snapshot"] = hosts
    return out


# ---------------------------------------------------------------- scenario 4


def memory(keys: int) -> dict[str, Any]:
    """tracemalloc bytes per live key, and what is left once all keys drained."""
    gc.collect()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        clock = FakeClock()
        core = _new_core(_per_key, clock=clock)
        gc.collect()
        baseline = tracemalloc.get_traced_memory()[0]
        drv = Driver(core)
        for key in range(keys):
            drv.leave_idle(key)
        gc.collect()
        live = tracemalloc.get_traced_memory()[0] - baseline
        idle_live = core.idle
        # Drain: half the keys via a fresh request whose connection is released
        # with a close, the rest by keep-alive expiry.
        for key in range(0, keys, 2):
            drv.arrive(key)
            decision = core.release(drv.acquired.pop(), "eof", "server")
            if decision is None:
                raise RuntimeError("close release refused")
        clock.now += KEEPALIVE + 1
        expired = len(core.expire().close)
        gc.collect()
        drained = tracemalloc.get_traced_memory()[0] - baseline
        # CPython dicts keep their largest table after entries are deleted:
        # what the core's three per-key / per-connection maps still hold (the
        # idle connections are a ring of their records: no table).
        tables = sum(
            sys.getsizeof(table) - sys.getsizeof({})
            for table in (core._keys, core._conns, core._history._groups)
        )
        forgotten_keys, _ = core.forgotten
        history = sum(1 for _ in core.all_figures())
        left_live = sum(1 for _ in _live_keys(core))
        del drv
    finally:
        if started:
            tracemalloc.stop()
    return {
        "keys": keys,
        "idle_connections": idle_live,
        "bytes_live": live,
        "bytes_per_live_key": live / keys,
        "expired": expired,
        "bytes_after_drain": drained,
        "bytes_after_drain_per_peak_key": drained / keys,
        "bytes_in_emptied_dict_tables": tables,
        "live_keys_after_drain": left_live,
        "history_keys_after_drain": history,
        "forgotten_keys": forgotten_keys,
    }


# ---------------------------------------------------------------- report


def _fmt_ns(ns: float) -> str:
    return f"{ns:,.0f}"


def report(results: dict[str, Any]) -> str:
    cfg = results["config"]
    out: list[str] = [
        title("core scaling", results),
        f"limit={TOTAL_LIMIT} total, limit_per_host={PER_KEY_LIMIT} "
        f"(scenarios 1, 3, 4), history={HISTORY}",
        f"ns/op: median of {cfg['repeats']} batches of {cfg['ops']:,} ops "
        "(gc disabled while timing); calls/op: Python + C function calls per op",
        "each op includes the driver's own part (playing the connector: a few "
        "Python calls)",
        "",
        "1. release with many keys waiting "
        "(release keep-alive + complete the woken request + queue a new one)",
    ]
    s1 = results["release_with_waiters"]
    base = s1[0]["ns_per_op_median"]
    out.append(
        table(
            [
                "keys",
                "waiters",
                "acquired",
                "idle after",
                "wakes/op",
                "reuse",
                "calls/op",
                "ns/op",
                "min-max",
                f"vs K={s1[0]['keys']:,}",
            ],
            [
                [
                    f"{r['keys']:,}",
                    f"{r['queued_before']:,}",
                    f"{r['acquired']:,}",
                    f"{r['idle_after']:,}",
                    f"{r['wakes_per_op']:.2f}",
                    f"{r['reuse_share']:.0%}",
                    f"{r['calls_per_op']:.1f}",
                    _fmt_ns(r["ns_per_op_median"]),
                    spread(r["ns_per_op"]),
                    ratio(r["ns_per_op_median"], base),
                ]
                for r in s1
            ],
        )
    )
    sweep = results["waiter_sweep"]
    sbase = sweep[0]["ns_per_op_median"]
    control = results["control"]
    cbase = control[0]["ns_per_op_median"]
    out += [
        "",
        f"1b. same, waiter count swept at keys={sweep[0]['keys']:,}",
        table(
            [
                "keys",
                "waiters",
                "acquired",
                "wakes/op",
                "calls/op",
                "ns/op",
                "min-max",
                f"vs W={sweep[0]['queued_before']:,}",
            ],
            [
                [
                    f"{r['keys']:,}",
                    f"{r['queued_before']:,}",
                    f"{r['acquired']:,}",
                    f"{r['wakes_per_op']:.2f}",
                    f"{r['calls_per_op']:.1f}",
                    _fmt_ns(r["ns_per_op_median"]),
                    spread(r["ns_per_op"]),
                    ratio(r["ns_per_op_median"], sbase),
                ]
                for r in sweep
            ],
        ),
        "",
        "1c. control, no pool: look up a random one of K small objects and touch it",
        table(
            ["keys", "ns/op", "min-max", f"vs K={control[0]['keys']:,}"],
            [
                [
                    f"{r['keys']:,}",
                    _fmt_ns(r["ns_per_op_median"]),
                    spread(r["ns_per_op"]),
                    ratio(r["ns_per_op_median"], cbase),
                ]
                for r in control
            ],
        ),
    ]
    s2 = results["hot_key"]
    hbase = s2[0]["ns_per_op_median"]
    out += [
        "",
        "2. hot key (arrive + reuse idle + release keep-alive on one key; "
        "the other keys hold one idle connection each)",
        table(
            [
                "keys",
                "live keys",
                "reuse",
                "calls/op",
                "ns/op",
                "min-max",
                f"vs K={s2[0]['keys']:,}",
            ],
            [
                [
                    f"{r['keys']:,}",
                    f"{r['live_keys']:,}",
                    f"{r['reuse_share']:.1%}",
                    f"{r['calls_per_op']:.1f}",
                    _fmt_ns(r["ns_per_op_median"]),
                    spread(r["ns_per_op"]),
                    ratio(r["ns_per_op_median"], hbase),
                ]
                for r in s2
            ],
        ),
    ]
    s3 = results["stats_snapshot"]
    out += [
        "",
        f"3. stats snapshot (build_pool_stats, median of {cfg['snapshot_repeats']}):"
        " the snapshot alone; a scrape (rank every host,",
        f"   read the busiest {SCRAPE_HOSTS}); every host read",
        table(
            [
                "keys",
                "hosts",
                "snapshot ms",
                "us/key",
                "scrape ms",
                "us/key",
                "read all ms",
                "us/key",
            ],
            [
                [
                    f"{r['keys']:,}",
                    f"{r['hosts_in_snapshot']:,}",
                    *(
                        cell
                        for way in ("snapshot", "scrape", "read_all")
                        for cell in (
                            f"{r[way]['ms_median']:,.2f}",
                            f"{r[way]['us_per_key']:.2f}",
                        )
                    ),
                ]
                for r in s3
            ],
        ),
    ]
    s4 = results["memory"]
    out += [
        "",
        "4. memory (tracemalloc; one idle connection per key, then every key "
        "drained: half closed on release, half expired)",
        table(
            [
                "keys",
                "live",
                "per key",
                "after drain",
                "per peak key",
                "in dict tables",
                "live keys",
                "history",
                "forgotten",
            ],
            [
                [
                    f"{r['keys']:,}",
                    size(r["bytes_live"]),
                    size(r["bytes_per_live_key"]),
                    size(r["bytes_after_drain"]),
                    size(r["bytes_after_drain_per_peak_key"]),
                    size(r["bytes_in_emptied_dict_tables"]),
                    f"{r['live_keys_after_drain']:,}",
                    f"{r['history_keys_after_drain']:,}",
                    f"{r['forgotten_keys']:,}",
                ]
                for r in s4
            ],
        ),
        "  (after drain: mostly the history's counters plus the core's dict tables,",
        "   which CPython does not shrink when entries are deleted)",
        "",
        f"total run time: {results['elapsed_s']:.1f} s",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------- main


def run(cfg: Config, seed: int, progress: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    s1 = []
    for keys in cfg.keys:
        waiters = _waiters_for(keys, cfg)
        progress(f"release with many keys waiting: keys={keys:,} waiters={waiters:,}")
        s1.append(release_with_waiters(keys, waiters, cfg, seed))
    sweep = []
    for waiters in cfg.waiter_sweep:
        progress(f"waiter sweep: keys={cfg.waiter_sweep_keys:,} waiters={waiters:,}")
        sweep.append(release_with_waiters(cfg.waiter_sweep_keys, waiters, cfg, seed))
    control = []
    for keys in cfg.keys:
        progress(f"control: keys={keys:,}")
        control.append(cache_control(keys, cfg, seed))
    s2 = []
    for keys in cfg.keys:
        progress(f"hot key: keys={keys:,}")
        s2.append(hot_key(keys, cfg))
    s3 = []
    for keys in cfg.keys:
        progress(f"stats snapshot: keys={keys:,}")
        s3.append(stats_snapshot(keys, cfg))
    s4 = []
    for keys in cfg.keys:
        progress(f"memory: keys={keys:,}")
        s4.append(memory(keys))
    return {
        "release_with_waiters": s1,
        "waiter_sweep": sweep,
        "control": control,
        "hot_key": s2,
        "stats_snapshot": s3,
        "memory": s4,
        "elapsed_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = mode_parser(
        "Benchmark of aioconnpool's accounting core (no sockets).", RESULTS, MODES
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = parser.parse_args(argv)
    cfg = pick_mode(args, MODES)
    measured = run(cfg, args.seed, progress_printer(args))
    results: dict[str, Any] = {
        **run_record("core_scaling", __file__, argv),
        "seed": args.seed,
        "config": {
            "mode": cfg.mode,
            "keys": list(cfg.keys),
            "limit": TOTAL_LIMIT,
            "limit_per_host": PER_KEY_LIMIT,
            "history": HISTORY,
            "keepalive_timeout": KEEPALIVE,
            "ops": cfg.ops,
            "repeats": cfg.repeats,
            "snapshot_repeats": cfg.snapshot_repeats,
            "gc_disabled_while_timing": True,
        },
        **measured,
    }
    publish(args, results, report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
