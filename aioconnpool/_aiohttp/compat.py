"""Everything that depends on aiohttp's private internals, in one place.

aiohttp 3.11 to 3.14 agree on the hooks used here (``_release``, ``_factory``,
``ResponseHandler._payload``...); where they differ, the difference is
isolated below, found by looking at aiohttp's classes rather than at its
version number. The same detection already covers the shapes of aiohttp's
3.15 branch and of master (4.0), read from their sources (the table in
``docs/compatibility.md``): 4.0's ``_close`` renamed ``_close_immediately``
(``CLOSE_HOOK``), ``close()`` a coroutine in ``BaseConnector`` too,
``proxy_auth`` gone from ``ConnectionKey``, the keep-alive sentinel kept
with ``force_close`` (``keepalive_seconds``).

Importing fails loudly, naming the aiohttp version: with a version outside
``SUPPORTED_RANGE`` (unless ``AIOCONNPOOL_ALLOW_AIOHTTP`` names that exact
version: the manual check against an aiohttp source tree,
``peer/against_source.py``), or with an aiohttp that lacks a hook the
connector needs (``missing_hooks``), rather than with an ``AttributeError``
in the middle of a request.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from typing import Any, NamedTuple

import aiohttp
from aiohttp import client_reqrep
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import BaseConnector, Connection, TCPConnector
from aiohttp.streams import StreamReader

__all__ = [
    "AIOHTTP_VERSION",
    "ALLOW_ENV",
    "CLOSE_HOOK",
    "CLOSE_IS_COROUTINE",
    "HAS_CLIENT_MIDDLEWARES",
    "KEY_HAS_PROXY_AUTH",
    "KEY_LACKS_SERVER_HOSTNAME",
    "PAYLOAD_ATTR",
    "SHOULD_CLOSE_ATTR",
    "SUPPORTED_RANGE",
    "HostnameKey",
    "abort",
    "caller_stop_marker",
    "check_aiohttp_version",
    "check_factory",
    "check_response_hook",
    "close_hook_of",
    "fail_unread_body",
    "forget_finished_body",
    "forget_parser",
    "keepalive_seconds",
    "missing_hooks",
    "read_to_end",
    "response_status",
    "settle_at_eof",
    "update_proxy_headers",
    "with_connect_timeout",
    "with_server_hostname",
]

SUPPORTED_RANGE = ((3, 11), (3, 14))
"""The aiohttp minor versions supported, first and last (inclusive)."""


def _parse(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ImportError(f"aioconnpool cannot read the aiohttp version {version!r}")
    return int(match.group(1)), int(match.group(2))


ALLOW_ENV = "AIOCONNPOOL_ALLOW_AIOHTTP"
"""An environment variable naming one aiohttp version, exactly, to accept
outside ``SUPPORTED_RANGE``: for trying an unreleased aiohttp built from
source (``peer/against_source.py``). It names a version rather than saying
"yes" so that it cannot, left set, wave through the next release too."""


def check_aiohttp_version(version: str, allow: str | None = None) -> tuple[int, int]:
    """Raise ``ImportError`` naming the supported range if ``version`` is
    outside it, unless ``allow`` (``AIOCONNPOOL_ALLOW_AIOHTTP``) is that very
    version."""
    parsed = _parse(version)
    low, high = SUPPORTED_RANGE
    if not low <= parsed <= high and allow != version:
        raise ImportError(
            f"aioconnpool supports aiohttp {low[0]}.{low[1]} to {high[0]}.{high[1]}; "
            f"aiohttp {version} is installed (to try it anyway, set {ALLOW_ENV}="
            f"{version})"
        )
    return parsed


AIOHTTP_VERSION = check_aiohttp_version(aiohttp.__version__, os.environ.get(ALLOW_ENV))


def close_hook_of(connector_class: type) -> str | None:
    """The name of aiohttp's synchronous close step, which ``close()`` and
    ``__del__`` call and ``PoolConnector`` extends: ``_close`` in 3.x,
    ``_close_immediately`` on master (4.0); ``None`` if it has neither."""
    for name in ("_close_immediately", "_close"):
        if callable(getattr(connector_class, name, None)):
            return name
    return None


CLOSE_HOOK: str = close_hook_of(BaseConnector) or "_close"
"""aiohttp's synchronous close step (see ``close_hook_of``); checked present
by ``missing_hooks`` below."""


_KEY_FIELDS = ("host", "port", "is_ssl")
"""The ``ConnectionKey`` fields the pool reads, by position: its first three
(``pool_key_of``; the core keeps a drained host's key as a plain tuple)."""

_CONNECTION_SLOTS = ("_key", "_connector", "_loop", "_protocol", "_callbacks")
_STREAM_SLOTS = ("_exception", "_eof", "_waiter", "_eof_waiter")
"""Instance attributes read or written here and in the glue, checked where
the class declares ``__slots__`` (``StreamReader`` from 3.12, ``Connection``
on master): a class without slots cannot be checked before an instance
exists."""


def missing_hooks(
    *,
    connector: type,
    connection: type,
    protocol: type,
    stream: type,
    key: type,
    reqrep: object,
) -> list[str]:
    """What the connector needs from aiohttp and these classes lack, one
    line each (empty: all there). Called at import with aiohttp's own
    classes; the tests feed it small fakes of other shapes."""
    problems: list[str] = []
    if close_hook_of(connector) is None:
        problems.append(
            f"{connector.__name__} has neither _close_immediately() (4.0) nor "
            "_close() (3.x), the close step PoolConnector extends"
        )
    for name in ("connect", "_release", "_create_connection"):
        if not callable(getattr(connector, name, None)):
            problems.append(f"{connector.__name__}.{name}() is gone")
    for name in ("release", "close", "_notify_release"):
        if not callable(getattr(connection, name, None)):
            problems.append(f"{connection.__name__}.{name}() is gone")
    for name in ("should_close", "upgraded", "is_connected"):
        if getattr(protocol, name, None) is None:
            problems.append(f"{protocol.__name__}.{name} is gone")
    fields = getattr(key, "_fields", ())
    for position, name in enumerate(_KEY_FIELDS):
        if name not in fields:
            problems.append(f"{key.__name__} has no field {name!r}")
        elif fields.index(name) != position:
            problems.append(
                f"{key.__name__}.{name} is field {fields.index(name)}, not {position}"
            )
    for cls, wanted in ((connection, _CONNECTION_SLOTS), (stream, _STREAM_SLOTS)):
        slots = _declared_slots(cls)
        if slots is None:
            continue
        for name in wanted:
            if name not in slots:
                problems.append(f"{cls.__name__} no longer has {name}")
    if getattr(reqrep, "_CONNECTION_CLOSED_EXCEPTION", None) is None:
        problems.append(
            "client_reqrep._CONNECTION_CLOSED_EXCEPTION is gone (it tells a "
            "caller's early release() from a stream error)"
        )
    return problems


def _declared_slots(cls: type) -> set[str] | None:
    """Every slot declared along ``cls``'s MRO, or ``None`` if some class
    on it has a ``__dict__`` (attributes cannot be checked statically)."""
    slots: set[str] = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        declared = klass.__dict__.get("__slots__")
        if declared is None:
            return None
        slots.update([declared] if isinstance(declared, str) else declared)
    return slots


def _check_hooks() -> None:
    problems = missing_hooks(
        connector=TCPConnector,
        connection=Connection,
        protocol=ResponseHandler,
        stream=StreamReader,
        key=client_reqrep.ConnectionKey,
        reqrep=client_reqrep,
    )
    if problems:
        raise ImportError(
            f"aioconnpool cannot drive aiohttp {aiohttp.__version__}: "
            + "; ".join(problems)
        )


_check_hooks()


def check_factory(connector: object) -> None:
    """After ``TCPConnector.__init__``: the connector must have the protocol
    factory (``_factory``) that ``PoolConnector`` replaces with its own, or
    no connection would be a ``PoolProtocol``."""
    if not callable(getattr(connector, "_factory", None)):
        raise TypeError(
            f"aioconnpool cannot drive aiohttp {aiohttp.__version__}: "
            "TCPConnector.__init__ set no _factory (the protocol factory "
            "PoolConnector replaces)"
        )


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


def settle_at_eof(protocol: Any) -> bool:
    """Whether ``protocol`` came back in the common state: its response read
    to the end with no error, nothing left to parse, its socket open, and the
    body stream not stopped early by the caller. If so, the protocol lets go
    of that finished body stream, as ``forget_finished_body`` does.

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
    if payload is not None:
        if payload.__class__ is StreamReader:  # the body stream: read its field
            if payload._exception is not None:  # (what exception() returns)
                return False
        elif payload.exception() is not None:  # EMPTY_PAYLOAD, a subclass
            return False
    protocol._payload = None  # forget_finished_body, inline: hot path
    return True


def read_to_end(protocol: Any) -> bool:
    """Whether the response on ``protocol`` was read to its end with no error
    and not stopped early by the caller: what ``classify_release`` counts
    ``"eof"`` for an explicit ``release()``, whatever then becomes of the
    connection. Unlike ``settle_at_eof`` it asks nothing of the socket or of
    ``should_close`` (a ``force_close`` request asked the server to close):
    the release path's fast lane with ``force_close``, which closes the
    connection anyway. The body stream's fields are read as ``settle_at_eof``
    reads them (``_exception``, ``_eof``: ``StreamReader``, 3.11 to 3.14).
    """
    if protocol.exception() is not None:
        return False
    payload = protocol._payload
    if payload is None:
        return True
    if payload.__class__ is StreamReader:
        return payload._exception is None and payload._eof
    return payload.exception() is None and payload.is_eof()


def forget_finished_body(protocol: Any) -> None:
    """Let a protocol kept alive go of its last response's body stream.

    aiohttp's ``ResponseHandler`` keeps ``_payload``, the ``StreamReader`` of
    the response it parsed last, until the next response replaces it (3.11
    to 3.14). On an idle connection that keeps the stream alive (3 objects
    the collector tracks) and, when the caller dropped a response without
    reading it, its whole buffered body, for as long as the connection stays
    idle. Called only for a connection kept alive with its body at the end:
    nothing reads the stream through the protocol any more
    (``should_close`` and ``connection_lost`` take ``None`` for "no body",
    the next response sets a new one), and the caller's
    ``ClientResponse.content`` still holds it.
    """
    protocol._payload = None


def forget_parser(protocol: Any) -> None:
    """Let an idle connection's protocol go of its last response's parser.

    aiohttp makes an ``HttpResponseParser`` per request
    (``ResponseHandler.set_response_params``, 3.11 to 3.14) and the protocol
    keeps the last one until the next request replaces it: on an idle
    connection, 6 objects the collector tracks for nothing (a fifth of what
    an idle connection costs it). Called only for a connection that went
    idle with its response parsed to the end (a complete message leaves a
    parser nothing to do at EOF, and ``connection_lost`` skips a missing
    one); bytes arriving while it is idle meet the pool's screen
    (``PoolProtocol``), or, once it is handed to a request, wait in
    ``_tail`` until that request's parser drains them.

    Not called for a connection handed straight to a waiting request, which
    replaces the parser a moment later anyway: dropping it there too made
    the queued sweep's young collections 8-16% more frequent (N=1,000 to
    50,000, ``gc.callbacks``) and its instructions per request 7% higher
    (``bench/instructions.py``), for no object saved.
    """
    protocol._parser = None


KEY_HAS_PROXY_AUTH = "proxy_auth" in client_reqrep.ConnectionKey._fields
"""aiohttp 3.x keys a pool by ``proxy_auth`` (a ``BasicAuth``, password
included); master (4.0) drops the field and turns the credentials into a
``Proxy-Authorization`` header, which ``proxy_headers_hash`` covers. Either
way, requests with different proxy credentials never share a connection;
the pool reads neither field (``pool_key_of`` takes host, port, is_ssl)."""


KEY_LACKS_SERVER_HOSTNAME = "server_hostname" not in client_reqrep.ConnectionKey._fields
"""aiohttp before 3.14 leaves ``server_hostname`` out of ``ConnectionKey``:
a socket whose certificate was checked for one name would then be reused for
a request that asked for another, unchecked."""


class HostnameKey(NamedTuple):
    """The pool key of a request with ``server_hostname`` on aiohttp < 3.14:
    its ``ConnectionKey`` plus that name, so such requests never share. Host,
    port and is_ssl come first, as in ``ConnectionKey``: the pool reads them
    by position (``pool_key_of``), also from the plain tuple the core keeps
    of a drained key."""

    host: str
    port: int
    is_ssl: bool
    connection_key: Any
    server_hostname: str


def with_server_hostname(key: Any, req: Any) -> Any:
    """``key``, made distinct per ``server_hostname`` where aiohttp's is not."""
    name = req.server_hostname
    if name is None:
        return key
    return HostnameKey(key.host, key.port, key.is_ssl, key, name)


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


