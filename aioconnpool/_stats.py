"""Immutable snapshots of the pool, built from the core's read API only."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from ._core import KeyFigures, PoolCore
from ._core.adaptive import AdaptiveController, AdaptiveFigures, AdaptiveLimit
from ._core.counters import (
    CLOSE_REASONS,
    N_CONNECT_ERRORS,
    N_CREATED,
    N_REJECTED,
    N_REQUESTS,
    N_REUSED,
    N_WAIT_TIMEOUTS,
    RELEASE_HOWS,
    Counters,
)
from ._core.host_limits import HostDelays
from ._core.pacing import PaceFigures, Pacer
from ._export import stats_to_dict
from ._fleet_stats import FleetStats
from ._histogram import Histogram
from ._keys import PoolKey, pool_key_of

__all__ = [
    "ConnectionInfo",
    "HostStats",
    "HostTable",
    "PoolStats",
    "build_connection_infos",
    "build_host_stats",
    "build_pool_stats",
]


EMPTY_HISTOGRAM = Histogram()


@dataclass(frozen=True, slots=True)
class HostStats:
    """The pool seen from one ``PoolKey`` (all its aiohttp pools added up).

    Gauges: ``acquired`` (in a request's hands), ``idle`` (kept alive in the
    pool), ``connecting`` (being opened), ``waiting`` (requests queued),
    ``open = acquired + idle``. ``limit`` is the effective per-key limit
    (``None``: unlimited); ``available`` the slots a new request could take
    right now with both limits considered (``None``: unlimited).
    Counters: ``requests``, ``created``, ``reused``, ``connect_errors``,
    ``rejected`` (refused at once with ``block=False``), ``wait_timeouts``
    (gave up after ``acquire_timeout``), ``released`` (how acquisitions
    ended) and ``closed`` (why connections were closed).
    Durations (seconds, :class:`Histogram`): ``wait_time`` (in the queue, 0
    when served at once), ``connect_time``, ``hold_time`` (acquired to
    released) and ``lifetime`` (connection created to closed).
    Pacing (``delay_per_host``, ``host_delays``, pauses): ``delay`` is the
    least time in seconds between two starts in force for the host (0: not
    paced); ``next_start`` the earliest the next request may start, on the
    event loop's clock (``loop.time()``; ``None``: at once);
    ``pacing_waiting`` the requests waiting on pacing (they hold no slot and
    are not in ``waiting``); ``paused_until`` (loop clock) and
    ``pause_reason`` describe a pause in force (``None``: none). While a
    pause is in force ``limit`` is 0: the requests of the host already
    queued in the pool (``waiting``) are held there until it ends.
    Adaptive limits (``limit_per_host="auto"``), for a host that has been
    sampled (else ``None`` and zeros): ``adaptive_limit`` the learned limit
    (also in ``limit`` once the host's pool is open, unless paused);
    ``gradient`` the last window's (1: no sign of queueing, down to 0.5;
    the backoff after an overload); ``min_rtt`` the no-load round trip and
    ``rtt`` the last window's median, in seconds (response headers after
    hand-over); ``adaptive_samples`` the requests sampled,
    ``adaptive_overloads`` those that were 5xx, 429 or connection errors,
    ``limit_adjustments`` the changes of its limit.
    """

    acquired: int = 0
    idle: int = 0
    connecting: int = 0
    waiting: int = 0
    limit: int | None = None
    available: int | None = None
    requests: int = 0
    created: int = 0
    reused: int = 0
    connect_errors: int = 0
    rejected: int = 0
    wait_timeouts: int = 0
    released: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(RELEASE_HOWS, 0))
    )
    closed: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(CLOSE_REASONS, 0))
    )
    wait_time: Histogram = EMPTY_HISTOGRAM
    connect_time: Histogram = EMPTY_HISTOGRAM
    hold_time: Histogram = EMPTY_HISTOGRAM
    lifetime: Histogram = EMPTY_HISTOGRAM
    delay: float = 0.0
    next_start: float | None = None
    pacing_waiting: int = 0
    paused_until: float | None = None
    pause_reason: str | None = None
    adaptive_limit: int | None = None
    gradient: float | None = None
    min_rtt: float | None = None
    rtt: float | None = None
    adaptive_samples: int = 0
    adaptive_overloads: int = 0
    limit_adjustments: int = 0

    @property
    def open(self) -> int:
        """Open connections: ``acquired + idle``."""
        return self.acquired + self.idle

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field (``PoolKey`` keys as strings)."""
        return stats_to_dict(self)


