"""Fixed-bucket duration histograms: what the pool times, kept per key and in
total (queue wait, connect, hold, connection lifetime).

Buckets are fixed, shared by every histogram, so that per-key histograms add
up to the totals by plain addition and exporters (Prometheus, OpenTelemetry)
can pass them on as they are. Observing is one ``bisect`` and two increments.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

__all__ = ["BOUNDS", "BUCKETS", "DURATIONS", "Histogram", "Timings", "bucket_of"]

BOUNDS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
    math.inf,
)
"""Upper bounds (inclusive, seconds) of the buckets; the last is +Inf."""

DURATIONS: tuple[str, ...] = ("wait_time", "connect_time", "hold_time", "lifetime")
"""What is timed: queue wait per request (0 when served at once), connection
opening, acquisition to release, and connection creation to close."""


BUCKETS = len(BOUNDS)


def bucket_of(which: int, seconds: float) -> int:
    """The index in ``Timings.counts`` of ``seconds`` in histogram ``which``."""
    return which * BUCKETS + bisect_left(BOUNDS, seconds)


class Timings:
    """The mutable histograms of one key (or of the totals).

    ``counts`` is one flat list: histogram ``i``'s buckets are at
    ``[i * BUCKETS, (i + 1) * BUCKETS)``. The core increments it in place
    (through :func:`bucket_of`), for the key and the totals with one lookup.
    """

    __slots__ = ("counts", "sums")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATIONS) * BUCKETS)
        self.sums = [0.0] * len(DURATIONS)

    def copy(self) -> Timings:
        new = Timings.__new__(Timings)
        new.counts = self.counts[:]
        new.sums = self.sums[:]
        return new

    def add(self, other: Timings) -> None:
        counts = self.counts
        for i, n in enumerate(other.counts):
            if n:
                counts[i] += n
        for i, s in enumerate(other.sums):
            self.sums[i] += s

    def snapshot(self, which: int) -> Histogram:
        counts = tuple(self.counts[which * BUCKETS : (which + 1) * BUCKETS])
        return Histogram(BOUNDS, counts, sum(counts), self.sums[which])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timings):
            return NotImplemented
        return self.counts == other.counts and all(
            math.isclose(a, b, abs_tol=1e-9)
            for a, b in zip(self.sums, other.sums, strict=True)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Histogram:
    """A snapshot of one duration histogram (seconds).

    ``counts[i]`` observations fell in ``(bounds[i-1], bounds[i]]``; the last
    bound is ``inf``. ``count`` and ``sum`` are over all observations.
    """

    bounds: tuple[float, ...] = BOUNDS
    counts: tuple[int, ...] = (0,) * len(BOUNDS)
    count: int = 0
    sum: float = 0.0

    @property
    def mean(self) -> float | None:
        """The mean duration, or ``None`` with no observation."""
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """An upper estimate of the ``q`` quantile: the bound of the bucket
        holding it (``inf`` if it is in the last one); ``None`` if empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q!r}")
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            seen += n
            if seen >= rank:
                return bound
        return self.bounds[-1]  # pragma: no cover - counts add up to count
