"""Adaptive per-host concurrency: each host's limit learned from its latency
and its errors.

Theory of operation
-------------------
The connector reports one *sample* per request: how long the host took to
answer (the round trip from the connection's hand-over to the response's
headers, in seconds), whether the answer means *overload* (a 5xx, a 429, a
connection error), and the host's *demand* at that moment (its requests
acquired, connecting and queued). This class is pure: the caller passes
``now`` into every call and it never reads a clock.

Samples are gathered per host in *windows* of ``window`` samples. When a
window is full, the host's limit is recomputed once, in the spirit of
Netflix's Gradient2 and Envoy's adaptive concurrency filter:

* ``min_rtt``, the no-load baseline: the lowest good round trip of the
  window if it is lower than the baseline, else the baseline moved up by
  ``drift`` of the way towards it (a path that really got slower is learned
  in a few dozen windows);
* ``rtt``, the window's short-term latency: the median of its good round
  trips (one slow outlier does not move it);
* ``gradient = clamp(tolerance * min_rtt / rtt, 0.5, 1)``: 1 while the host
  answers within ``tolerance`` times its baseline, less as queues build up
  in it;
* ``target = estimate * gradient + sqrt(estimate) / 2`` (the root is the
  headroom that lets the limit probe upwards while latency holds; a half
  root keeps the limit within one of the knee of a host whose latency
  climbs past it), then
  ``estimate += smoothing * (target - estimate)``, bounded by ``min`` and
  ``max``. The limit in force is the estimate rounded down.

The known pitfalls of these algorithms, and what is done here instead:

* **Fast errors are not speed.** A server that fails fast (a 500 in a
  millisecond) would look like a fast server and get more concurrency. Here
  overload samples never enter ``rtt`` or ``min_rtt``. A window with more
  than ``overload_rate`` of them cuts the estimate at once by ``backoff``
  (multiplicative decrease, no smoothing); a window with any at all may
  shrink but never grow.
* **No growth while idle.** A host that uses 2 of its 16 slots shows low
  latency whatever its limit; growing the limit there would only be undone
  the first time the load comes. So latency moves the limit only if the
  host's demand reached ``utilization`` of its estimate at some sample of
  the window (Gradient2's "app-limited" check); below that, only overload
  moves it (down).
* **The baseline is never probed by pinning concurrency.** Envoy measures the
  no-load latency by dropping the limit to a handful of requests at regular
  intervals, which makes every host slow on a timer. Here the baseline is a
  decaying minimum of what the host answers under its normal load: whenever
  the limit is right, some requests are served without queueing, and their
  round trip is the baseline.

Two details keep the figures honest:

* a sample of a request that *started* before the host's last limit change
  belongs to the old limit and is dropped (counted in ``stale``), so that
  requests still draining after a decrease do not decrease it twice;
* a host with a fixed limit (``host_limits``) has no samples at all: the
  connector does not report them.

Per-host state is kept for at most ``history`` hosts; past that, the host
whose window closed longest ago is forgotten and starts again from
``initial`` if it comes back.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, Literal, NamedTuple, TypeVar

from .. import _events as ev

__all__ = ["DEFAULT_INITIAL", "AdaptiveController", "AdaptiveFigures", "AdaptiveLimit"]

K = TypeVar("K", bound=Hashable)

DEFAULT_INITIAL = 4
"""Where a new host's limit starts when ``initial`` is not given (bounded by
``min`` and ``max``): low enough to be polite, high enough to learn fast."""

Reason = Literal["overload", "latency", "growth"]


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"AdaptiveLimit {name} must be an int, not {type(value).__name__}: "
            f"{value!r}"
        )
    if value < minimum:
        raise ValueError(f"AdaptiveLimit {name} must be >= {minimum}, got {value!r}")
    return value


def _number(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"AdaptiveLimit {name} must be a number, not {type(value).__name__}: "
            f"{value!r}"
        )
    if not low <= value <= high:  # also refuses nan
        raise ValueError(
            f"AdaptiveLimit {name} must be within [{low:g}, {high:g}], got {value!r}"
        )
    return float(value)


@dataclass(frozen=True, slots=True)
class AdaptiveLimit:
    """An adaptive per-host limit: ``PoolConnector(limit_per_host=...)``.

    ``limit_per_host="auto"`` is ``AdaptiveLimit()``. Every host's limit
    stays within ``[min, max]`` and starts at ``initial`` (``None``: 4,
    bounded by ``min`` and ``max``). The other fields tune the algorithm
    (see ``docs/politeness.md``); the defaults follow Gradient2's:

    ``window``
        samples (requests answered) per adjustment;
    ``tolerance``
        how much slower than its baseline a host may answer before its
        limit shrinks (1.5: 50 % slower);
    ``smoothing``
        the share of the way to the new target an adjustment goes;
    ``utilization``
        the share of its limit a host must use in a window for the limit
        to grow;
    ``overload_rate``
        the share of overload samples (5xx, 429, connection errors) above
        which a window cuts the limit by ``backoff``;
    ``backoff``
        the factor of that cut;
    ``drift``
        how fast the baseline (``min_rtt``) follows a slower host, per window.

    Bad values raise ``TypeError``/``ValueError`` naming the field and value.
    """

    min: int = 1
    max: int = 16
    initial: int | None = None
    window: int = 20
    tolerance: float = 1.5
    smoothing: float = 0.5
    utilization: float = 0.5
    overload_rate: float = 0.1
    backoff: float = 0.75
    drift: float = 0.05

    def __post_init__(self) -> None:
        _count("min", self.min, 1)
        _count("max", self.max, 1)
        if self.min > self.max:
            raise ValueError(
                f"AdaptiveLimit min must be <= max, got min={self.min!r} "
                f"and max={self.max!r}"
            )
        if self.initial is not None:
            _count("initial", self.initial, 1)
            if not self.min <= self.initial <= self.max:
                raise ValueError(
                    f"AdaptiveLimit initial must be within [min, max] = "
                    f"[{self.min}, {self.max}], got {self.initial!r}"
                )
        _count("window", self.window, 1)
        _number("tolerance", self.tolerance, 1.0, 100.0)
        _number("smoothing", self.smoothing, 0.0, 1.0)
        if self.smoothing == 0:
            raise ValueError("AdaptiveLimit smoothing must be > 0, got 0")
        _number("utilization", self.utilization, 0.0, 1.0)
        _number("overload_rate", self.overload_rate, 0.0, 1.0)
        _number("backoff", self.backoff, 0.0, 1.0)
        if not 0 < self.backoff < 1:
            raise ValueError(
                f"AdaptiveLimit backoff must be > 0 and < 1, got {self.backoff!r}"
            )
        _number("drift", self.drift, 0.0, 1.0)

    @property
    def start(self) -> int:
        """The limit a new host starts with."""
        if self.initial is not None:
            return self.initial
        return max(self.min, min(self.max, DEFAULT_INITIAL))


class AdaptiveFigures(NamedTuple):
    """What ``stats()`` shows of one host's adaptive limit."""

    limit: int
    """The limit in force."""
    estimate: float
    """The learned limit before rounding down."""
    gradient: float
    """The last window's gradient (1: no sign of queueing)."""
    min_rtt: float | None
    """The no-load baseline, seconds (``None``: no good sample yet)."""
    rtt: float | None
    """The last window's median good round trip, seconds."""
    samples: int
    """Samples counted (stale ones excluded)."""
    overloads: int
    """Of which overload (5xx, 429, connection errors)."""
    adjustments: int
    """Times the limit in force changed."""


