"""OpenTelemetry metrics for a ``PoolConnector`` (``aioconnpool[otel]``).

    from aioconnpool.otel import instrument

    handle = instrument(connector)            # the global MeterProvider
    ...
    handle.close()                            # stop (removes the listener)

Instruments, following the HTTP client semantic conventions where they have a
name for the figure, ``aioconnpool.*`` otherwise. Attributes: ``server.address``,
``server.port``, ``url.scheme`` (from the ``PoolKey``: never credentials).

``http.client.open_connections`` (observable UpDownCounter, ``{connection}``)
    with ``http.connection.state`` = ``active`` (acquired) | ``idle``.
``aioconnpool.connecting`` / ``aioconnpool.waiting`` (observable
UpDownCounters, ``{connection}`` / ``{request}``)
    connections being opened; requests queued for a connection.
``http.client.connection.duration`` (Histogram, ``s``)
    connection lifetimes, recorded from ``Closed`` events.
``aioconnpool.queue.duration`` (Histogram, ``s``)
    time queued by the requests that had to wait, from ``Dequeued`` events,
    with ``aioconnpool.queue.outcome`` = served | cancelled | timed_out | closed.
``aioconnpool.connection.closed`` / ``aioconnpool.released`` (Counters)
    with ``aioconnpool.close.reason`` / ``aioconnpool.release.how`` (see
    ``CLOSE_REASONS`` / ``RELEASE_HOWS``).
``aioconnpool.pacing.waiting`` (observable UpDownCounter, ``{request}``)
    requests waiting on their host's pacing (``delay_per_host``,
    ``host_delays``, pauses), holding no slot.
``aioconnpool.pacing.duration`` (Histogram, ``s``)
    time spent waiting on pacing, from ``PacingDequeued`` events, with
    ``aioconnpool.pacing.outcome`` = released | cancelled | late | closed.
``aioconnpool.pauses`` (Counter, ``{pause}``)
    host pauses, from ``HostPaused`` events, with ``aioconnpool.pause.reason``.
``aioconnpool.adaptive.limit`` / ``.gradient`` / ``.min_rtt`` (observable
Gauges, ``{connection}`` / ``1`` / ``s``)
    with adaptive limits (``limit_per_host="auto"``): each busiest sampled
    host's learned limit, last gradient and no-load round trip (no overflow
    point: they do not add up).

Cardinality: observable instruments report the ``max_hosts`` busiest hosts
(most requests, ties by key) at each collection, and the rest summed under
``otel.metric.overflow=true`` (the attribute the SDK itself uses when its own
cardinality limit is hit) with no host attributes. Event-recorded
instruments cannot follow changing ranks: the SDK keeps every attribute set it
ever saw, so there a host gets attributes of its own if it is among at most
``max_hosts`` *admitted* hosts -- admitted when ranked busiest at a collection
or when first seen, while there is room -- and overflows otherwise. Counters
recorded from events only go up per attribute set, whatever the ranks do.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections.abc import Iterable

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.util.types import AttributeValue
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "aioconnpool.otel needs opentelemetry-api: pip install 'aioconnpool[otel]'"
    ) from exc

from . import (
    Closed,
    Dequeued,
    HostPaused,
    PacingDequeued,
    PoolConnector,
    PoolEvent,
    PoolKey,
    Released,
    __version__,
)
from ._exporting import busiest, busiest_fleet_hosts, snapshot_on_loop

__all__ = ["Instrumentation", "instrument"]

Attributes = dict[str, AttributeValue]
OVERFLOW: Attributes = {"otel.metric.overflow": True}
# The semantic conventions' advice for http.client.connection.duration.
_DURATION_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
_QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _server(key: PoolKey) -> Attributes:
    return {
        "server.address": key.host,
        "server.port": key.port,
        "url.scheme": "https" if key.ssl else "http",
    }


class _Admitted:
    """At most ``cap`` hosts that event-recorded instruments name; they stay."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._hosts: set[PoolKey] = set()
        # Events come from the loop, refreshes from the collecting thread.
        self._lock = threading.Lock()

    def refresh(self, busiest: Iterable[PoolKey]) -> None:
        with self._lock:
            for key in busiest:
                if len(self._hosts) >= self._cap:
                    break
                self._hosts.add(key)

    def attributes(self, key: PoolKey) -> Attributes:
        with self._lock:
            if key not in self._hosts:
                if len(self._hosts) >= self._cap:
                    return dict(OVERFLOW)
                self._hosts.add(key)
        return _server(key)


