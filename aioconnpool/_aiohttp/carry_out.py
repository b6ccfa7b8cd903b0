"""Carrying out the core's decisions: wake the granted, close the let go,
time keep-alive, tell the listeners.

Every event the connector reports to the core (``aioconnpool._core``) returns
a :class:`~aioconnpool._core.Decision`; :meth:`DecisionRunner._carry_out` is
the one place that acts on it. It is the base of the connector's parts
(``acquire``, ``release_paths``, ``connector``) and declares the state they
share, all of it set up by ``PoolConnector.__init__``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections.abc import Callable, Hashable, Sized
from typing import Any

from aiohttp import TCPConnector

from .._core import Decision, PoolCore
from .._core.host_limits import HostLimits
from .._events import PoolEvent
from .._keys import PoolKey
from . import compat as _compat
from .leaks import LeakDetector
from .options import PoolOptions
from .reporting import LOG_LEVELS, log_closing

log = logging.getLogger("aioconnpool")

__all__ = ["DecisionRunner"]

# Reasons after which unsent bytes may still sit in the socket.
_ABORT_REASONS = frozenset({"error", "cancelled"})


def _run_expiry(ref: weakref.ref[DecisionRunner]) -> None:
    connector = ref()
    if connector is not None:
        connector._expire_idle()


class DecisionRunner(TCPConnector):
    """A ``TCPConnector`` that carries out the core's decisions."""

    _core: PoolCore[Hashable, Hashable, PoolKey]
    _options: PoolOptions
    _host_limits: HostLimits
    _pool_limit_per_host: int | None
    # Seconds an idle connection is kept (compat.keepalive_seconds), None for
    # no timer: aiohttp's _keepalive_timeout holds None or a sentinel then.
    _pool_keepalive: float | None
    _expiry_handle: asyncio.TimerHandle | None
    _listeners: list[Callable[[PoolEvent], object]]
    _pending_events: list[PoolEvent]
    _leaks: LeakDetector | None
    # The core's idle connections (PoolCore.idle_connections()), for an
    # emptiness test without a call on every decision carried out.
    _idle_conns: Sized

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
            if decision.close:
                # log_closing logs at INFO, but always checks pool_full
                # (a WARNING); the INFO check without a call (LOG_LEVELS),
                # once per decision.
                try:
                    info = LOG_LEVELS[logging.INFO] and not log.disabled
                except KeyError:
                    info = log.isEnabledFor(logging.INFO)
                for closing in decision.close:
                    reason = closing.reason
                    if info or reason == "pool_full":
                        log_closing(self._core, self._options, closing.key, reason)
                    self._close_protocol(closing.conn, reason)
            for ticket in decision.wake:
                # A woken ticket was queued, so connect() gave it its future
                # (``None`` only if something woke it before that).
                future: Any = ticket.token
                if future is not None and not future.done():
                    future.set_result(None)
                else:
                    # Its task was cancelled before the grant reached it: the
                    # grant goes back, maybe to the next in line.
                    work.append(self._core.abandon(ticket))
        if self._pending_events:
            self._deliver()
        # Whatever path left a connection idle (a release, a grant given
        # back), its keep-alive must be timed.
        if self._expiry_handle is None and self._idle_conns:
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
        keepalive = self._pool_keepalive
        if keepalive and keepalive >= self._timeout_ceil_threshold:
            when = math.ceil(when)  # batch expiries, as aiohttp's timer does
        self._expiry_handle = self._loop.call_at(when, _run_expiry, weakref.ref(self))

    def _expire_idle(self) -> None:
        self._expiry_handle = None
        self._carry_out(self._core.expire())
        # _carry_out has armed the next timer if connections are still idle:
        # a second one here would replace its handle, leaving a timer nobody
        # cancels, and every round would double them.
        if self._expiry_handle is None:
            self._arm_expiry()