class _Host:
    """One host's learning state."""

    __slots__ = (
        "adjustments",
        "changed_at",
        "demand",
        "estimate",
        "gradient",
        "limit",
        "min_rtt",
        "overloads",
        "rtt",
        "rtts",
        "samples",
        "stale",
        "window_n",
        "window_overloads",
    )

    def __init__(self, start: int) -> None:
        self.limit = start
        self.estimate = float(start)
        self.gradient = 1.0
        self.min_rtt: float | None = None
        self.rtt: float | None = None
        self.samples = 0
        self.overloads = 0
        self.stale = 0
        self.adjustments = 0
        self.changed_at = -math.inf
        # The open window.
        self.rtts: list[float] = []
        self.window_n = 0
        self.window_overloads = 0
        self.demand = 0


class AdaptiveController(Generic[K]):
    """Per-host adaptive limits (see the module docstring)."""

    def __init__(self, config: AdaptiveLimit, *, history: int = 10_000) -> None:
        if not isinstance(config, AdaptiveLimit):
            raise TypeError(
                f"config must be an AdaptiveLimit, not {type(config).__name__}"
            )
        self.config = config
        self._history = max(1, history)
        self._hosts: dict[K, _Host] = {}
        self._events: list[ev.PoolEvent] | None = None
        self.adjustments = 0
        """Changes of a limit in force, all hosts."""

    def observe(self, sink: list[ev.PoolEvent] | None) -> None:
        """Append a ``LimitAdjusted`` for every change to ``sink``."""
        self._events = sink

    # ------------------------------------------------------------- reads

    def limit_of(self, key: K) -> int:
        """The limit in force for ``key`` (``start`` for a host not seen)."""
        host = self._hosts.get(key)
        return self.config.start if host is None else host.limit

    def figures(self, key: K) -> AdaptiveFigures | None:
        """One host's figures, ``None`` if it has no state."""
        host = self._hosts.get(key)
        return None if host is None else _figures(host)

    def all_figures(self) -> Iterator[tuple[K, AdaptiveFigures]]:
        """Every host's figures (copies)."""
        for key, host in list(self._hosts.items()):
            yield key, _figures(host)

    def __len__(self) -> int:
        return len(self._hosts)

    # ------------------------------------------------------------ events

    def sample(
        self, key: K, now: float, rtt: float, *, overload: bool, demand: int
    ) -> int | None:
        """One request of ``key`` answered after ``rtt`` seconds, at ``now``
        (overload: a 5xx, a 429 or a connection error), with ``demand``
        requests of the host in the pool (acquired, connecting, queued).
        Returns the new limit in force when it changed, else ``None``."""
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(self.config.start)
            if len(self._hosts) > self._history:
                del self._hosts[next(iter(self._hosts))]
        if now - rtt < host.changed_at:
            host.stale += 1  # started under the previous limit
            return None
        host.samples += 1
        host.window_n += 1
        host.demand = max(host.demand, demand)
        if overload:
            host.overloads += 1
            host.window_overloads += 1
        elif rtt >= 0:
            host.rtts.append(rtt)
        if host.window_n < self.config.window:
            return None
        return self._close_window(key, host, now)

    def forget(self, key: K) -> None:
        """Drop ``key``'s state (it starts again from ``start``)."""
        self._hosts.pop(key, None)

    # ---------------------------------------------------------- internals

    def _close_window(self, key: K, host: _Host, now: float) -> int | None:
        cfg = self.config
        rtts = sorted(host.rtts)
        n, overloads, demand = host.window_n, host.window_overloads, host.demand
        host.rtts = []
        host.window_n = host.window_overloads = host.demand = 0
        # The least recently adjusted host is forgotten first: move to the end.
        del self._hosts[key]
        self._hosts[key] = host
        estimate = host.estimate
        if rtts:
            low = rtts[0]
            base = host.min_rtt
            if base is None or low < base:
                host.min_rtt = low
            elif host.limit <= cfg.min or demand < cfg.utilization * estimate:
                # Up only when this client queued little at the host: at the
                # least concurrency allowed, or well under its limit. Under
                # load a higher window minimum is the queueing this limit is
                # there to find, not a slower path (Gradient2's latency
                # creep: a baseline that follows the load lets it grow).
                host.min_rtt = base + (low - base) * cfg.drift
            mid = len(rtts) // 2
            host.rtt = rtts[mid] if len(rtts) % 2 else (rtts[mid - 1] + rtts[mid]) / 2
        reason: Reason
        if overloads > cfg.overload_rate * n:
            # Overload: cut at once, whatever the latency of the rest.
            host.gradient = cfg.backoff
            estimate *= cfg.backoff
            reason = "overload"
        else:
            short, base = host.rtt, host.min_rtt
            if rtts and short is not None and base is not None and short > 0:
                gradient = min(1.0, max(0.5, cfg.tolerance * base / short))
            else:
                gradient = 1.0
            host.gradient = gradient
            target = estimate * gradient + math.sqrt(estimate) / 2
            if demand < cfg.utilization * estimate:
                # Not used: this window says nothing about the concurrency
                # the host takes, either way (Gradient2's "app-limited"
                # rule). Its latency, at a fraction of the limit, is not
                # caused by the limit; on a fast host it is mostly jitter.
                target = estimate
            elif overloads:
                target = min(target, estimate)  # may shrink, never grow
            estimate += cfg.smoothing * (target - estimate)
            reason = "latency" if target < host.estimate else "growth"
        estimate = min(float(cfg.max), max(float(cfg.min), estimate))
        host.estimate = estimate
        limit = int(estimate + 1e-9)  # 3.9999999 is 4
        previous = host.limit
        if limit == previous:
            return None
        host.limit = limit
        host.changed_at = now
        host.adjustments += 1
        self.adjustments += 1
        events = self._events
        if events is not None:
            events.append(
                ev.LimitAdjusted(
                    key,  # type: ignore[arg-type]
                    now,
                    limit,
                    previous,
                    reason,
                    host.gradient,
                    host.min_rtt,
                    host.rtt if rtts else None,
                )
            )
        return limit


def _figures(host: _Host) -> AdaptiveFigures:
    return AdaptiveFigures(
        host.limit,
        host.estimate,
        host.gradient,
        host.min_rtt,
        host.rtt,
        host.samples,
        host.overloads,
        host.adjustments,
    )
