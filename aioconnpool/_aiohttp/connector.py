"""``PoolConnector``: aiohttp's ``TCPConnector`` with the accounting core as its pool.

The connector only translates: aiohttp's calls become core events, and the
core's decisions (wake these waiters, close these connections) are carried
out. It is built from one part per concern, each a class in its own module:

* ``acquire.Acquiring`` -- ``connect()``: reuse, queue, hand-over, open;
* ``release_paths.Releasing`` -- connections coming back from aiohttp, named
  by how the acquisition ended;
* ``carry_out.DecisionRunner`` -- acting on the core's decisions: waking,
  closing, keep-alive timing, listeners.

This module holds the constructor (options validated before anything is
built), the public API (``stats()``, listeners, leaks, host limits,
``connections()``) and the connector's own close. Connection creation -- DNS,
TLS, proxies, happy eyeballs -- is ``TCPConnector``'s own, untouched. No pool
state lives here: it is all in the core.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, cast, overload

from aiohttp.client_proto import ResponseHandler
from yarl import URL

from .._core import Decision, PoolCore
from .._core.adaptive import AdaptiveController
from .._core.pacing import Pacer
from .._core.records import min_room
from .._errors import PoolClosedError
from .._events import PoolEvent
from .._keys import PoolKey, pool_key_of, to_pool_key
from .._stats import (
    ConnectionInfo,
    HostStats,
    PoolStats,
    build_connection_infos,
    build_host_stats,
    build_pool_stats,
)
from . import compat as _compat
from .acquire import Acquiring
from .adaptive import AdaptiveGate, AdaptiveProtocol, adaptive_connection_class
from .leaks import LeakDetector, LeakInfo
from .options import (
    adaptive_of,
    check_seconds,
    validate_pool_options,
    validate_tcp_options,
)
from .pacing import PacingGate
from .protocol import PoolProtocol
from .release_paths import Releasing

__all__ = ["PoolConnector"]

log = logging.getLogger("aioconnpool")


def _clock_of(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """The loop's clock, for the core. The default loop's ``time()`` is
    ``time.monotonic()``: read that directly, a call less per event; other
    loops (uvloop caches its time) keep their own."""
    if type(loop).time is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


def check_fleet(fleet: object) -> None:
    """``fleet`` must be a fleet backend (``aioconnpool.fleet.RedisFleet``)."""
    from .fleet_gate import FleetBackend

    if not isinstance(fleet, FleetBackend):
        raise TypeError(
            "fleet must be a fleet backend such as aioconnpool.fleet.RedisFleet, "
            f"not {type(fleet).__name__}"
        )


class PoolConnector(Acquiring, Releasing):
    """A ``TCPConnector`` whose pool is exact, observable and fair.

    Accepts every ``TCPConnector`` keyword with the same meaning (``limit``,
    ``limit_per_host``, ``keepalive_timeout``, ``force_close``, ``ssl``,
    ``resolver``...), plus these keyword-only pool policies (all validated
    here, with errors naming the option and the value):

    ``limit_per_host``
        as in ``TCPConnector`` (an int, 0 for none), or adaptive:
        ``"auto"`` or an :class:`AdaptiveLimit` learns each host's limit
        from its latency and its errors, within ``[min, max]``
        (``"auto"`` is ``AdaptiveLimit()``: 1 to 16, starting at 4). A
        ``host_limits`` match wins over it for its hosts. ``stats()`` shows
        each host's ``adaptive_limit``, ``gradient`` and ``min_rtt``; every
        change is a ``LimitAdjusted`` event. See ``docs/politeness.md``.
    ``host_limits``
        per-host limits overriding ``limit_per_host``: a mapping of
        ``"host"``, ``"host:port"`` or ``"scheme://host[:port]"`` to an int
        (or ``None``: no per-host limit); the most specific match wins. Change
        it at runtime with :meth:`set_host_limit` / :meth:`remove_host_limit`.
    ``max_idle_per_host``
        idle connections a host may keep (urllib3's ``pool_maxsize``); one
        released beyond that is closed (``closed["pool_full"]``) and logged.
    ``max_idle``
        idle connections kept in all; beyond, the longest idle is closed.
    ``max_hosts``
        hosts that may keep idle connections (urllib3's ``pool_connections``);
        the least recently used one's are closed (``closed["evicted"]``).
    ``block``
        ``False``: a request that would wait raises :class:`PoolFullError`.
    ``acquire_timeout``
        seconds a request may wait in the queue before :class:`PoolTimeoutError`.
    ``max_connection_age`` / ``max_requests_per_connection``
        close a connection once that old / after that many requests.
    ``reuse``
        ``"fifo"`` (aiohttp's order) or ``"lifo"``: which idle connection is
        reused first.
    ``leak_threshold``
        seconds; a connection held longer logs one WARNING with the task and
        stack that acquired it, and is listed by :meth:`leaks`.
    ``fd_budget``
        the most sockets the pool keeps open at once (acquired, connecting
        and idle): ``"auto"`` (the default) is half the process's soft
        ``RLIMIT_NOFILE``; an int sets it; ``None`` turns it off (aiohttp's
        behaviour). A new connection that would exceed it first closes the
        connections idle longest (``closed["fd_budget"]``); when only
        acquired ones are left, requests wait as on a full pool. So idle
        keep-alive sockets never make the process run out of file
        descriptors. ``PoolStats.fd_budget`` shows the value in force.
    ``stats_history``
        how many drained hosts keep their per-host counters in ``stats()``
        (default 10,000); older ones are summed into ``PoolStats.forgotten``.
    ``fleet``
        a fleet backend (``aioconnpool.fleet.RedisFleet``) whose per-host
        limits hold across every process that shares it: each acquisition
        first waits for a fleet slot of its host, holding none of this
        connector's own slots meanwhile, and gives it back when it ends.
        ``PoolStats.fleet`` shows the fleet's figures. One backend per
        connector; ``close()`` closes it.
    """

    _fleet: Any = None
    # The adaptive limits' glue; None (the class's) without them.
    _adaptive: AdaptiveGate | None = None
    _fleet_closing: asyncio.Task[None] | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> PoolConnector:
        # With a fleet, every acquisition first waits for a fleet slot: a
        # subclass of its own, so that connectors without one pay nothing.
        if kwargs.get("fleet") is not None and cls is PoolConnector:
            from .fleet_gate import FleetGatedConnector

            return super().__new__(FleetGatedConnector)
        return super().__new__(cls)

    def __init__(
        self,
        *,
        host_limits: Mapping[str, int | None] | None = None,
        max_idle_per_host: int | None = None,
        max_idle: int | None = None,
        max_hosts: int | None = None,
        block: bool = True,
        acquire_timeout: float | None = None,
        max_connection_age: float | None = None,
        max_requests_per_connection: int | None = None,
        reuse: str = "fifo",
        leak_threshold: float | None = None,
        stats_history: int = 10_000,
        fd_budget: int | str | None = "auto",
        fleet: Any = None,
        delay_per_host: float = 0.0,
        host_delays: Mapping[str, float] | None = None,
        delay_jitter: float = 0.0,
        **kwargs: Any,
    ) -> None:
        # An int (or nothing) is the common case: no call for it.
        adaptive = None
        if "limit_per_host" in kwargs and kwargs["limit_per_host"].__class__ is not int:
            adaptive = adaptive_of(kwargs["limit_per_host"])
        if adaptive is not None:
            # aiohttp's own per-host limit is never used by the pool, and
            # must be an int: 0 ("none") there, the adaptive one here.
            kwargs["limit_per_host"] = 0
        validate_tcp_options(kwargs)
        if fleet is not None:
            check_fleet(fleet)
        options = validate_pool_options(
            kwargs,
            stats_history=stats_history,
            host_limits=host_limits,
            max_idle_per_host=max_idle_per_host,
            max_idle=max_idle,
            max_hosts=max_hosts,
            block=block,
            acquire_timeout=acquire_timeout,
            max_connection_age=max_connection_age,
            max_requests_per_connection=max_requests_per_connection,
            reuse=reuse,
            leak_threshold=leak_threshold,
            fd_budget=fd_budget,
            delay_per_host=delay_per_host,
            host_delays=host_delays,
            delay_jitter=delay_jitter,
        )
        super().__init__(**kwargs)
        _compat.check_factory(self)
        self._options = options
        self._host_limits = options.host_limits
        self._host_limit_patterns = self._host_limits.patterns
        self._held: set[PoolKey] = set()  # paused hosts: limit 0 (see _hold)
        self._pool_limit_per_host = self._limit_per_host or None
        self._pool_keepalive = _compat.keepalive_seconds(
            self._force_close, self._keepalive_timeout
        )
        limit_for = self._limit_for
        protocol: type[PoolProtocol] = PoolProtocol
        if adaptive is not None:
            # Only now, so that a connector without adaptive limits runs
            # none of their code (their protocol, connection class, connect
            # step).
            _compat.check_response_hook()
            gate = self._adaptive = AdaptiveGate(
                self,
                AdaptiveController(adaptive, history=max(options.stats_history, 1000)),
            )
            limit_for = self._adaptive_limit_for
            protocol = AdaptiveProtocol
            self._connection_class = adaptive_connection_class(
                type(self)._connection_class
            )
            create = gate.wrap_create_connection(self._create_connection)
            self._create_connection = create  # type: ignore[method-assign,assignment]
        factory = functools.partial(
            protocol,
            loop=self._loop,
            pool=weakref.ref(self),
        )
        self._factory = cast("functools.partial[ResponseHandler]", factory)
        self._core: PoolCore[Hashable, Hashable, PoolKey] = PoolCore(
            limit=self._limit or None,
            limit_for=limit_for,
            group=pool_key_of,
            keepalive_timeout=self._pool_keepalive,
            is_alive=ResponseHandler.is_connected,  # type: ignore[arg-type]
            clock=_clock_of(self._loop),
            history=options.stats_history,
            max_age=options.max_connection_age,
            max_requests=options.max_requests_per_connection,
            max_idle_per_key=options.max_idle_per_host,
            max_idle=options.max_idle,
            max_idle_keys=options.max_hosts,
            reuse=options.reuse,
            max_open=options.fd_budget,
        )
        self._fleet = fleet
        if fleet is not None:
            fleet.bind(self._loop)
        self._idle_conns = self._core.idle_connections()
        self._expiry_handle: asyncio.TimerHandle | None = None
        self._listeners: list[Callable[[PoolEvent], object]] = []
        self._pending_events: list[PoolEvent] = []
        self._pacing: PacingGate | None = None
        if options.host_delays:
            self._pacing_gate()
        self._leaks: LeakDetector | None = None
        if options.leak_threshold is not None:
            self._leaks = LeakDetector(
                self._loop, options.leak_threshold, self._dispatch_one
            )

    # ------------------------------------------------------------ public API

    @overload
    def stats(self) -> PoolStats: ...

    @overload
    def stats(self, target: PoolKey | str | URL) -> HostStats: ...

    def stats(self, target: PoolKey | str | URL | None = None) -> PoolStats | HostStats:
        """A consistent snapshot of the pool, taken without awaiting.

        With no argument, a :class:`PoolStats` for the whole connector. With a
        ``PoolKey``, URL string or ``yarl.URL``, the :class:`HostStats` of that
        (host, port, ssl): zeros for a host never seen. Any other target
        raises ``TypeError``; a URL with no host or a non-HTTP scheme raises
        ``ValueError``.
        """
        core = self._core
        gate = self._pacing
        adaptive = None if self._adaptive is None else self._adaptive.controller
        if target is None:
            return build_pool_stats(
                core,
                limit_per_host=self._pool_limit_per_host,
                host_limits=self._host_limits.as_dict(),
                group=pool_key_of,
                fleet=None if self._fleet is None else self._fleet.snapshot(),
                pacing=None if gate is None else gate.pacer,
                delays=self._options.host_delays,
                delay_jitter=self._options.delay_jitter,
                adaptive=adaptive,
            )
        key = to_pool_key(target)
        figures = [core.figures(k) for k in core.keys_in_group(key)]
        limit = self._host_limit(key)
        return build_host_stats(
            figures,
            empty_room=min_room(limit, core.total_room()),
            empty_limit=limit,
            pace=None if gate is None else gate.pacer.figures(key),
            delay=self._options.host_delays.lookup(*key),
            adaptive=None if adaptive is None else adaptive.figures(key),
        )

    def add_listener(self, callback: Callable[[PoolEvent], object]) -> None:
        """Call ``callback(event)`` for every pool event (see ``_events``),
        synchronously, once the pool's state is consistent again. A callback
        that raises is logged and never breaks the pool."""
        if not callable(callback):
            raise TypeError(
                f"listener must be callable, not {type(callback).__name__}: "
                f"{callback!r}"
            )
        self._listeners.append(callback)
        self._core.observe(self._pending_events)
        if self._pacing is not None:
            self._pacing.pacer.observe(self._pending_events)
        if self._adaptive is not None:
            self._adaptive.controller.observe(self._pending_events)

    def remove_listener(self, callback: Callable[[PoolEvent], object]) -> None:
        """Stop calling ``callback``; ``ValueError`` if it is not a listener."""
        try:
            self._listeners.remove(callback)
        except ValueError:
            raise ValueError(f"{callback!r} is not a listener of {self!r}") from None
        if not self._listeners:
            self._core.observe(None)  # nobody listens: the core builds nothing
            if self._pacing is not None:
                self._pacing.pacer.observe(None)
            if self._adaptive is not None:
                self._adaptive.controller.observe(None)
            self._pending_events.clear()

    def leaks(self) -> list[LeakInfo]:
        """Connections held longer than ``leak_threshold`` right now."""
        if self._leaks is None:
            raise RuntimeError(
                "leak detection is off: build the connector with leak_threshold="
            )
        return self._leaks.suspects()

    @property
    def host_limits(self) -> dict[str, int | None]:
        """The per-host limit overrides, keyed by normalised pattern."""
        return self._host_limits.as_dict()

    def set_host_limit(self, pattern: str, limit: int | None) -> None:
        """Set the limit of the hosts ``pattern`` selects (a ``host_limits``
        key), now. Raising a limit wakes the requests it lets through."""
        parsed = self._host_limits.set(pattern, limit)
        self._apply_host_limits(parsed.host)

    def remove_host_limit(self, pattern: str) -> None:
        """Drop an override; its hosts fall back to the next match or to
        ``limit_per_host``. ``KeyError`` if ``pattern`` has none."""
        parsed = self._host_limits.remove(pattern)
        self._apply_host_limits(parsed.host)

    @property
    def host_delays(self) -> dict[str, float]:
        """The per-host delays (``host_delays``), keyed by normalised pattern."""
        return self._options.host_delays.as_dict()

    def set_host_delay(self, pattern: str, seconds: float) -> None:
        """Set the delay of the hosts ``pattern`` selects (a ``host_delays``
        key) from now on: requests already waiting keep their starts, the
        next ones are planned with the new delay."""
        parsed = self._options.host_delays.set(pattern, seconds)
        gate = self._pacing_gate() if seconds else self._pacing
        if gate is not None:
            gate.pacer.refresh_delays(
                lambda key: getattr(key, "host", None) == parsed.host
            )

    def pause_host(
        self, target: PoolKey | str | URL, seconds: float, *, reason: str = "paused"
    ) -> None:
        """Pause a host (a ``PoolKey``, URL string or ``yarl.URL``) for
        ``seconds``: its queued and future requests start no sooner than
        that, holding no slot meanwhile (a later pause wins over an earlier
        one). Requests whose start then falls after their ``ClientTimeout``
        deadline fail at once with :class:`PacingDeadlineError`.
        ``stats()`` shows the pause and ``reason``; events
        ``HostPaused`` / ``HostResumed`` bracket it. Requests already
        queued in the pool are held there too: the host's limit is 0
        until the pause ends (``stats()`` shows it), so its idle connections
        and freed slots go to no request of it. Requests already sent are
        not recalled.
        """
        key = to_pool_key(target)
        seconds = check_seconds("seconds", seconds, allow_none=False) or 0.0
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, not {type(reason).__name__}")
        if self._core.closed:
            raise PoolClosedError("Connector is closed.")
        self._pacing_gate().pause(key, seconds, reason)

    def resume_host(self, target: PoolKey | str | URL) -> None:
        """End a host's pause now (nothing happens if it has none)."""
        key = to_pool_key(target)
        if self._pacing is not None:
            self._pacing.resume(key)

    def connections(self) -> list[ConnectionInfo]:
        """Every live connection, plus one entry per connection being opened."""
        return build_connection_infos(self._core, self._loop.time())

    def __repr__(self) -> str:
        core = self._core
        state = " closed" if core.closed else ""
        per_host: object = self._limit_per_host
        if self._adaptive is not None:
            per_host = self._adaptive.controller.config
        return (
            f"<{type(self).__name__}{state} [Requests: {core.acquired} active, "
            f"{core.waiting} queued | Connections: {core.acquired} active, "
            f"{core.idle} idle, {core.connecting} connecting] "
            f"limit={self._limit} limit_per_host={per_host}>"
        )

    # ------------------------------------------------------- aiohttp's hooks

    def _close(self, **kwargs: Any) -> Any:
        """aiohttp 3.x's close step (``close()`` and ``__del__`` call it)."""
        return self._close_pool(**kwargs)

    def _close_immediately(self, **kwargs: Any) -> Any:
        """aiohttp 4.0's name for the same step (master renamed ``_close``)."""
        return self._close_pool(**kwargs)

    def _close_pool(self, **kwargs: Any) -> Any:
        """Close the pool, then run aiohttp's own close step
        (``compat.CLOSE_HOOK``); return what it returns plus what ``close()``
        must also wait for (sockets closing, leaving the fleet)."""
        aiohttp_close = getattr(super(), _compat.CLOSE_HOOK)
        if self._closed:
            return aiohttp_close(**kwargs)
        waiters: list[Awaitable[object]] = []
        abort_ssl = bool(kwargs.get("abort_ssl", False))
        if self._expiry_handle is not None:
            self._expiry_handle.cancel()
            self._expiry_handle = None
        if self._pacing is not None:
            self._pacing.close()
        decision = self._core.close()
        if decision.close:
            log.info("Closing connector: %d connections", len(decision.close))
        if not self._loop.is_closed():
            for closing in decision.close:
                proto = closing.conn
                # Read `closed` only here, where close() awaits it: the
                # property creates a future, which would otherwise hold an
                # exception nobody retrieves when the socket dies on error.
                closed: asyncio.Future[None] | None = getattr(proto, "closed", None)
                _compat.fail_unread_body(proto, PoolClosedError("Connector is closed."))
                self._close_protocol(proto, closing.reason, abort=abort_ssl)
                if closed is not None:
                    waiters.append(closed)
            self._carry_out(Decision(decision.wake, ()))  # refused waiters
        if self._leaks is not None:
            self._leaks.close()
        self._deliver()
        if self._fleet is not None and not self._loop.is_closed():
            # Leave the fleet (give back every slot at once); close() awaits
            # it with the sockets (FleetGatedConnector.close on aiohttp 3.11).
            self._fleet_closing = self._loop.create_task(self._fleet.close())
            waiters.append(self._fleet_closing)
        result: list[Awaitable[object]] | None = aiohttp_close(**kwargs)
        if result is None:  # aiohttp 3.11: nothing to wait for
            return None
        return [*result, *waiters]

    def __del__(self, _warnings: Any = warnings) -> None:
        core = getattr(self, "_core", None)
        if self._closed or core is None or not (core.acquired or core.idle):
            return
        summary = repr(self)
        self._close_pool()
        _warnings.warn(f"Unclosed connector {summary}", ResourceWarning, source=self)
        context: dict[str, Any] = {"connector": self, "message": "Unclosed connector"}
        if self._source_traceback is not None:
            context["source_traceback"] = self._source_traceback
        self._loop.call_exception_handler(context)

    # ------------------------------------------------------------ internals

    def _limit_for(self, key: Hashable) -> int | None:
        """The per-host limit of a ``ConnectionKey``: 0 while its host is
        paused (see :meth:`_hold`)."""
        if not self._host_limit_patterns and not self._held:
            # No override (the common case): no PoolKey to build and look up
            # for every new host.
            return self._pool_limit_per_host
        pool_key = pool_key_of(key)
        if pool_key in self._held:
            return 0
        return self._host_limit(pool_key)

    def _hold(self, key: PoolKey, held: bool) -> None:
        """Hold a paused host's requests already queued in the pool (or let
        them go): its limit is 0 while held, so the core grants it nothing,
        idle connections included, and gives freed slots to other hosts.
        Its acquired connections are not touched."""
        if held:
            self._held.add(key)
        else:
            self._held.discard(key)
        self._carry_out(self._core.refresh_limits(lambda k: pool_key_of(k) == key))

    def _host_limit(self, key: PoolKey) -> int | None:
        """A host's limit: its most specific override, else ``limit_per_host``."""
        found = self._host_limits.lookup(*key)
        if found is not None:
            return found[1]
        if self._adaptive is not None:
            return self._adaptive.controller.limit_of(key)
        return self._pool_limit_per_host

    def _adaptive_limit_for(self, key: Hashable) -> int | None:
        """``_limit_for`` with adaptive limits: 0 while the host is held
        (paused), else a fixed override, else the host's learned limit
        (asked once per key the pool opens, and when a hold ends)."""
        pool_key = pool_key_of(key)
        return 0 if pool_key in self._held else self._host_limit(pool_key)

    def _pacing_gate(self) -> PacingGate:
        """The pacing gate, built on first need. Only then does ``connect``
        pass through it: an instance attribute over the class's method, so a
        connector that never paces runs no pacing code at all."""
        gate = self._pacing
        if gate is None:
            delays = self._options.host_delays
            pacer: Pacer[PoolKey] = Pacer(
                delay_for=lambda key: delays.lookup(*key),
                jitter=self._options.delay_jitter,
            )
            gate = self._pacing = PacingGate(self, pacer)
            if self._listeners:
                pacer.observe(self._pending_events)
            self.connect = gate.connect  # type: ignore[method-assign]
        return gate

    def _apply_host_limits(self, host: str) -> None:
        self._carry_out(
            self._core.refresh_limits(lambda key: getattr(key, "host", None) == host)
        )