_ADAPTIVE_GAUGES = (
    ("limit", "{connection}", "The host's adaptive limit."),
    ("gradient", "1", "The host's last adaptive gradient (1: no queueing)."),
    ("min_rtt", "s", "The host's no-load round trip (adaptive baseline)."),
)

_FLEET_GAUGES = {
    "limit": "Fleet-wide connection limit of the host.",
    "acquired": "Slots held across the fleet (as of the last reply from Redis).",
    "waiting": "Requests waiting for a slot across the fleet.",
    "mine": "Fleet slots this process holds.",
}


class Instrumentation:
    """What :func:`instrument` set up; :meth:`close` stops it."""

    def __init__(
        self,
        connector: PoolConnector,
        meter_provider: MeterProvider | None,
        max_hosts: int,
    ) -> None:
        self._connector = weakref.ref(connector)
        self._max_hosts = max_hosts
        self._admitted = _Admitted(max_hosts)
        self._closed = False
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter("aioconnpool", __version__)
        meter.create_observable_up_down_counter(
            "http.client.open_connections",
            callbacks=[self._observe_open],
            unit="{connection}",
            description="Outbound HTTP connections that are currently active "
            "or idle on the client.",
        )
        meter.create_observable_up_down_counter(
            "aioconnpool.connecting",
            callbacks=[self._observe_connecting],
            unit="{connection}",
            description="Connections being opened.",
        )
        meter.create_observable_up_down_counter(
            "aioconnpool.waiting",
            callbacks=[self._observe_waiting],
            unit="{request}",
            description="Requests queued for a connection.",
        )
        meter.create_observable_up_down_counter(
            "aioconnpool.pacing.waiting",
            callbacks=[self._observe_pacing],
            unit="{request}",
            description="Requests waiting on their host's pacing.",
        )
        self._paced = meter.create_histogram(
            "aioconnpool.pacing.duration",
            unit="s",
            description="Time requests spent waiting on their host's pacing.",
            explicit_bucket_boundaries_advisory=_QUEUE_BUCKETS,
        )
        self._pauses = meter.create_counter(
            "aioconnpool.pauses",
            unit="{pause}",
            description="Host pauses (pause_host, backoff_middleware), by reason.",
        )
        self._duration = meter.create_histogram(
            "http.client.connection.duration",
            unit="s",
            description="The duration of the successfully established outbound "
            "HTTP connections.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._queued = meter.create_histogram(
            "aioconnpool.queue.duration",
            unit="s",
            description="Time queued by requests that had to wait for a connection.",
            explicit_bucket_boundaries_advisory=_QUEUE_BUCKETS,
        )
        self._closes = meter.create_counter(
            "aioconnpool.connection.closed",
            unit="{connection}",
            description="Connections closed, by reason.",
        )
        self._releases = meter.create_counter(
            "aioconnpool.released",
            unit="{acquisition}",
            description="Acquisitions ended, by how they ended.",
        )
        if connector.stats().fleet is not None:
            for field, what in _FLEET_GAUGES.items():
                meter.create_observable_gauge(
                    f"aioconnpool.fleet.{field}",
                    callbacks=[functools.partial(self._observe_fleet, field)],
                    unit="{connection}",
                    description=what,
                )
        if connector.stats().adaptive is not None:
            for field, unit, what in _ADAPTIVE_GAUGES:
                meter.create_observable_gauge(
                    f"aioconnpool.adaptive.{field}",
                    callbacks=[functools.partial(self._observe_adaptive, field)],
                    unit=unit,
                    description=what,
                )
        connector.add_listener(self._on_event)

    def close(self) -> None:
        """Stop recording and reporting (the SDK has no way to remove the
        observable instruments: they report nothing from now on)."""
        if self._closed:
            return
        self._closed = True
        connector = self._connector()
        if connector is not None:
            connector.remove_listener(self._on_event)

    # ------------------------------------------------------------ internals

    def _on_event(self, event: PoolEvent) -> None:
        if isinstance(event, Closed):
            attrs = self._admitted.attributes(event.key)
            self._duration.record(event.lifetime, attrs)
            self._closes.add(1, {**attrs, "aioconnpool.close.reason": event.reason})
        elif isinstance(event, Released):
            attrs = self._admitted.attributes(event.key)
            self._releases.add(1, {**attrs, "aioconnpool.release.how": event.how})
        elif isinstance(event, Dequeued):
            attrs = self._admitted.attributes(event.key)
            outcome = {"aioconnpool.queue.outcome": event.outcome}
            self._queued.record(event.waited, {**attrs, **outcome})
        elif isinstance(event, PacingDequeued):
            attrs = self._admitted.attributes(event.key)
            paced = {"aioconnpool.pacing.outcome": event.outcome}
            self._paced.record(event.waited, {**attrs, **paced})
        elif isinstance(event, HostPaused):
            attrs = self._admitted.attributes(event.key)
            self._pauses.add(1, {**attrs, "aioconnpool.pause.reason": event.reason})

    def _observe(
        self, figures: Iterable[tuple[str, Attributes]], *, pacing: bool = False
    ) -> list[Observation]:
        """One snapshot; for each ``HostStats`` field (with its extra
        attributes), the busiest hosts' values and the rest summed under the
        overflow attribute."""
        connector = self._connector()
        if self._closed or connector is None:
            return []
        snap = snapshot_on_loop(connector, self._loop)
        if pacing and not (
            snap.delay_per_host or snap.host_delays or snap.pauses or snap.paced
        ):
            return []  # a connector that never paced: no points of zeros
        top = busiest(snap.hosts, self._max_hosts)
        self._admitted.refresh(top)
        found: list[Observation] = []
        for field, extra in figures:
            rest: int = getattr(snap, field)
            for key in top:
                value: int = getattr(snap.hosts[key], field)
                rest -= value
                found.append(Observation(value, {**extra, **_server(key)}))
            if len(snap.hosts) > len(top):
                found.append(Observation(rest, {**extra, **OVERFLOW}))
        return found

    def _observe_open(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._observe(
            [
                ("acquired", {"http.connection.state": "active"}),
                ("idle", {"http.connection.state": "idle"}),
            ]
        )

    def _observe_connecting(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._observe([("connecting", {})])

    def _observe_waiting(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._observe([("waiting", {})])

    def _observe_pacing(self, options: CallbackOptions) -> Iterable[Observation]:
        # Nothing for a connector that never paced: no points of zeros.
        return self._observe([("pacing_waiting", {})], pacing=True)

    def _observe_adaptive(
        self, field: str, options: CallbackOptions
    ) -> Iterable[Observation]:
        """An adaptive figure per busiest host that has been sampled."""
        connector = self._connector()
        if self._closed or connector is None:
            return []
        snap = snapshot_on_loop(connector, self._loop)
        name = "adaptive_limit" if field == "limit" else field
        found: list[Observation] = []
        for key in busiest(snap.hosts, self._max_hosts):
            value = getattr(snap.hosts[key], name)
            if value is not None:
                found.append(Observation(value, _server(key)))
        return found

    def _observe_fleet(
        self, field: str, options: CallbackOptions
    ) -> Iterable[Observation]:
        """A fleet figure per host, for the hosts where this process holds or
        waits most (``max_hosts`` of them)."""
        connector = self._connector()
        if self._closed or connector is None:
            return []
        fleet = snapshot_on_loop(connector, self._loop).fleet
        if fleet is None:
            return []
        hosts = busiest_fleet_hosts(fleet.hosts, self._max_hosts)
        return [Observation(getattr(hs, field), _server(key)) for key, hs in hosts]


def instrument(
    connector: PoolConnector,
    meter_provider: MeterProvider | None = None,
    *,
    max_hosts: int = 50,
) -> Instrumentation:
    """Report ``connector``'s pool through OpenTelemetry metrics (see the
    module docstring); ``meter_provider`` defaults to the global one."""
    if not isinstance(connector, PoolConnector):
        raise TypeError(
            f"instrument() needs a PoolConnector, not {type(connector).__name__}"
        )
    if isinstance(max_hosts, bool) or not isinstance(max_hosts, int):
        raise TypeError(f"max_hosts must be an int, not {max_hosts!r}")
    if max_hosts < 0:
        raise ValueError(f"max_hosts must be >= 0, got {max_hosts!r}")
    return Instrumentation(connector, meter_provider, max_hosts)
