"""Timing: the garbage collector, timed batches, calls per op, percentiles.

Timed loops run with CPython's cyclic garbage collector off, as ``timeit``
does, so a full collection of the benchmark's own heap is not billed to one
operation; where the collector stays on, :class:`GcTimer` measures what it
took.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

__all__ = [
    "GcTimer",
    "calls_per_op",
    "collector_paused",
    "percentiles",
    "timed_batches",
]


@contextmanager
def collector_paused(pause: bool = True) -> Iterator[None]:
    """Collect the garbage made so far; then, with ``pause``, keep the
    collector off until the block ends (and back on if it was on)."""
    gc.collect()
    was_enabled = gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
    finally:
        if pause and was_enabled:
            gc.enable()


class GcTimer:
    """Times each garbage collection, per generation, while registered.

    Measured, never estimated: ``gc.callbacks`` calls us at the start and the
    stop of every collection, automatic or explicit. Collections do not nest
    (CPython runs one at a time), so one pending start suffices.
    """

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started: float | None = None

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
        elif self._started is not None:  # a stop whose start we saw
            generation = info["generation"]
            self.collections[generation] += 1
            self.seconds[generation] += now - self._started
            self._started = None

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    @property
    def total_s(self) -> float:
        return sum(self.seconds)


def timed_batches(
    run_batch: Callable[[int], None], batches: int, ops: int
) -> list[float]:
    """ns per operation of each of ``batches`` calls of ``run_batch(batch)``,
    with the collector off."""
    results: list[float] = []
    with collector_paused():
        for batch in range(batches):
            start = time.perf_counter_ns()
            run_batch(batch)
            elapsed = time.perf_counter_ns() - start
            results.append(elapsed / ops)
    return results


def calls_per_op(run_batch: Callable[[int], None], batch: int, ops: int) -> float:
    """Python and C function calls per operation in one (untimed) batch.

    A machine-independent measure of the work done: flat if the algorithm
    is, whatever the caches do to the time.
    """
    calls = 0

    def profiler(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(profiler)
    try:
        run_batch(batch)
    finally:
        sys.setprofile(None)
    return calls / ops


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """Nearest-rank p50 / p99 and the max, in milliseconds."""
    if not values:
        return {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        index = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.5) - 1))
        return ordered[index] * 1e3

    return {
        "count": len(ordered),
        "p50_ms": rank(0.50),
        "p99_ms": rank(0.99),
        "max_ms": ordered[-1] * 1e3,
    }
