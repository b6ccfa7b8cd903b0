"""Name how an acquisition ended, from what aiohttp leaves on the protocol.

aiohttp gives every connection back through one call, ``_release(key, proto,
should_close=...)``, whatever happened: the body reached its end, the caller
released or closed the response early, aiohttp cleaned up after an error or a
cancellation. What distinguishes them is the state left behind:

* the body stream (``payload``) is at EOF with no exception: ``"eof"``;
* ``release()`` before the end leaves the caller's marker exception on the
  stream, and the unread bytes force a close: ``"release"`` / ``"unread"``;
* a ``close()`` made while an exception is being handled is aiohttp's own
  cleanup (``"cancelled"`` for ``CancelledError``, else ``"error"``), as is
  any close or release of a stream that carries a real error;
* any other ``close()`` is the caller's: ``"close"`` / ``"caller"``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection

from .._core import NOTHING, Decision
from .._core.records import IDLE
from .carry_out import DecisionRunner
from .compat import (
    PAYLOAD_ATTR,
    SHOULD_CLOSE_ATTR,
    caller_stop_marker,
    forget_finished_body,
    forget_parser,
    read_to_end,
    settle_at_eof,
)
from .protocol import PoolProtocol

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ConnectionKey

__all__ = ["PoolConnection", "Releasing", "classify_release"]


def classify_release(
    protocol: Any, *, closing: bool, force_close: bool, explicit: bool
) -> tuple[str, str | None]:
    """Return ``(how, close_reason)``; ``close_reason`` is None to keep alive.

    ``closing`` is true for ``Connection.close()``; ``explicit`` is false when
    aiohttp released the connection from a garbage-collected ``Connection``.
    """
    if not explicit:
        return "gc", "gc"
    payload = getattr(protocol, PAYLOAD_ATTR, None)
    if (
        not closing
        and not force_close
        and not protocol.should_close
        and protocol.is_connected()
        and (payload is None or payload.exception() is None)
    ):
        # The common case first, in three calls: ``should_close`` is false
        # only with the body at its end, no error, no upgrade and nothing
        # left unparsed (the same in aiohttp 3.11 to 3.14), so the checks
        # below would all pass.
        return "eof", None
    stream_error = payload.exception() if payload is not None else None
    failed = protocol.exception() is not None or (
        stream_error is not None and stream_error is not caller_stop_marker
    )
    if closing:
        in_flight = sys.exc_info()[1]
        if isinstance(in_flight, asyncio.CancelledError):
            return "cancelled", "cancelled"
        if in_flight is not None or failed:
            return "error", "error"
        if protocol.upgraded:
            return "close", "upgraded"
        return "close", "caller"
    if failed:
        return "error", "error"
    if payload is not None and not payload.is_eof():
        return "release", "unread"
    if stream_error is caller_stop_marker:
        # Released early by the caller, then the stream ended: bytes may still
        # sit unread in the buffer, so the connection cannot be reused safely.
        return "release", "unread"
    if force_close:
        return "eof", "force_close"
    if not protocol.is_connected() or getattr(protocol, SHOULD_CLOSE_ATTR, False):
        return "eof", "server"
    if protocol.upgraded:
        return "eof", "upgraded"
    if protocol.should_close:
        return "eof", "error"  # trailing bytes after the response
    return "eof", None


class PoolConnection(Connection):
    """aiohttp's ``Connection``, telling the pool it was released on purpose.

    A connection that is garbage-collected unreleased still reaches the pool
    through aiohttp's ``Connection.__del__``; the flag lets the pool count
    that as a leak (``"gc"``) instead of a close.

    ``release()`` is the release path's fast lane: a response read to the end
    (``compat.settle_at_eof``) is counted ``"eof"`` and kept alive in one
    step, straight to the core, or with ``force_close`` (``compat.read_to_end``)
    counted ``"eof"`` and closed; anything else goes through
    ``classify_release``.
    Release callbacks are run, as aiohttp's ``Connection`` does, when there
    are any.
    """

    def release(self) -> None:
        if self._callbacks:
            self._notify_release()
        protocol = self._protocol
        if protocol is None:
            return
        connector: Releasing = self._connector  # type: ignore[assignment]
        # Idle from now on, maybe: reads pass the screen, the class's own
        # reader, once the request's is gone (PoolProtocol). No
        # contextlib.suppress: every release passes here, and it costs calls.
        try:  # noqa: SIM105
            del protocol.data_received
        except AttributeError:  # no reader of its own: not a PoolProtocol
            pass
        if connector._leaks is not None:
            connector._pool_release(protocol, closing=False, explicit=True)
        elif connector._force_close:
            if read_to_end(protocol):
                # Every connection closes after its request: classify_release's
                # answer for a response read to the end, ("eof",
                # "force_close"), without its checks. Every request of a crawl
                # that closes its connections passes here. (The protocol keeps
                # the core's record, as below.)
                record = protocol._aioconnpool_record  # type: ignore[attr-defined]
                decision = connector._core.release(
                    protocol, "eof", "force_close", True, record
                )
                connector._release_decided(protocol, decision, "force_close")
            else:
                connector._pool_release(protocol, closing=False, explicit=True)
        elif settle_at_eof(protocol):
            # alive: settle_at_eof has just checked the socket. The protocol
            # keeps the core's record of it (PoolProtocol.track): no lookup.
            # Positional (alive, record): a compiled core parses keywords at
            # a cost.
            record = protocol._aioconnpool_record  # type: ignore[attr-defined]
            decision = connector._core.release(protocol, "eof", None, True, record)
            if record is not None and record.state == IDLE:
                forget_parser(protocol)  # kept idle, not handed on (see there)
            if decision is NOTHING:  # kept idle, nobody to wake
                if connector._pending_events or connector._expiry_handle is None:
                    connector._release_decided(protocol, decision, None)
            elif decision is not None:  # handed to a waiter, say
                connector._carry_out(decision)
            else:  # closed with the connector meanwhile
                protocol.close()
        else:
            connector._pool_release(protocol, closing=False, explicit=True)
        self._protocol = None

    def close(self) -> None:
        if self._callbacks:
            self._notify_release()
        protocol = self._protocol
        if protocol is not None:
            connector: Releasing = self._connector  # type: ignore[assignment]
            connector._pool_release(protocol, closing=True, explicit=True)
            self._protocol = None


class Releasing(DecisionRunner):
    """How a connection comes back from aiohttp (see the module docstring)."""

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

    def _pool_release(
        self, protocol: ResponseHandler, *, closing: bool, explicit: bool
    ) -> None:
        """A connection comes back from aiohttp; let the core decide its fate."""
        if isinstance(protocol, PoolProtocol):  # idle from now on, maybe
            try:  # noqa: SIM105 (as in PoolConnection.release)
                del protocol.data_received
            except AttributeError:  # already screened (released twice)
                pass
        how, reason = classify_release(
            protocol, closing=closing, force_close=self._force_close, explicit=explicit
        )
        if reason is None:  # kept alive, its body at the end: as the fast lane
            forget_finished_body(protocol)
        if self._leaks is not None:
            self._leaks.released(protocol)
        # alive: classify_release keeps a connection alive only after checking
        # its socket.
        decision = self._core.release(protocol, how, reason, alive=True)
        if reason is None and self._core.is_idle(protocol):  # as the fast lane
            forget_parser(protocol)
        self._release_decided(protocol, decision, reason)

    def _release_decided(
        self, protocol: ResponseHandler, decision: Decision | None, reason: str | None
    ) -> None:
        """Act on the core's answer to a release (kept alive: ``reason`` None)."""
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