CLOSE_IS_COROUTINE: bool = inspect.iscoroutinefunction(TCPConnector.close)
"""aiohttp >= 3.12: ``TCPConnector.close()`` (the one a ``PoolConnector``
inherits) is a coroutine that awaits what the close step (``CLOSE_HOOK``)
returns; on master (4.0) ``BaseConnector.close()`` is one too. 3.11:
``close()`` calls ``_close()``, which returns nothing, and returns an
awaitable of nothing, so what the pool must wait for at close needs its own
way (``FleetGatedConnector.close``). Read on ``TCPConnector``, not
``BaseConnector``, whose ``close()`` is a plain function returning an
awaitable in 3.11 to 3.15."""


def keepalive_seconds(force_close: bool, value: object) -> float | None:
    """The keep-alive timeout a connector's idle connections get, from its
    ``_keepalive_timeout``: ``None`` for none at all. With ``force_close``
    nothing is kept alive whatever the field holds (``None`` in 3.11 to
    3.14, aiohttp's own ``sentinel`` object on the 3.15 branch and master);
    ``None`` without ``force_close`` (3.14.5) means idle connections never
    expire."""
    if force_close or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def response_status(item: Any) -> int | None:
    """The status code of what aiohttp's ``ResponseHandler.data_received``
    hands to ``feed_data`` once a response's headers are parsed: a
    ``(RawResponseMessage, StreamReader)`` pair in 3.11 to 3.14, the
    message's ``code`` its status. ``None`` for anything else. Read only by
    the adaptive limits' protocol (``_aiohttp/adaptive.py``)."""
    try:
        code = item[0].code
    except (TypeError, IndexError, AttributeError):
        return None
    return code if isinstance(code, int) else None


def check_response_hook(protocol: type = ResponseHandler) -> None:
    """Adaptive limits see each response's status through ``feed_data``
    (``DataQueue.feed_data(data, size=0)`` in 3.11 to 3.14, called by
    ``ResponseHandler.data_received`` once per parsed response); raise
    ``TypeError`` naming the aiohttp version if it is gone."""
    if not callable(getattr(protocol, "feed_data", None)):
        raise TypeError(
            f"adaptive limits cannot run on aiohttp {aiohttp.__version__}: "
            f"{protocol.__name__}.feed_data() is gone (where response "
            "statuses are seen)"
        )