@dataclass(frozen=True, slots=True)
class PoolStats:
    """One consistent snapshot of the whole connector, taken without awaiting.

    Totals cover every host ever served, including those that fell out of the
    per-host history (``forgotten_hosts`` of them, whose counters are summed in
    ``forgotten``); so per-host figures plus ``forgotten`` add up to the totals.
    ``limit_per_host`` is the default per-host limit and ``host_limits`` the
    overrides (normalised pattern -> limit). ``fd_budget`` is the most sockets
    the pool keeps open at once, idle ones included (``None``: no budget);
    ``available`` counts it as a limit too. ``hosts`` is a read-only mapping
    (:class:`HostTable`) that builds each host's ``HostStats`` when first read,
    from figures copied when the snapshot was taken. ``fleet`` shows the
    fleet-wide limits (:class:`FleetStats`) when the connector has a
    ``fleet``, else ``None``. Pacing: ``delay_per_host``, ``host_delays``
    (normalised pattern -> seconds) and ``delay_jitter`` as configured;
    ``pacing_waiting`` the requests waiting on pacing now (not in
    ``waiting``); counters ``paced`` (requests that had to wait on pacing),
    ``pacing_late`` (refused at once: their start fell after their deadline)
    and ``pauses`` (pauses asked for, by ``pause_host`` or the backoff
    middleware); ``paused_hosts`` the hosts paused now. Adaptive limits:
    ``adaptive`` the :class:`AdaptiveLimit` in force (``None``: off; then
    ``limit_per_host`` is ``None``), ``limit_adjustments`` the changes of
    a host's limit in all.
    """

    acquired: int
    idle: int
    connecting: int
    waiting: int
    limit: int | None
    limit_per_host: int | None
    host_limits: Mapping[str, int | None]
    fd_budget: int | None
    available: int | None
    requests: int
    created: int
    reused: int
    connect_errors: int
    rejected: int
    wait_timeouts: int
    released: Mapping[str, int]
    closed: Mapping[str, int]
    wait_time: Histogram
    connect_time: Histogram
    hold_time: Histogram
    lifetime: Histogram
    hosts: Mapping[PoolKey, HostStats]
    forgotten_hosts: int
    forgotten: HostStats
    is_closed: bool
    fleet: FleetStats | None = None
    delay_per_host: float = 0.0
    host_delays: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({})
    )
    delay_jitter: float = 0.0
    pacing_waiting: int = 0
    paced: int = 0
    pacing_late: int = 0
    pauses: int = 0
    paused_hosts: int = 0
    adaptive: AdaptiveLimit | None = None
    limit_adjustments: int = 0

    @property
    def open(self) -> int:
        """Open connections: ``acquired + idle``."""
        return self.acquired + self.idle

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field (``PoolKey`` keys as strings)."""
        return stats_to_dict(self)


ConnectionState = Literal["acquired", "idle", "connecting"]


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """One live connection (or one being opened, with no socket yet)."""

    key: PoolKey
    state: ConnectionState
    local: tuple[object, ...] | None
    peer: tuple[object, ...] | None
    requests: int
    age: float
    idle_for: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field."""
        return stats_to_dict(self)


def _counter_fields(c: Counters) -> dict[str, object]:
    """Counter fields for a snapshot (``released`` and ``closed`` are new
    dicts on every read, so nobody else holds them). Read by index, not
    through the named properties: an export reads every host it ranks."""
    n = c.n
    return {
        "requests": n[N_REQUESTS],
        "created": n[N_CREATED],
        "reused": n[N_REUSED],
        "connect_errors": n[N_CONNECT_ERRORS],
        "rejected": n[N_REJECTED],
        "wait_timeouts": n[N_WAIT_TIMEOUTS],
        "released": MappingProxyType(c.released),
        "closed": MappingProxyType(c.closed),
        "wait_time": c.histogram(0),
        "connect_time": c.histogram(1),
        "hold_time": c.histogram(2),
        "lifetime": c.histogram(3),
    }


def _pace_fields(pace: PaceFigures | None, delay: float) -> dict[str, Any]:
    """Pacing fields of a ``HostStats``: the pacer's figures when the host
    has pacing state, else only its configured delay."""
    if pace is None:
        return {"delay": delay} if delay else {}
    return {
        "delay": pace.delay,
        "next_start": pace.next_start,
        "pacing_waiting": pace.waiting,
        "paused_until": pace.paused_until,
        "pause_reason": pace.pause_reason,
    }


def _adaptive_fields(adaptive: AdaptiveFigures) -> dict[str, Any]:
    """Adaptive fields of a ``HostStats`` (a host never sampled has none:
    the caller skips the call)."""
    return {
        "adaptive_limit": adaptive.limit,
        "gradient": adaptive.gradient,
        "min_rtt": adaptive.min_rtt,
        "rtt": adaptive.rtt,
        "adaptive_samples": adaptive.samples,
        "adaptive_overloads": adaptive.overloads,
        "limit_adjustments": adaptive.adjustments,
    }


