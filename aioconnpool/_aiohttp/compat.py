"""Everything that depends on aiohttp's private internals, in one place.

aiohttp 3.11 to 3.14 agree on the hooks used here (``_release``, ``_factory``,
``ResponseHandler._payload``...); where they differ, the difference is
isolated below. Importing with an unsupported aiohttp fails loudly.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any, NamedTuple

import aiohttp
from aiohttp import client_reqrep
from aiohttp.connector import BaseConnector
from aiohttp.streams import StreamReader

__all__ = [
    "AIOHTTP_VERSION",
    "HAS_CLIENT_MIDDLEWARES",
    "KEY_LACKS_SERVER_HOSTNAME",
    "PAYLOAD_ATTR",
    "SHOULD_CLOSE_ATTR",
    "SUPPORTED_RANGE",
    "HostnameKey",
    "abort",
    "caller_stop_marker",
    "check_aiohttp_version",
    "ended_at_eof",
    "fail_unread_body",
    "update_proxy_headers",
    "with_server_hostname",
]

SUPPORTED_RANGE = ((3, 11), (3, 14))
"""The aiohttp minor versions supported, first and last (inclusive)."""


def _parse(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ImportError(f"aioconnpool cannot read the aiohttp version {version!r}")
    return int(match.group(1)), int(match.group(2))


def check_aiohttp_version(version: str) -> tuple[int, int]:
    """Raise ``ImportError`` naming the supported range if ``version`` is outside it."""
    parsed = _parse(version)
    low, high = SUPPORTED_RANGE
    if not low <= parsed <= high:
        raise ImportError(
            f"aioconnpool supports aiohttp {low[0]}.{low[1]} to {high[0]}.{high[1]}; "
            f"aiohttp {version} is installed"
        )
    return parsed


AIOHTTP_VERSION = check_aiohttp_version(aiohttp.__version__)

HAS_CLIENT_MIDDLEWARES = AIOHTTP_VERSION >= (3, 12)
"""``ClientSession(middlewares=...)`` exists (aiohttp 3.12 and later)."""

# ``ClientResponse.release()`` and ``.close()`` mark the body stream with this
# exception object before giving the connection back: seeing it tells "the
# caller stopped reading" apart from a real error on the stream.
caller_stop_marker: object = getattr(
    client_reqrep, "_CONNECTION_CLOSED_EXCEPTION", None
)


PAYLOAD_ATTR = "_payload"
"""The attribute of ``ResponseHandler`` holding the current body stream."""


SHOULD_CLOSE_ATTR = "_should_close"
"""The attribute of ``ResponseHandler`` set when the response said
``Connection: close`` (or was HTTP/1.0 without keep-alive)."""


def ended_at_eof(protocol: Any) -> bool:
    """Whether ``protocol`` came back in the common state: its response read
    to the end with no error, nothing left to parse, its socket open, and the
    body stream not stopped early by the caller.

    ``should_close`` is false only with the body at its end, no error, no
    upgrade and nothing left unparsed (the same in aiohttp 3.11 to 3.14);
    ``ResponseHandler.is_connected()`` and ``StreamReader.exception()`` are
    read inline (``_exception``, set in ``StreamReader.__init__`` in 3.11 to
    3.14; ``EmptyStreamReader`` does not set it and is asked instead). The
    release path's fast lane: when this is true, ``classify_release`` would
    answer ``("eof", None)`` for an explicit ``release()`` without
    ``force_close``.
    """
    if protocol.should_close:
        return False
    transport = protocol.transport
    if transport is None or transport.is_closing():
        return False
    payload = protocol._payload
    if payload is None:
        return True
    if payload.__class__ is StreamReader:  # the body stream: read its field
        return payload._exception is None  # (StreamReader.exception() returns it)
    return payload.exception() is None  # EMPTY_PAYLOAD, a subclass


KEY_LACKS_SERVER_HOSTNAME = "server_hostname" not in client_reqrep.ConnectionKey._fields
"""aiohttp before 3.14 leaves ``server_hostname`` out of ``ConnectionKey``:
a socket whose certificate was checked for one name would then be reused for
a request that asked for another, unchecked."""


class HostnameKey(NamedTuple):
    """The pool key of a request with ``server_hostname`` on aiohttp < 3.14:
    its ``ConnectionKey`` plus that name, so such requests never share."""

    connection_key: Any
    server_hostname: str

    @property
    def host(self) -> str:
        return str(self.connection_key.host)

    @property
    def port(self) -> int:
        return int(self.connection_key.port)

    @property
    def is_ssl(self) -> bool:
        return bool(self.connection_key.is_ssl)


def with_server_hostname(key: Any, req: Any) -> Any:
    """``key``, made distinct per ``server_hostname`` where aiohttp's is not."""
    name = req.server_hostname
    return key if name is None else HostnameKey(key, name)


def abort(protocol: Any) -> None:
    """Close ``protocol``'s socket at once, dropping unsent bytes.

    ``ResponseHandler.abort()`` only exists from aiohttp 3.12 on.
    """
    method = getattr(protocol, "abort", None)
    if method is not None:
        method()
        return
    transport = protocol.transport
    if transport is not None:
        transport.abort()
    protocol.close()


def fail_unread_body(protocol: Any, error: BaseException) -> None:
    """Fail the body stream a reader is waiting on, before closing.

    aiohttp's ``ResponseHandler.close()`` drops ``_payload`` before
    ``connection_lost`` could fail it, so a task waiting in ``read()`` (or
    ``wait_eof()``) on a connection closed with the connector would wait
    forever. Only a stream with a waiting reader is failed (its
    ``_waiter`` / ``_eof_waiter`` future, set by ``StreamReader._wait()`` and
    ``wait_eof()`` in 3.11 to 3.14): a body nobody is reading is left as
    aiohttp leaves it, so that reading it later raises aiohttp's own
    ``RuntimeError("Connection closed.")`` once the buffered bytes are used
    up (issue 18).
    """
    payload = getattr(protocol, PAYLOAD_ATTR, None)
    if payload is None or payload.is_eof() or payload.exception() is not None:
        return
    waiting = getattr(payload, "_waiter", None) or getattr(payload, "_eof_waiter", None)
    if waiting is not None:
        payload.set_exception(error)


def update_proxy_headers(connector: Any, req: Any) -> None:
    """Re-apply proxy credentials to a request served by a reused connection.

    aiohttp 3.13+ does this in ``connect()`` on reuse; older versions set the
    header when building the request, so there is nothing to do.
    """
    if not req.proxy:
        return
    update = getattr(connector, "_update_proxy_auth_header_and_build_proxy_req", None)
    if update is not None:
        update(req)


def with_connect_timeout(timeout: Any, seconds: float) -> Any:
    """``timeout`` (a ``ClientTimeout``) with its ``connect`` part set to
    ``seconds``: attrs-based in aiohttp 3.x (``attr.evolve``); a dataclass
    would take ``dataclasses.replace``."""
    if dataclasses.is_dataclass(timeout):
        return dataclasses.replace(timeout, connect=seconds)  # type: ignore[type-var]
    import attr

    return attr.evolve(timeout, connect=seconds)


CLOSE_IS_COROUTINE: bool = inspect.iscoroutinefunction(BaseConnector.close)
"""aiohttp >= 3.12: ``close()`` is a coroutine that awaits what ``_close()``
returns. 3.11: ``close()`` calls ``_close()`` and returns an awaitable of
nothing, so what the pool must wait for at close needs its own way."""
