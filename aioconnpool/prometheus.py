"""Prometheus export of ``PoolConnector.stats()`` (``aioconnpool[prometheus]``).

    from prometheus_client import REGISTRY
    from aioconnpool.prometheus import PoolCollector

    REGISTRY.register(PoolCollector(connector))
    # several connectors: PoolCollector({"api": conn_a, "crawler": conn_b})

Each scrape takes one ``stats()`` snapshot per connector and yields, labelled
by ``host``, ``port`` and ``scheme`` (and ``connector`` when given a mapping):
gauges ``acquired``, ``idle``, ``connecting``, ``waiting``, ``limit``, counters
``requests``,
``created``, ``reused``, ``connect_errors``, ``rejected``, ``wait_timeouts``,
``released{how}``, ``closed{reason}`` and the histograms ``wait_time``,
``connect_time``, ``hold_time`` and ``lifetime`` (seconds); and each of them
in total as ``<prefix>_pool_*``, without host labels. Pacing adds the gauges
``pacing_waiting`` (requests waiting on a host's pacing), ``delay_seconds``
(the delay in force) and ``paused{reason}`` (1 while paused), and the pool
counters ``pool_paced``, ``pool_pacing_late`` and ``pool_pauses``. Adaptive
limits (``limit_per_host="auto"``) add, for the busiest hosts that have been
sampled, the gauges ``adaptive_limit`` (the learned limit),
``adaptive_gradient`` and ``adaptive_min_rtt_seconds`` (the figures Envoy's
adaptive concurrency filter exports), and the pool counter
``pool_limit_adjustments``.

Cardinality and monotonic counters
----------------------------------
Only the ``max_hosts`` busiest hosts (most requests, ties by key) get labels of
their own; every other host, and those the pool itself forgot
(``PoolStats.forgotten``), is summed under ``host="_other"`` (``port`` and
``scheme`` empty). Ranks change, so a host's figures cannot simply be copied:
``_other = totals - top N`` would drop when a host rises into the top N, and a
counter that drops is read by Prometheus as a restart. Instead each scrape
*attributes increments*: what a host's counters gained since the previous
scrape is added to the label set the host has now (its own or ``_other``).
Hence:

* every exported counter and histogram only goes up, whatever the ranks do;
* every increment is counted under exactly one label set, so
  ``sum(rate(...))`` over hosts equals the pool's rate, always; the values
  themselves add up to the totals as long as no host has left the top N (a
  host out of the top N is not exported, its count is not moved to
  ``_other``: that would count it twice);
* a host ranked in the top N since it first appeared shows exactly its
  ``stats()`` figures; one that rose later counts from when it rose (its past
  stays in ``_other``), and keeps its count while out of the top N so it
  resumes from there. Only a host the pool forgets (``stats_history``) loses
  that memory: if it comes back it starts again from zero, which Prometheus
  reads as a counter reset.

Exact totals are exported too, without host labels (``<prefix>_pool_*``):
they are the snapshot's totals as they are, gauges, counters and histograms.

The collector keeps the previous snapshot and one row of numbers per host
that was ever ranked and that the pool still remembers.

Gauges are computed from the snapshot as they are: per top host, and
``_other = total - top N``. Labels hold only ``PoolKey`` fields, which never
carry credentials. The collector holds connectors weakly: a connector that is
gone yields nothing. Called from another thread (``start_http_server``), a
scrape takes its snapshot on the connector's event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "aioconnpool.prometheus needs prometheus_client: "
        "pip install 'aioconnpool[prometheus]'"
    ) from exc

from . import (
    CLOSE_REASONS,
    COUNTER_NAMES,
    RELEASE_HOWS,
    FleetStats,
    HostStats,
    PoolConnector,
    PoolKey,
    PoolStats,
)
from ._exporting import busiest, busiest_fleet_hosts, snapshot_on_loop

__all__ = ["OTHER", "PoolCollector", "register", "unregister"]

OTHER = "_other"
"""The ``host`` label of the hosts summed together beyond ``max_hosts``."""

_GAUGES = ("acquired", "idle", "connecting", "waiting")
_COUNTERS = COUNTER_NAMES
_DURATIONS = ("wait_time", "connect_time", "hold_time", "lifetime")
_HELP = {
    "acquired": "Connections in a request's hands.",
    "idle": "Connections kept alive in the pool.",
    "connecting": "Connections being opened.",
    "waiting": "Requests queued for a connection.",
    "limit": "Effective connection limit.",
    "fd_budget": "The most sockets the pool keeps open at once, idle included.",
    "requests": "Connections requested.",
    "created": "Connections opened.",
    "reused": "Requests served by an idle connection.",
    "connect_errors": "Connection attempts that failed.",
    "rejected": "Requests refused at once (block=False).",
    "wait_timeouts": "Requests that gave up waiting (acquire_timeout).",
    "released": "Acquisitions ended, by how they ended.",
    "closed": "Connections closed, by why.",
    "wait_time": "Time requests spent queued (0 when served at once).",
    "connect_time": "Time taken to open connections.",
    "hold_time": "Time from acquiring a connection to releasing it.",
    "lifetime": "Time from opening a connection to closing it.",
    "fleet_limit": "Fleet-wide connection limit of the host.",
    "fleet_acquired": "Slots held across the fleet (as of the last reply).",
    "fleet_waiting": "Requests waiting for a slot across the fleet.",
    "fleet_mine": "Fleet slots this process holds.",
    "fleet_waiting_here": "This process's requests waiting for a fleet slot.",
    "fleet_up": "1 while the fleet's Redis can be reached, else 0.",
    "fleet_outages": "Times the fleet's Redis could not be reached.",
    "fleet_lapses": (
        "Times this process registered its fleet slots anew: its lease had "
        "run out, or the store counted fewer of its slots than it held."
    ),
    "fleet_local_grants": "Acquisitions let through on local limits in outages.",
    "fleet_round_trip": "Duration of the calls to the fleet's Redis.",
    "fleet_pace_calls": "Calls to the fleet's Redis for fleet-wide pacing.",
    "fleet_reservations": "Fleet-wide request starts reserved (pacing).",
    "fleet_local_paces": "Paced requests let through on local pacing in outages.",
    "fleet_pauses_sent": "Host pauses this process shared with the fleet.",
    "fleet_pauses_received": "Host pauses taken from other processes of the fleet.",
    "pacing_waiting": "Requests waiting on the host's pacing (holding no slot).",
    "delay_seconds": "Least time between two request starts to the host.",
    "paused": "1 while the host is paused (reason in the label).",
    "paced": "Requests that had to wait on pacing.",
    "pacing_late": "Requests refused: their start fell after their deadline.",
    "pauses": "Host pauses asked for (pause_host, backoff_middleware).",
    "adaptive_limit": "The host's adaptive limit (learned from latency, errors).",
    "adaptive_gradient": (
        "The host's last adaptive gradient: 1 while it answers near its "
        "baseline, down to 0.5 as it queues; the backoff after overload."
    ),
    "adaptive_min_rtt": "The host's no-load round trip (adaptive baseline).",
    "limit_adjustments": "Changes of a host's adaptive limit.",
}
_PACING_COUNTERS = ("paced", "pacing_late", "pauses")
_FLEET_GAUGES = ("limit", "acquired", "waiting", "mine", "waiting_here")
_FLEET_COUNTERS = (
    "outages",
    "lapses",
    "local_grants",
    "pace_calls",
    "reservations",
    "local_paces",
    "pauses_sent",
    "pauses_received",
)


def _row(s: HostStats | PoolStats) -> list[float]:
    """Every monotonic figure of a snapshot, flat: the counters, ``released``
    and ``closed`` by name, then per histogram its bucket counts and sum."""
    row: list[float] = [getattr(s, name) for name in _COUNTERS]
    row += [s.released[how] for how in RELEASE_HOWS]
    row += [s.closed[why] for why in CLOSE_REASONS]
    for which in _DURATIONS:
        hist = getattr(s, which)
        row += hist.counts
        row.append(hist.sum)
    return row


@dataclass
class _Attribution:
    """Exported counters of one connector: increments attributed per label set
    (see the module docstring). ``OTHER`` rows are under key ``None``."""

    prev: PoolStats | None = None
    rows: dict[PoolKey | None, list[float]] = field(default_factory=dict)

    def advance(self, snap: PoolStats, top: Sequence[PoolKey]) -> None:
        now_total = _row(snap)
        residual = (
            now_total
            if self.prev is None
            else [a - b for a, b in zip(now_total, _row(self.prev), strict=True)]
        )
        before = self.prev.hosts if self.prev is not None else {}
        for key in top:
            now = _row(snap.hosts[key])
            old = before.get(key)
            delta = now
            if old is not None:
                delta = [a - b for a, b in zip(now, _row(old), strict=True)]
                if min(delta) < 0:
                    # Forgotten and seen again between two scrapes: a new
                    # record, all of it new (the rest lands in _other).
                    delta = now
            acc = self.rows.setdefault(key, [0.0] * len(now))
            for i, d in enumerate(delta):
                if d:
                    acc[i] += d
                    residual[i] -= d
        other = self.rows.setdefault(None, [0.0] * len(now_total))
        for i, r in enumerate(residual):
            if r > 0:  # never below 0: float sums may be off by a rounding
                other[i] += r
        for key in [k for k in self.rows if k is not None and k not in snap.hosts]:
            del self.rows[key]  # the pool forgot it: so do we
        self.prev = snap


def _host_labels(key: PoolKey | None) -> list[str]:
    if key is None:
        return [OTHER, "", ""]
    return [key.host, str(key.port), "https" if key.ssl else "http"]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class PoolCollector:
    """A ``prometheus_client`` collector for one connector or several.

    ``connectors`` is a ``PoolConnector`` or a mapping of names to
    connectors; with a mapping, every sample has a ``connector=<name>``
    label. One collector serves several connectors because the exposition
    format wants each metric family in one block: two collectors with the same
    ``prefix`` in one registry are refused by ``registry.register`` (use
    another ``prefix`` if you must). ``max_hosts``: hosts with labels of their
    own per connector (see the module docstring).
    """

    def __init__(
        self,
        connectors: PoolConnector | Mapping[str, PoolConnector],
        *,
        max_hosts: int = 50,
        prefix: str = "aioconnpool",
    ) -> None:
        if isinstance(max_hosts, bool) or not isinstance(max_hosts, int):
            raise TypeError(f"max_hosts must be an int, not {max_hosts!r}")
        if max_hosts < 0:
            raise ValueError(f"max_hosts must be >= 0, got {max_hosts!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
        named: list[tuple[str | None, PoolConnector]]
        if isinstance(connectors, PoolConnector):
            named = [(None, connectors)]
        elif isinstance(connectors, Mapping):
            named = list(connectors.items())
            for name, conn in named:
                if not isinstance(name, str) or not isinstance(conn, PoolConnector):
                    raise TypeError(
                        "connectors must map names (str) to PoolConnector, "
                        f"got {name!r}: {type(conn).__name__}"
                    )
        else:
            raise TypeError(
                "connectors must be a PoolConnector or a mapping of names to "
                f"PoolConnector, not {type(connectors).__name__}"
            )
        self.max_hosts = max_hosts
        self.prefix = prefix
        self._named = any(name is not None for name, _ in named)
        self._targets = [
            (name, weakref.ref(conn), _Attribution()) for name, conn in named
        ]
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def describe(self) -> Iterator[Metric]:
        """The families' names, so that a registry refuses duplicates."""
        return iter(self._families().values())

    def collect(self) -> Iterator[Metric]:
        """One scrape: one ``stats()`` snapshot per connector, as metrics."""
        families = self._families()
        for name, ref, attribution in self._targets:
            connector = ref()
            if connector is None:
                continue
            snap = snapshot_on_loop(connector, self._loop)
            self._add(families, name, snap, attribution)
        return iter(families.values())

    # ------------------------------------------------------------ internals

    def _families(self) -> dict[str, Metric]:
        p = self.prefix
        host = (["connector"] if self._named else []) + ["host", "port", "scheme"]
        pool = ["connector"] if self._named else []
        fams: dict[str, Metric] = {
            "pool_fd_budget": GaugeMetricFamily(
                f"{p}_pool_fd_budget", _HELP["fd_budget"], labels=pool
            )
        }
        for g in (*_GAUGES, "limit"):
            fams[g] = GaugeMetricFamily(f"{p}_{g}", _HELP[g], labels=host)
            fams[f"pool_{g}"] = GaugeMetricFamily(
                f"{p}_pool_{g}", f"{_HELP[g]} All hosts.", labels=pool
            )
        for g in _FLEET_GAUGES:
            fams[f"fleet_{g}"] = GaugeMetricFamily(
                f"{p}_fleet_{g}", _HELP[f"fleet_{g}"], labels=host
            )
        fams["fleet_up"] = GaugeMetricFamily(
            f"{p}_fleet_up", _HELP["fleet_up"], labels=pool
        )
        for c in _FLEET_COUNTERS:
            fams[f"fleet_{c}"] = CounterMetricFamily(
                f"{p}_fleet_{c}", _HELP[f"fleet_{c}"], labels=pool
            )
        fams["pacing_waiting"] = GaugeMetricFamily(
            f"{p}_pacing_waiting", _HELP["pacing_waiting"], labels=host
        )
        fams["pool_pacing_waiting"] = GaugeMetricFamily(
            f"{p}_pool_pacing_waiting",
            f"{_HELP['pacing_waiting']} All hosts.",
            labels=pool,
        )
        fams["delay_seconds"] = GaugeMetricFamily(
            f"{p}_delay_seconds", _HELP["delay_seconds"], labels=host
        )
        fams["paused"] = GaugeMetricFamily(
            f"{p}_paused", _HELP["paused"], labels=[*host, "reason"]
        )
        for c in _PACING_COUNTERS:
            fams[f"pool_{c}"] = CounterMetricFamily(
                f"{p}_pool_{c}", _HELP[c], labels=pool
            )
        for g in ("adaptive_limit", "adaptive_gradient"):
            fams[g] = GaugeMetricFamily(f"{p}_{g}", _HELP[g], labels=host)
        fams["adaptive_min_rtt"] = GaugeMetricFamily(
            f"{p}_adaptive_min_rtt_seconds", _HELP["adaptive_min_rtt"], labels=host
        )
        fams["pool_limit_adjustments"] = CounterMetricFamily(
            f"{p}_pool_limit_adjustments", _HELP["limit_adjustments"], labels=pool
        )
        fams["fleet_round_trip"] = HistogramMetricFamily(
            f"{p}_fleet_round_trip_seconds", _HELP["fleet_round_trip"], labels=pool
        )
        for scope, labels in (("", host), ("pool_", pool)):
            for c in _COUNTERS:
                fams[scope + c] = CounterMetricFamily(
                    f"{p}_{scope}{c}", _HELP[c], labels=labels
                )
            fams[scope + "released"] = CounterMetricFamily(
                f"{p}_{scope}released", _HELP["released"], labels=[*labels, "how"]
            )
            fams[scope + "closed"] = CounterMetricFamily(
                f"{p}_{scope}closed", _HELP["closed"], labels=[*labels, "reason"]
            )
            for d in _DURATIONS:
                fams[scope + d] = HistogramMetricFamily(
                    f"{p}_{scope}{d}_seconds", _HELP[d], labels=labels
                )
        return fams

    def _add(
        self,
        fams: dict[str, Metric],
        name: str | None,
        snap: PoolStats,
        attribution: _Attribution,
    ) -> None:
        const = [name] if name is not None else []
        top = busiest(snap.hosts, self.max_hosts)
        attribution.advance(snap, top)
        # Pool totals.
        for g in _GAUGES:
            _gauge(fams[f"pool_{g}"]).add_metric(const, getattr(snap, g))
        if snap.limit is not None:
            _gauge(fams["pool_limit"]).add_metric(const, snap.limit)
        if snap.fd_budget is not None:
            _gauge(fams["pool_fd_budget"]).add_metric(const, snap.fd_budget)
        bounds = snap.wait_time.bounds
        _add_row(fams, "pool_", const, _row(snap), bounds)
        # Gauges per top host, the rest under OTHER.
        rest = {g: getattr(snap, g) for g in _GAUGES}
        for key in top:
            hs = snap.hosts[key]
            labels = const + _host_labels(key)
            for g in _GAUGES:
                value = getattr(hs, g)
                rest[g] -= value
                _gauge(fams[g]).add_metric(labels, value)
            if hs.limit is not None:
                _gauge(fams["limit"]).add_metric(labels, hs.limit)
        # _other appears once there is something to sum there, and stays
        # while its counters are not zero (a counter never disappears early).
        show_other = (
            len(snap.hosts) > len(top)
            or snap.forgotten_hosts > 0
            or any(attribution.rows[None])
        )
        if show_other:
            for g in _GAUGES:
                _gauge(fams[g]).add_metric(const + _host_labels(None), rest[g])
        # Counters and histograms: the attributed rows.
        ranked = set(top)
        for row_key, row in attribution.rows.items():
            if row_key is None and not show_other:
                continue
            if row_key is not None and row_key not in ranked:
                continue  # out of the top N now: remembered, not exported
            _add_row(fams, "", const + _host_labels(row_key), row, bounds)
        if snap.fleet is not None:
            self._add_fleet(fams, const, snap.fleet)
        self._add_pacing(fams, const, snap, top)
        if snap.adaptive is not None:
            self._add_adaptive(fams, const, snap, top)

    def _add_adaptive(
        self,
        fams: dict[str, Metric],
        const: list[str],
        snap: PoolStats,
        top: Sequence[PoolKey],
    ) -> None:
        """Adaptive limits: per busiest host that has been sampled, its
        limit, gradient and baseline (no ``_other``: they do not add up);
        the adjustments in total."""
        _counter(fams["pool_limit_adjustments"]).add_metric(
            const, snap.limit_adjustments
        )
        for key in top:
            hs = snap.hosts[key]
            if hs.adaptive_limit is None:
                continue
            labels = const + _host_labels(key)
            _gauge(fams["adaptive_limit"]).add_metric(labels, hs.adaptive_limit)
            if hs.gradient is not None:
                _gauge(fams["adaptive_gradient"]).add_metric(labels, hs.gradient)
            if hs.min_rtt is not None:
                _gauge(fams["adaptive_min_rtt"]).add_metric(labels, hs.min_rtt)

    def _add_pacing(
        self,
        fams: dict[str, Metric],
        const: list[str],
        snap: PoolStats,
        top: Sequence[PoolKey],
    ) -> None:
        """Pacing: per host, the delay in force and the pause for the
        busiest hosts, and the requests waiting on pacing for the
        ``max_hosts`` hosts with most of them (a host waiting on pacing may
        not have reached the pool yet, so it may not rank among the
        busiest); the rest under ``_other``; the counters in total."""
        _gauge(fams["pool_pacing_waiting"]).add_metric(const, snap.pacing_waiting)
        for c in _PACING_COUNTERS:
            _counter(fams[f"pool_{c}"]).add_metric(const, getattr(snap, c))
        hosts = snap.hosts
        for key in top:
            hs = hosts[key]
            if hs.delay:
                _gauge(fams["delay_seconds"]).add_metric(
                    const + _host_labels(key), hs.delay
                )
        if not snap.pacing_waiting and not snap.paused_hosts:
            return
        pacing = sorted(
            (
                key
                for key in hosts
                if hosts[key].pacing_waiting or hosts[key].paused_until
            ),
            key=lambda key: (-hosts[key].pacing_waiting, key),
        )
        shown = pacing[: self.max_hosts]
        rest = snap.pacing_waiting
        for key in shown:
            hs = hosts[key]
            labels = const + _host_labels(key)
            rest -= hs.pacing_waiting
            _gauge(fams["pacing_waiting"]).add_metric(labels, hs.pacing_waiting)
            if hs.paused_until is not None:
                _gauge(fams["paused"]).add_metric([*labels, hs.pause_reason or ""], 1)
        if len(pacing) > len(shown):
            _gauge(fams["pacing_waiting"]).add_metric(const + _host_labels(None), rest)

    def _add_fleet(
        self, fams: dict[str, Metric], const: list[str], fleet: FleetStats
    ) -> None:
        """The fleet's figures: per host for the ``max_hosts`` hosts where
        this process holds or waits most, and the totals of the link."""
        _gauge(fams["fleet_up"]).add_metric(const, fleet.state == "connected")
        for c in _FLEET_COUNTERS:
            _counter(fams[f"fleet_{c}"]).add_metric(const, getattr(fleet, c))
        trips = fleet.round_trip
        _histogram(fams["fleet_round_trip"]).add_metric(
            const,
            [
                (_le(b), n)
                for b, n in zip(
                    trips.bounds, itertools.accumulate(trips.counts), strict=True
                )
            ],
            trips.sum,
        )
        for key, hs in busiest_fleet_hosts(fleet.hosts, self.max_hosts):
            labels = const + _host_labels(key)
            for g in _FLEET_GAUGES:
                _gauge(fams[f"fleet_{g}"]).add_metric(labels, getattr(hs, g))