def build_host_stats(
    figures: Iterable[KeyFigures],
    *,
    empty_room: int | None,
    empty_limit: int | None,
    pace: PaceFigures | None = None,
    delay: float = 0.0,
    adaptive: AdaptiveFigures | None = None,
) -> HostStats:
    """Add up the figures of the full keys behind one ``PoolKey``.

    ``available`` is the smallest room among its live pools (the figure that
    tells you whether a request to this host would wait); with no live pool,
    the room a new request would find (``empty_room`` if nothing is known).
    """
    figures = list(figures)
    if len(figures) == 1:  # one aiohttp pool per host: nearly always
        f = figures[0]
        return HostStats(
            acquired=f.acquired,
            idle=f.idle,
            connecting=f.connecting,
            waiting=f.waiting,
            limit=f.limit,
            available=f.room,
            **_counter_fields(f.counters),  # type: ignore[arg-type]
            **_pace_fields(pace, delay),
            **(_adaptive_fields(adaptive) if adaptive is not None else {}),
        )
    acquired = idle = connecting = waiting = 0
    total = Counters()  # none or several pools: summed into a new object
    live_rooms: list[int | None] = []
    all_rooms: list[int | None] = []
    limits: list[int | None] = []
    for f in figures:
        acquired += f.acquired
        idle += f.idle
        connecting += f.connecting
        waiting += f.waiting
        total.add(f.counters)
        limits.append(f.limit)
        all_rooms.append(f.room)
        if f.acquired or f.idle or f.connecting or f.waiting:
            live_rooms.append(f.room)
    limit = limits[0] if limits else empty_limit
    rooms = live_rooms or all_rooms
    if rooms:
        known = [r for r in rooms if r is not None]
        available = min(known) if known else None
    else:
        available = empty_room
    return HostStats(
        acquired=acquired,
        idle=idle,
        connecting=connecting,
        waiting=waiting,
        limit=limit,
        available=available,
        **_counter_fields(total),  # type: ignore[arg-type]
        **_pace_fields(pace, delay),
        **(_adaptive_fields(adaptive) if adaptive is not None else {}),
    )


class HostTable(Mapping[PoolKey, HostStats]):
    """``PoolStats.hosts``: the per-host figures of one snapshot, each
    :class:`HostStats` built the first time it is read.

    A crawler's snapshot covers every live host plus thousands in the
    history, and most readers look at a few of them (one host, the totals,
    the exporters' busiest ``max_hosts``). So ``stats()`` only copies each
    key's gauges and counts (one slice) into this table, before any await,
    and the mappings and histograms of a ``HostStats`` are made when someone
    asks for that host: a host read later still shows the figures of the
    moment the snapshot was taken. Read-only, like the rest of the snapshot;
    equal to any mapping with the same items.
    """

    __slots__ = (
        "_adaptive",
        "_built",
        "_delays",
        "_empty_limit",
        "_empty_room",
        "_figures",
        "_pacing",
    )

    def __init__(
        self,
        figures: dict[PoolKey, KeyFigures | list[KeyFigures]],
        *,
        empty_room: int | None,
        empty_limit: int | None,
        pacing: Mapping[PoolKey, PaceFigures] | None = None,
        delays: HostDelays | None = None,
        adaptive: Mapping[PoolKey, AdaptiveFigures] | None = None,
    ) -> None:
        self._figures = figures
        # Adaptive figures copied at the snapshot, for the hosts listed.
        self._adaptive = adaptive or {}
        self._built: dict[PoolKey, HostStats] = {}
        self._empty_room = empty_room
        self._empty_limit = empty_limit
        # Pacing figures copied at the snapshot, per host with pacing state;
        # hosts only waiting on pacing (none in the pool yet) are listed too.
        self._pacing = pacing or {}
        self._delays = delays if delays else None
        for key in self._pacing:
            if key not in figures:
                figures[key] = []

    def __getitem__(self, key: PoolKey) -> HostStats:
        built = self._built.get(key)
        if built is None:
            figures = self._figures[key]
            delays = self._delays
            built = build_host_stats(
                figures if isinstance(figures, list) else (figures,),
                empty_room=self._empty_room,
                empty_limit=self._empty_limit,
                pace=self._pacing.get(key),
                delay=0.0 if delays is None else delays.lookup(*key),
                adaptive=self._adaptive.get(key) if self._adaptive else None,
            )
            # setdefault: an exporter's thread and the loop may both read it.
            built = self._built.setdefault(key, built)
        return built

    def __iter__(self) -> Iterator[PoolKey]:
        return iter(self._figures)

    def __reversed__(self) -> Iterator[PoolKey]:
        return reversed(self._figures)

    def __len__(self) -> int:
        return len(self._figures)

    def __contains__(self, key: object) -> bool:
        return key in self._figures

    def requests_of(self, key: PoolKey) -> int:
        """``self[key].requests`` without building the ``HostStats`` (the
        exporters rank every host by it to pick the busiest)."""
        figures = self._figures[key]
        if isinstance(figures, list):
            return sum(f.requests for f in figures)
        return figures.requests

    def copy(self) -> dict[PoolKey, HostStats]:
        """Every host's ``HostStats`` in a new dict (``MappingProxyType.copy``
        did the same before ``hosts`` became lazy)."""
        return dict(self.items())

    def __or__(self, other: object) -> dict[PoolKey, HostStats]:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**self, **other}

    def __ror__(self, other: object) -> dict[PoolKey, HostStats]:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**other, **self}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.items())!r})"


