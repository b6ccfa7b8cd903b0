"""``PoolConnector``: aiohttp's ``TCPConnector`` with the accounting core as its pool.

This module only translates. aiohttp calls ``connect()`` and ``_release()``;
they become core events (arrive, connect succeeded / failed, abandon,
release); the core's decisions (wake these waiters, close these connections)
are carried out here. Connection creation -- DNS, TLS, proxies, happy
eyeballs -- is ``TCPConnector``'s own, untouched. No pool state lives here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any, cast, overload

from aiohttp import TCPConnector
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection
from aiohttp.helpers import ceil_timeout
from yarl import URL

from .._core.pool import CLOSED, NOTHING, QUEUED, REJECTED, Decision, PoolCore, Ticket
from .._core.records import min_room
from .._errors import PoolClosedError, PoolFullError, PoolTimeoutError
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
from .leaks import LeakDetector, LeakInfo
from .options import validate_pool_options, validate_tcp_options
from .protocol import PoolProtocol
from .release_paths import classify_release
from .reporting import describe_wait, log_closing

if TYPE_CHECKING:
    from aiohttp.client import ClientTimeout
    from aiohttp.client_reqrep import ClientRequest, ConnectionKey
    from aiohttp.tracing import Trace

__all__ = ["PoolConnector"]

log = logging.getLogger("aioconnpool")


class PoolConnection(Connection):
    """aiohttp's ``Connection``, telling the pool it was released on purpose.

    A connection that is garbage-collected unreleased still reaches the pool
    through aiohttp's ``Connection.__del__``; the flag lets the pool count
    that as a leak (``"gc"``) instead of a close.
    """

    def release(self) -> None:
        self._give_back(closing=False)

    def close(self) -> None:
        self._give_back(closing=True)

    def _give_back(self, *, closing: bool) -> None:
        self._notify_release()
        if self._protocol is not None:
            connector: PoolConnector = self._connector  # type: ignore[assignment]
            connector._pool_release(self._protocol, closing=closing, explicit=True)
            self._protocol = None


def _granted_conn(ticket: Ticket) -> Hashable | None:
    """The idle connection granted to ``ticket``, read afresh after an await."""
    return ticket.conn


def _unusable(proto: Any) -> str | None:
    """Why an idle connection granted a loop turn ago cannot serve the
    request that comes to take it now, or ``None`` if it can: closed by the
    peer meanwhile, or holding bytes that answer no request (an acquired
    connection's reads are not screened the way an idle one's are)."""
    if not proto.is_connected():
        return "server"
    if proto.should_close:
        return "error"
    return None


def _how_failed(exc: BaseException) -> str:
    return "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"


# Reasons after which unsent bytes may still sit in the socket.
_ABORT_REASONS = frozenset({"error", "cancelled"})


def _being_cancelled() -> bool:
    """Whether someone asked to cancel the current task (Python 3.11+;
    on older versions, assume so: the CancelledError is left alone)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