def _add_row(
    fams: dict[str, Metric],
    scope: str,
    labels: list[str],
    row: list[float],
    bounds: Sequence[float],
) -> None:
    """Add one flat row (see ``_row``) to the ``scope`` families."""
    values = iter(row)
    for c in _COUNTERS:
        _counter(fams[scope + c]).add_metric(labels, next(values))
    for how in RELEASE_HOWS:
        _counter(fams[scope + "released"]).add_metric([*labels, how], next(values))
    for why in CLOSE_REASONS:
        _counter(fams[scope + "closed"]).add_metric([*labels, why], next(values))
    for d in _DURATIONS:
        cumulative = 0.0
        buckets: list[tuple[str, float]] = []
        for bound in bounds:
            cumulative += next(values)
            buckets.append((_le(bound), cumulative))
        _histogram(fams[scope + d]).add_metric(labels, buckets, next(values))


def _gauge(m: Metric) -> GaugeMetricFamily:
    assert isinstance(m, GaugeMetricFamily)
    return m


def _counter(m: Metric) -> CounterMetricFamily:
    assert isinstance(m, CounterMetricFamily)
    return m


def _histogram(m: Metric) -> HistogramMetricFamily:
    assert isinstance(m, HistogramMetricFamily)
    return m


def register(
    connectors: PoolConnector | Mapping[str, PoolConnector],
    registry: CollectorRegistry | None = None,
    *,
    max_hosts: int = 50,
    prefix: str = "aioconnpool",
) -> PoolCollector:
    """Build a :class:`PoolCollector` and register it (default: the global
    ``REGISTRY``); returns it, for :func:`unregister`."""
    collector = PoolCollector(connectors, max_hosts=max_hosts, prefix=prefix)
    (REGISTRY if registry is None else registry).register(collector)
    return collector


def unregister(
    collector: PoolCollector, registry: CollectorRegistry | None = None
) -> None:
    """Remove a collector from ``registry`` (default: the global ``REGISTRY``)."""
    (REGISTRY if registry is None else registry).unregister(collector)