def build_pool_stats(
    core: PoolCore[Hashable, Hashable, PoolKey],
    *,
    limit_per_host: int | None,
    host_limits: Mapping[str, int | None],
    group: Callable[[Hashable], PoolKey],
    fleet: FleetStats | None = None,
    pacing: Pacer[PoolKey] | None = None,
    delays: HostDelays | None = None,
    delay_jitter: float = 0.0,
    adaptive: AdaptiveController[PoolKey] | None = None,
) -> PoolStats:
    """Snapshot the whole core, grouping full keys by ``PoolKey``.

    Costs one copy of each key's counts; the per-host ``HostStats`` are built
    when read (:class:`HostTable`).
    """
    # One aiohttp pool per host nearly always: kept as is, a list only when
    # a host has several (a NamedTuple is never a list).
    grouped: dict[PoolKey, KeyFigures | list[KeyFigures]] = {}
    for figures in core.all_figures():  # copies: read later
        key = group(figures.key)
        have = grouped.get(key)
        if have is None:
            grouped[key] = figures
        elif isinstance(have, list):
            have.append(figures)
        else:
            grouped[key] = [have, figures]
    room = core.total_room()
    totals = core.totals
    forgotten_keys, forgotten = core.forgotten
    paced: dict[PoolKey, PaceFigures] = {}
    pace_counts: dict[str, Any] = {}
    if pacing is not None:
        paced = dict(pacing.all_figures())  # type: ignore[arg-type]
        pace_counts = {
            "pacing_waiting": pacing.waiting,
            "paced": pacing.paced,
            "pacing_late": pacing.late,
            "pauses": pacing.pauses,
            "paused_hosts": sum(f.paused_until is not None for f in paced.values()),
        }
    if delays is not None:
        pace_counts["delay_per_host"] = delays.default
        pace_counts["host_delays"] = MappingProxyType(delays.as_dict())
        pace_counts["delay_jitter"] = delay_jitter
    learned: dict[PoolKey, AdaptiveFigures] = {}
    if adaptive is not None:
        learned = {k: f for k, f in adaptive.all_figures() if k in grouped}
        pace_counts["adaptive"] = adaptive.config
        pace_counts["limit_adjustments"] = adaptive.adjustments
    return PoolStats(
        acquired=core.acquired,
        idle=core.idle,
        connecting=core.connecting,
        waiting=core.waiting,
        limit=core.limit,
        limit_per_host=limit_per_host,
        host_limits=MappingProxyType(dict(host_limits)),
        fd_budget=core.max_open,
        available=None if room is None else max(room, 0),
        hosts=HostTable(
            grouped,
            empty_room=room,
            empty_limit=limit_per_host,
            pacing=paced,
            delays=delays,
            adaptive=learned,
        ),
        forgotten_hosts=forgotten_keys,
        forgotten=HostStats(**_counter_fields(forgotten)),  # type: ignore[arg-type]
        is_closed=core.closed,
        fleet=fleet,
        **_counter_fields(totals),  # type: ignore[arg-type]
        **pace_counts,
    )


def build_connection_infos(
    core: PoolCore[Hashable, Hashable, PoolKey], now: float
) -> list[ConnectionInfo]:
    """Every live connection of ``core``, then one entry per connection
    being opened (no socket yet)."""
    infos: list[ConnectionInfo] = []
    for rec in core.records():
        transport = getattr(rec.handle, "transport", None)
        local = peer = None
        if transport is not None:
            local = transport.get_extra_info("sockname")
            peer = transport.get_extra_info("peername")
        idle = rec.state == "idle"
        infos.append(
            ConnectionInfo(
                key=pool_key_of(core.key_of(rec)),
                state="idle" if idle else "acquired",
                local=tuple(local) if local is not None else None,
                peer=tuple(peer) if peer is not None else None,
                requests=rec.served,
                age=now - rec.created_at,
                idle_for=now - rec.idle_since if idle else None,
            )
        )
    for ticket in core.connecting_tickets():
        infos.append(
            ConnectionInfo(
                key=pool_key_of(ticket.key),
                state="connecting",
                local=None,
                peer=None,
                requests=0,
                age=now - ticket.since,
                idle_for=None,
            )
        )
    return infos