def _clock_of(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """The loop's clock, for the core. The default loop's ``time()`` is
    ``time.monotonic()``: read that directly, a call less per event; other
    loops (uvloop caches its time) keep their own."""
    if type(loop).time is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


def _run_expiry(ref: weakref.ref[PoolConnector]) -> None:
    connector = ref()
    if connector is not None:
        connector._expire_idle()


class PoolConnector(TCPConnector):
    """A ``TCPConnector`` whose pool is exact, observable and fair.

    Accepts every ``TCPConnector`` keyword with the same meaning (``limit``,
    ``limit_per_host``, ``keepalive_timeout``, ``force_close``, ``ssl``,
    ``resolver``...), plus these keyword-only pool policies (all validated
    here, with errors naming the option and the value):

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
    ``stats_history``
        how many drained hosts keep their per-host counters in ``stats()``
        (default 10,000); older ones are summed into ``PoolStats.forgotten``.
    """

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
        **kwargs: Any,
    ) -> None:
        validate_tcp_options(kwargs)
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
        )
        super().__init__(**kwargs)
        self._options = options
        self._host_limits = options.host_limits
        self._pool_limit_per_host = self._limit_per_host or None
        factory = functools.partial(
            PoolProtocol,
            loop=self._loop,
            pool=weakref.ref(self),
        )
        self._factory = cast("functools.partial[ResponseHandler]", factory)
        self._core: PoolCore[Hashable, Hashable, PoolKey] = PoolCore(
            limit=self._limit or None,
            limit_for=self._limit_for,
            group=pool_key_of,
            keepalive_timeout=None if self._force_close else self._keepalive_timeout,
            is_alive=ResponseHandler.is_connected,  # type: ignore[arg-type]
            clock=_clock_of(self._loop),
            history=options.stats_history,
            max_age=options.max_connection_age,
            max_requests=options.max_requests_per_connection,
            max_idle_per_key=options.max_idle_per_host,
            max_idle=options.max_idle,
            max_idle_keys=options.max_hosts,
            reuse=options.reuse,
        )
        self._expiry_handle: asyncio.TimerHandle | None = None
        self._listeners: list[Callable[[PoolEvent], object]] = []
        self._pending_events: list[PoolEvent] = []
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
        if target is None:
            return build_pool_stats(
                core,
                limit_per_host=self._pool_limit_per_host,
                host_limits=self._host_limits.as_dict(),
                group=pool_key_of,
            )
        key = to_pool_key(target)
        figures = [core.figures(k) for k in core.keys_in_group(key)]
        limit = self._host_limit(key)
        return build_host_stats(
            figures, empty_room=min_room(limit, core.total_room()), empty_limit=limit
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

    def remove_listener(self, callback: Callable[[PoolEvent], object]) -> None:
        """Stop calling ``callback``; ``ValueError`` if it is not a listener."""
        try:
            self._listeners.remove(callback)
        except ValueError:
            raise ValueError(f"{callback!r} is not a listener of {self!r}") from None
        if not self._listeners:
            self._core.observe(None)  # nobody listens: the core builds nothing
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

    def connections(self) -> list[ConnectionInfo]:
        """Every live connection, plus one entry per connection being opened."""
        return build_connection_infos(self._core, self._loop.time())

    def __repr__(self) -> str:
        core = self._core
        state = " closed" if core.closed else ""
        return (
            f"<{type(self).__name__}{state} [Requests: {core.acquired} active, "
            f"{core.waiting} queued | Connections: {core.acquired} active, "
            f"{core.idle} idle, {core.connecting} connecting] "
            f"limit={self._limit} limit_per_host={self._limit_per_host}>"
        )

    # ------------------------------------------------------- aiohttp's hooks

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: ClientTimeout
    ) -> Connection:
        """Get a connection for ``req``: reuse, wait for a slot, or open one."""
        key = req.connection_key  # a property that builds a new tuple: once
        if _compat.KEY_LACKS_SERVER_HOSTNAME:
            key = _compat.with_server_hostname(key, req)
        if not traces:  # reuse traces go through a ticket (they may raise)
            conn, decision = self._core.reuse(key)
            if decision is not NOTHING or self._pending_events:
                self._carry_out(decision)
            if conn is not None:
                return self._connection_for(conn, req, key)
        ticket, decision = self._core.arrive(key, block=self._options.block)
        if decision is not NOTHING or self._pending_events:
            self._carry_out(decision)
        if ticket.conn is not None:
            if not traces:  # the common case, without a coroutine of its own
                return self._take_granted(ticket, req, key)
            return await self._hand_over(ticket, req, traces)
        if ticket.state == CLOSED:
            raise PoolClosedError("Connector is closed.")
        if ticket.state == REJECTED:
            pool_key = pool_key_of(key)
            raise PoolFullError(
                f"No connection free for {pool_key} and block=False: "
                f"{self._situation(key)}",
                pool_key,
            )
        async with ceil_timeout(timeout.connect, timeout.ceil_threshold):
            if ticket.state == QUEUED:
                await self._wait(ticket, traces)
                granted = _granted_conn(ticket)
                if granted is not None:
                    # Granted a loop turn ago: the server may have closed it
                    # or written to it since (aiohttp's own connector checks
                    # is_connected() after waking).
                    reason = _unusable(granted)
                    if reason is not None:
                        self._carry_out(self._core.grant_lost(ticket, reason))
                if _granted_conn(ticket) is not None:
                    if not traces:
                        return self._take_granted(ticket, req, key)
                    return await self._hand_over(ticket, req, traces)
            proto = await self._open(ticket, req, traces, timeout)
        if self._leaks is not None:
            self._leaks.acquired(proto, pool_key_of(key))
        return PoolConnection(self, key, proto, self._loop)

    def _release(
        self,
        key: ConnectionKey,
        protocol: ResponseHandler,
        *,
        should_close: bool = False,
    ) -> None:
        # Reached only from aiohttp's own code: a garbage-collected Connection,
        # or the CONNECT tunnel of a proxy, whose protocol the pool never held.
        self._pool_release(protocol, closing=should_close, explicit=False)

    def _close(self, **kwargs: Any) -> Any:
        if self._closed:
            return super()._close(**kwargs)
        waiters: list[Awaitable[object]] = []
        abort_ssl = bool(kwargs.get("abort_ssl", False))
        if self._expiry_handle is not None:
            self._expiry_handle.cancel()
            self._expiry_handle = None
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
        result: list[Awaitable[object]] | None = cast(Any, super()._close(**kwargs))
        if result is None:  # aiohttp 3.11: nothing to wait for
            return None
        return [*result, *waiters]

    def __del__(self, _warnings: Any = warnings) -> None:
        core = getattr(self, "_core", None)
        if self._closed or core is None or not (core.acquired or core.idle):
            return
        summary = repr(self)
        self._close()
        _warnings.warn(f"Unclosed connector {summary}", ResourceWarning, source=self)
        context: dict[str, Any] = {"connector": self, "message": "Unclosed connector"}
        if self._source_traceback is not None:
            context["source_traceback"] = self._source_traceback
        self._loop.call_exception_handler(context)

    # ------------------------------------------------------------ internals

    async def _hand_over(
        self, ticket: Ticket, req: ClientRequest, traces: list[Trace]
    ) -> Connection:
        """Give the idle connection granted to ``ticket`` to its request,
        once the reuse traces have been sent."""
        try:
            for trace in traces:
                await trace.send_connection_reuseconn()
        except BaseException as exc:
            # aiohttp forgets the socket here; we put it back in the pool.
            self._carry_out(self._core.abandon(ticket, _how_failed(exc)))
            raise
        return self._take_granted(ticket, req, ticket.key)  # type: ignore[arg-type]

    def _take_granted(
        self, ticket: Ticket, req: ClientRequest, key: ConnectionKey
    ) -> Connection:
        """The request takes the idle connection granted to ``ticket``."""
        proto = ticket.conn
        if not self._core.handed_over(ticket):
            # The pool closed while this task was on its way here.
            raise PoolClosedError("Connector is closed.")
        return self._connection_for(proto, req, key)

    def _connection_for(
        self, proto: Any, req: ClientRequest, key: ConnectionKey
    ) -> Connection:
        """Wrap an idle connection the request now holds."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("Reusing connection to %s", pool_key_of(key))
        if self._leaks is not None:
            self._leaks.acquired(proto, pool_key_of(key))
        if req.proxy is not None:
            _compat.update_proxy_headers(self, req)
        return PoolConnection(self, key, proto, self._loop)

    async def _wait(self, ticket: Ticket, traces: list[Trace]) -> None:
        """Wait in the queue until the core grants ``ticket`` a slot."""
        future: asyncio.Future[None] = self._loop.create_future()
        ticket.token = future
        timeout = self._options.acquire_timeout
        timer = None
        if timeout is not None:
            timer = self._loop.call_at(
                ticket.since + timeout, self._wait_timed_out, ticket, timeout
            )
        try:
            for trace in traces:
                await trace.send_connection_queued_start()
            await future
            for trace in traces:
                await trace.send_connection_queued_end()
        except BaseException as exc:
            self._carry_out(self._core.abandon(ticket, _how_failed(exc)))
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if ticket.state == CLOSED:
            raise PoolClosedError("Connector is closed.")

    def _wait_timed_out(self, ticket: Ticket, timeout: float) -> None:
        future = ticket.token
        if isinstance(future, asyncio.Future) and future.done():
            return  # cancelled (aiohttp's connect timeout, say) or granted
        if not self._core.time_out(ticket):
            return  # granted or refused in the meantime: nothing to do
        key = pool_key_of(ticket.key)
        error = PoolTimeoutError(
            f"Timed out after {timeout:g} s (acquire_timeout) waiting for a "
            f"connection to {key}: {self._situation(ticket.key)}",
            key,
            timeout,
        )
        if isinstance(future, asyncio.Future) and not future.done():
            future.set_exception(error)
        self._deliver()

    async def _open(
        self,
        ticket: Ticket,
        req: ClientRequest,
        traces: list[Trace],
        timeout: ClientTimeout,
    ) -> ResponseHandler:
        """Open a new connection under ``ticket``'s permit."""
        if log.isEnabledFor(logging.DEBUG):
            key = pool_key_of(ticket.key)
            log.debug(
                "Starting new %s connection (%d): %s:%d",
                "HTTPS" if key.ssl else "HTTP",
                self._core.connection_count(ticket.key),
                key.host,
                key.port,
            )
        try:
            for trace in traces:
                await trace.send_connection_create_start()
            proto = await self._create_connection(req, traces, timeout)
        except BaseException as exc:
            self._carry_out(self._core.connect_failed(ticket))
            if (
                isinstance(exc, asyncio.CancelledError)
                and self._core.closed
                and not _being_cancelled()
            ):
                # TCPConnector.close() cancels its DNS lookups; that
                # CancelledError would reach a request nobody cancelled.
                raise PoolClosedError("Connector is closed.") from exc
            raise
        decision = self._core.connect_succeeded(ticket, proto)
        self._carry_out(decision)
        if ticket.state == CLOSED:
            raise PoolClosedError("Connector is closed.")
        if isinstance(proto, PoolProtocol):
            proto.track(self._core.record_of(proto))
        try:
            for trace in traces:
                await trace.send_connection_create_end()
        except BaseException as exc:
            # aiohttp leaks the new socket here; we close and count it.
            how = _how_failed(exc)
            self._carry_out(self._core.release(proto, how, how) or NOTHING)
            raise
        return proto

    def _pool_release(
        self, protocol: ResponseHandler, *, closing: bool, explicit: bool
    ) -> None:
        """A connection comes back from aiohttp; let the core decide its fate."""
        how, reason = classify_release(
            protocol, closing=closing, force_close=self._force_close, explicit=explicit
        )
        if self._leaks is not None:
            self._leaks.released(protocol)
        decision = self._core.release(protocol, how, reason)
        if decision is None:
            # Not ours to pool (a proxy tunnel), or closed with the connector.
            protocol.close()
            return
        if decision is not NOTHING or self._pending_events:
            self._carry_out(decision)
        elif self._expiry_handle is None and reason is None:
            self._arm_expiry()  # kept idle: its keep-alive must be timed

    def _on_idle_data(self, protocol: PoolProtocol) -> bool:
        """Bytes arrived on ``protocol``: if it is idle, drop it (True)."""
        if not self._core.is_idle(protocol):
            return False
        self._carry_out(self._core.conn_lost(protocol, "error"))
        return True

    def _on_lost(self, protocol: PoolProtocol) -> None:
        self._carry_out(self._core.conn_lost(protocol))

    def _carry_out(self, decision: Decision) -> None:
        """Close what the core closed, wake whom it granted, tell listeners.

        Iterative on purpose: a grant that reaches an already cancelled task
        goes straight back to the core, whose answer may grant the next
        cancelled waiter, and so on -- thousands deep when a TaskGroup
        cancels its waiters -- so those answers join a worklist instead of
        recursing.
        """
        work = [decision]
        while work:
            decision = work.pop()
            for closing in decision.close:
                log_closing(self._core, self._options, closing.key, closing.reason)
                self._close_protocol(closing.conn, closing.reason)
            for ticket in decision.wake:
                future = ticket.token
                if isinstance(future, asyncio.Future) and not future.done():
                    future.set_result(None)
                else:
                    # Its task was cancelled before the grant reached it: the
                    # grant goes back, maybe to the next in line.
                    work.append(self._core.abandon(ticket))
        if self._pending_events:
            self._deliver()
        # Whatever path left a connection idle (a release, a grant given
        # back), its keep-alive must be timed.
        if self._expiry_handle is None and self._core.idle:
            self._arm_expiry()

    def _deliver(self) -> None:
        """Hand the core's pending events to the listeners."""
        events = self._pending_events[:]
        self._pending_events.clear()
        for event in events:
            self._dispatch_one(event)

    def _dispatch_one(self, event: PoolEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("Pool listener %r failed on %r", listener, event)

    def _limit_for(self, key: Hashable) -> int | None:
        """The per-host limit of a ``ConnectionKey``."""
        return self._host_limit(pool_key_of(key))

    def _host_limit(self, key: PoolKey) -> int | None:
        """A host's limit: its most specific override, else ``limit_per_host``."""
        found = self._host_limits.lookup(*key)
        return self._pool_limit_per_host if found is None else found[1]

    def _apply_host_limits(self, host: str) -> None:
        self._carry_out(
            self._core.refresh_limits(lambda key: getattr(key, "host", None) == host)
        )

    def _situation(self, key: Hashable) -> str:
        return describe_wait(
            self._core, self._host_limits, self._pool_limit_per_host, key
        )

    def _close_protocol(self, proto: Any, reason: str, *, abort: bool = False) -> None:
        """Close a connection the core let go.

        After an error or a cancellation the socket may still hold unsent
        bytes (a request body the server stopped reading): a graceful close
        would wait for them, keeping a socket the pool no longer counts, so
        it is aborted. ``abort`` asks the same for TLS (``abort_ssl``).
        """
        transport = proto.transport
        is_tls = (
            transport is not None and transport.get_extra_info("sslcontext") is not None
        )
        if reason in _ABORT_REASONS or (abort and is_tls):
            _compat.abort(proto)
        else:
            proto.close()
        if is_tls and not self._cleanup_closed_disabled:
            self._cleanup_closed_transports.append(transport)

    def _arm_expiry(self) -> None:
        when = self._core.next_expiry()
        if when is None or self._core.closed:
            return
        if (
            self._keepalive_timeout
            and self._keepalive_timeout >= self._timeout_ceil_threshold
        ):
            when = math.ceil(when)  # batch expiries, as aiohttp's timer does
        self._expiry_handle = self._loop.call_at(when, _run_expiry, weakref.ref(self))

    def _expire_idle(self) -> None:
        self._expiry_handle = None
        self._carry_out(self._core.expire())
        self._arm_expiry()
