"""Acquisition: how a request gets its connection.

aiohttp calls ``connect()``; one core call (``PoolCore.acquire``) serves the
request by an idle connection at once (the keep-alive hot path, no ticket),
or gives it a ticket: granted at once, refused (``block=False``), or queued
until a release grants it (with ``acquire_timeout``). A grant is an
idle connection to hand over (checked again if it waited a loop turn) or a
permit to open a new one (``_open``, with ``TCPConnector``'s own DNS, TLS and
proxy code). Whatever fails or is cancelled on the way gives its ticket back,
so the core never loses a slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection
from aiohttp.helpers import ceil_timeout

from .._core import CLOSED, NOTHING, QUEUED, REJECTED, Ticket
from .._errors import PoolClosedError, PoolFullError, PoolTimeoutError
from .._keys import pool_key_of
from . import compat as _compat
from .carry_out import DecisionRunner
from .protocol import PoolProtocol
from .release_paths import PoolConnection
from .reporting import LOG_LEVELS, describe_wait

if TYPE_CHECKING:
    from aiohttp.client import ClientTimeout
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace

log = logging.getLogger("aioconnpool")

__all__ = ["Acquiring"]


# Never changed: stands for traces=None.
_NO_TRACES: list[Trace] = []


def _how_failed(exc: BaseException) -> str:
    return "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"


# Reasons after which unsent bytes may still sit in the socket.


def _being_cancelled() -> bool:
    """Whether someone asked to cancel the current task (Python 3.11+;
    on older versions, assume so: the CancelledError is left alone)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


class Acquiring(DecisionRunner):
    """``connect()`` and the ways to a connection (see the module docstring)."""

    # What ``connect()`` returns: a class attribute, read without a call, so
    # that a connector with a fleet can return connections that give their
    # fleet slot back (``fleet_gate.FleetConnection``).
    _connection_class: type[PoolConnection] = PoolConnection

    async def connect(
        self, req: ClientRequest, traces: list[Trace] | None, timeout: ClientTimeout
    ) -> Connection:
        """Get a connection for ``req``: reuse, wait for a slot, or open one.
        ``traces`` may be ``None``, as with aiohttp's own connectors.

        One coroutine per request, whatever the path: the keep-alive reuse,
        a grant at once and the wait in the queue all end in the same few
        lines at the bottom, and the wait awaits its future here rather than
        in a coroutine of its own.
        """
        key = req.connection_key  # a property that builds a new tuple: once
        if traces is None:  # aiohttp's connectors accept it (`if traces:`)
            traces = _NO_TRACES
        if _compat.KEY_LACKS_SERVER_HOSTNAME:
            key = _compat.with_server_hostname(key, req)
        # One core call: an idle connection at once with no ticket (the
        # keep-alive hot path; reuse traces go through a ticket, as they may
        # raise), else a ticket granted, queued or refused.
        proto: Any
        # (Positional: a compiled core parses keywords at a cost.)
        proto, ticket, decision = self._core.acquire(
            key, self._options.block, not traces
        )
        if decision is not NOTHING or self._pending_events:
            self._carry_out(decision)
        if ticket is not None:
            proto = ticket.conn
            if proto is None:
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
                        # The wait for a grant (bounded by acquire_timeout),
                        # inline: no coroutine of its own per queued request.
                        future = self._loop.create_future()
                        ticket.token = future
                        timer = None
                        limit = self._options.acquire_timeout
                        if limit is not None:
                            timer = self._loop.call_at(
                                ticket.since + limit,
                                self._wait_timed_out,
                                ticket,
                                limit,
                            )
                        try:
                            for trace in traces:
                                await trace.send_connection_queued_start()
                            await future
                            for trace in traces:
                                await trace.send_connection_queued_end()
                        except BaseException as exc:
                            how = _how_failed(exc)
                            self._carry_out(self._core.abandon(ticket, how))
                            raise
                        finally:
                            if timer is not None:
                                timer.cancel()
                        if ticket.state == CLOSED:
                            raise PoolClosedError("Connector is closed.")
                        proto = ticket.conn
                        if proto is not None:
                            # Granted a loop turn ago: the server may have
                            # closed it or written to it since (aiohttp's own
                            # connector checks is_connected() after waking).
                            # An acquired connection's reads are not screened
                            # the way an idle one's are.
                            if not proto.is_connected():
                                lost = self._core.grant_lost(ticket, "server")
                                self._carry_out(lost)
                                proto = ticket.conn
                            elif proto.should_close:
                                lost = self._core.grant_lost(ticket, "error")
                                self._carry_out(lost)
                                proto = ticket.conn
                        if proto is not None:
                            if traces:
                                await self._send_reuse_traces(ticket, traces)
                            if not self._core.handed_over(ticket):
                                # The pool closed while this task was on its
                                # way here.
                                raise PoolClosedError("Connector is closed.")
                    if proto is None:
                        proto = await self._open(ticket, req, traces, timeout)
                        if self._leaks is not None:
                            self._leaks.acquired(proto, pool_key_of(key))
                        return self._connection_class(self, key, proto, self._loop)
            else:  # granted an idle connection at once
                if traces:
                    await self._send_reuse_traces(ticket, traces)
                if not self._core.handed_over(ticket):
                    raise PoolClosedError("Connector is closed.")
        # An idle connection the request now holds: its reads go straight to
        # aiohttp's parser again (PoolProtocol).
        proto.data_received = proto.direct_reads
        try:  # log.isEnabledFor(DEBUG), without a call (LOG_LEVELS)
            debug = LOG_LEVELS[logging.DEBUG] and not log.disabled
        except KeyError:
            debug = log.isEnabledFor(logging.DEBUG)
        if debug:
            log.debug("Reusing connection to %s", pool_key_of(key))
        if self._leaks is not None:
            self._leaks.acquired(proto, pool_key_of(key))
        if req.proxy is not None:
            _compat.update_proxy_headers(self, req)
        return self._connection_class(self, key, proto, self._loop)

    async def _send_reuse_traces(self, ticket: Ticket, traces: list[Trace]) -> None:
        """Send the reuse traces of the idle connection granted to ``ticket``
        before its request takes it."""
        try:
            for trace in traces:
                await trace.send_connection_reuseconn()
        except BaseException as exc:
            # aiohttp forgets the socket here; we put it back in the pool.
            self._carry_out(self._core.abandon(ticket, _how_failed(exc)))
            raise

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
        try:  # log.isEnabledFor(DEBUG), without a call (LOG_LEVELS)
            debug = LOG_LEVELS[logging.DEBUG] and not log.disabled
        except KeyError:
            debug = log.isEnabledFor(logging.DEBUG)
        if debug:
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
        if decision is not NOTHING or self._pending_events:
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

    def _situation(self, key: Hashable) -> str:
        return describe_wait(
            self._core, self._host_limits, self._pool_limit_per_host, key
        )
