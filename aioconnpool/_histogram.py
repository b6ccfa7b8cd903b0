"""Fixed-bucket duration histograms: what the pool times, kept per key and in
total (queue wait, connect, hold, connection lifetime).

Buckets are fixed, shared by every histogram, so that per-key histograms add
up to the totals by plain addition and exporters (Prometheus, OpenTelemetry)
can pass them on as they are. Observing is a scan for the bucket
(:func:`bucket_of`, inlined where every request passes) and two increments;
the counts live in ``Counters.n`` (see ``_core.counters``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = [
    "BOUNDS",
    "BUCKETS",
    "BUCKET_BY_MS",
    "BY_MS_END",
    "BY_MS_LAST",
    "DURATIONS",
    "Histogram",
    "bucket_of",
]

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


def bucket_of(seconds: float) -> int:
    """The bucket of ``seconds``: the first whose bound is >= it, the same
    index as ``bisect.bisect_left(BOUNDS, seconds)`` (``BOUNDS`` ends in
    ``inf``, so the scan always stops).

    A scan from the first bucket, not a bisection: the core inlines this
    loop where every request passes (hold and wait times, connect times), so
    that recording a duration makes no call, and those durations nearly
    always fall in the first few buckets.
    """
    b = 0
    while seconds > BOUNDS[b]:
        b += 1
    return b


BY_MS_END: Final = 10_000
"""Durations shorter than this many milliseconds have a table (``BUCKET_BY_MS``)."""

BUCKET_BY_MS = bytes(bucket_of((ms + 0.5) / 1000) for ms in range(BY_MS_END))
"""The bucket of a duration strictly between ``ms`` and ``ms + 1``
milliseconds, at index ``ms``.

Every finite bound is a whole number of milliseconds, and ``bound * 1000.0``
is exactly that number (``tests/test_core.py`` checks both), so for a
duration ``s`` under ``BY_MS_END`` ms, ``b = BUCKET_BY_MS[int(s * 1000.0)]``
is ``bucket_of(s)``, or one too far when ``s`` sits on the bound just below
(``s <= BOUNDS[b - 1]``: take ``b - 1``). The core's hot paths bucket hold
and wait times this way: a multiplication, a conversion and two comparisons
instead of a scan whose comparisons grow with the duration (four or five
for a hold of 10-50 ms). Longer durations (a long queue's waits) are found
by a scan from ``BY_MS_LAST``.
"""

BY_MS_LAST: Final = 11  # BUCKET_BY_MS[-1], as a literal the compiled core inlines
"""The bucket of the table's last millisecond: where a duration of
``BY_MS_END`` ms or more starts its scan (its bound is ``BY_MS_END`` ms)."""
if BUCKET_BY_MS[-1] != BY_MS_LAST:  # a bound added under 10 s
    raise RuntimeError(f"BY_MS_LAST is {BY_MS_LAST}, the table says {BUCKET_BY_MS[-1]}")


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
