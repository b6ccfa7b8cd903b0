"""The compat module's detection of aiohttp's shapes, 3.11 to 4.0 (issue 18).

aiohttp's 3.15 branch and master (4.0) are not on PyPI, so their shapes are
fed to the detection as small fakes, built from what their sources say
(``docs/compatibility.md``, "aiohttp 3.15 and 4.0"). Only the detection is
tested this way; the connector itself is tested against real servers on the
installed aiohttp, and against those branches by ``peer/against_source.py``.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import subprocess
import sys
from collections.abc import Awaitable
from types import SimpleNamespace
from typing import Any, NamedTuple

import aiohttp
import pytest
from aiohttp import client_reqrep
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection, TCPConnector
from aiohttp.helpers import sentinel
from aiohttp.streams import StreamReader
from aiohttp.test_utils import TestServer

from aioconnpool import Closed, PoolConnector, PoolKey
from aioconnpool._aiohttp import compat
from aioconnpool._keys import pool_key_of
from tests.conftest import url

# ------------------------------------------------------------ fakes of 4.0


class Key40(NamedTuple):
    """master's ``ConnectionKey``: no ``proxy_auth``."""

    host: str
    port: int | None
    is_ssl: bool
    ssl: object
    proxy: object
    proxy_headers_hash: int | None
    server_hostname: str | None = None


class Connector40:
    """master's connector: ``close()`` a coroutine, ``_close_immediately``."""

    async def close(self, *, abort_ssl: bool = False) -> None:
        """Await what the close step returns."""

    def _close_immediately(self, *, abort_ssl: bool = False) -> list[object]:
        return []

    async def connect(self, req: object, traces: object, timeout: object) -> None:
        """Get a connection."""

    def _release(self, key: object, protocol: object, *, should_close: bool) -> None:
        """Give a connection back."""

    async def _create_connection(self, *args: object) -> None:
        """Open a connection."""


class Connection40:
    """master's ``Connection``, with ``__slots__``."""

    __slots__ = ("_callbacks", "_connector", "_key", "_loop", "_protocol", "_s")

    def release(self) -> None:
        """Release."""

    def close(self) -> None:
        """Close."""

    def _notify_release(self) -> None:
        """Run the release callbacks."""


class Reqrep40:
    _CONNECTION_CLOSED_EXCEPTION = aiohttp.ClientConnectionError("Connection closed")


SHAPES_40: dict[str, Any] = {
    "connector": Connector40,
    "connection": Connection40,
    "protocol": ResponseHandler,
    "stream": StreamReader,
    "key": Key40,
    "reqrep": Reqrep40,
}


def installed_shapes() -> dict[str, Any]:
    return {
        "connector": TCPConnector,
        "connection": Connection,
        "protocol": ResponseHandler,
        "stream": StreamReader,
        "key": client_reqrep.ConnectionKey,
        "reqrep": client_reqrep,
    }


# ------------------------------------------------------------------ tests


def test_the_installed_aiohttp_has_every_hook() -> None:
    assert compat.missing_hooks(**installed_shapes()) == []


def test_aiohttp_40s_shape_has_every_hook() -> None:
    assert compat.missing_hooks(**SHAPES_40) == []


def test_the_close_step_is_found_under_either_name() -> None:
    assert compat.close_hook_of(Connector40) == "_close_immediately"
    assert compat.close_hook_of(TCPConnector) == compat.CLOSE_HOOK
    # 3.11 to 3.15 call it _close; a class with both (ours) is driven by
    # whichever the installed aiohttp has.
    newer = hasattr(TCPConnector, "_close_immediately")
    assert ("_close_immediately" if newer else "_close") == compat.CLOSE_HOOK

    class Neither:
        pass

    assert compat.close_hook_of(Neither) is None


def test_a_connector_without_a_close_step_is_named() -> None:
    class Connector50(Connector40):
        _close_immediately = None  # type: ignore[assignment]

    problems = compat.missing_hooks(**{**SHAPES_40, "connector": Connector50})
    assert problems == [
        "Connector50 has neither _close_immediately() (4.0) nor _close() (3.x), "
        "the close step PoolConnector extends"
    ]


def test_each_missing_hook_is_named() -> None:
    class Key50(NamedTuple):
        hostname: str
        port: int
        is_ssl: bool

    class Connection50:
        __slots__ = ("_callbacks", "_connector", "_key", "_loop", "_proto")

        def release(self) -> None: ...

        def close(self) -> None: ...

    class Protocol50:
        should_close = False
        upgraded = False

    class Stream50:
        __slots__ = ("_eof_waiter", "_error", "_waiter")

    class Reqrep50:
        pass

    problems = compat.missing_hooks(
        connector=Connector40,
        connection=Connection50,
        protocol=Protocol50,
        stream=Stream50,
        key=Key50,
        reqrep=Reqrep50,
    )
    assert problems == [
        "Connection50._notify_release() is gone",
        "Protocol50.is_connected is gone",
        "Key50 has no field 'host'",
        "Connection50 no longer has _protocol",
        "Stream50 no longer has _exception",
        "Stream50 no longer has _eof",
        "client_reqrep._CONNECTION_CLOSED_EXCEPTION is gone (it tells a "
        "caller's early release() from a stream error)",
    ]


def test_a_key_whose_first_fields_moved_is_refused() -> None:
    # The pool reads host, port and is_ssl by position (a drained host's key
    # is kept as a plain tuple): a ConnectionKey that reorders them must be
    # named at import, not misread.
    class Key51(NamedTuple):
        port: int
        host: str
        is_ssl: bool

    problems = compat.missing_hooks(**{**SHAPES_40, "key": Key51})
    assert problems == ["Key51.host is field 1, not 0", "Key51.port is field 0, not 1"]


def test_a_hostname_key_is_read_by_position_as_its_connection_key() -> None:
    # aiohttp < 3.14: a request's server_hostname makes a key of its own
    # (HostnameKey). The pool reads it by position as a ConnectionKey, also
    # as the plain tuple the core keeps of it once its host drains.
    key = Key40("a.test", 443, True, None, None, None)
    plain_request = SimpleNamespace(server_hostname=None)
    assert compat.with_server_hostname(key, plain_request) is key
    named_request = SimpleNamespace(server_hostname="b.test")
    named = compat.with_server_hostname(key, named_request)
    assert named != key
    assert named.connection_key == key
    expected = PoolKey("a.test", 443, True)
    assert pool_key_of(named) == pool_key_of(tuple(named)) == expected


def test_attributes_of_classes_without_slots_are_not_guessed() -> None:
    class Connection311(Connection40):  # a subclass with a __dict__
        pass

    class Stream311:  # 3.11's StreamReader declares no slots
        pass

    shapes = {**SHAPES_40, "connection": Connection311, "stream": Stream311}
    assert compat.missing_hooks(**shapes) == []


def test_import_fails_naming_the_version_and_what_is_missing() -> None:
    # A fresh interpreter whose aiohttp has lost a hook: importing the
    # connector fails at once, not with an AttributeError in a request.
    script = (
        "import aiohttp.connector as c\n"
        "del c.Connection._notify_release\n"
        "try:\n"
        "    import aioconnpool\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == (
        f"aioconnpool cannot drive aiohttp {aiohttp.__version__}: "
        "Connection._notify_release() is gone"
    )


def test_a_version_outside_the_range_is_let_through_only_by_name() -> None:
    with pytest.raises(ImportError, match=r"set AIOCONNPOOL_ALLOW_AIOHTTP=4\.0\.0a2"):
        compat.check_aiohttp_version("4.0.0a2")
    with pytest.raises(ImportError, match=r"4\.0\.0a2 is installed"):
        compat.check_aiohttp_version("4.0.0a2", allow="4.0.0a1")
    assert compat.check_aiohttp_version("4.0.0a2", allow="4.0.0a2") == (4, 0)


def test_the_allow_variable_reaches_the_import_check() -> None:
    script = (
        "import aiohttp\n"
        "aiohttp.__version__ = '4.0.0a9'\n"
        "from aioconnpool._aiohttp import compat\n"
        "print(compat.AIOHTTP_VERSION)\n"
    )
    env = {"AIOCONNPOOL_ALLOW_AIOHTTP": "4.0.0a9", "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.stdout.strip() == "(4, 0)", done.stderr
    refused = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={},
        check=False,
    )
    assert "aiohttp 4.0.0a9 is installed" in refused.stderr


def test_close_is_a_coroutine_from_312_on() -> None:
    # Read on TCPConnector, whose close() PoolConnector inherits (3.12 to
    # 4.0: async def); BaseConnector.close() stays a plain function
    # returning an awaitable until 4.0.
    coroutine = inspect.iscoroutinefunction(TCPConnector.close)
    assert coroutine is compat.CLOSE_IS_COROUTINE
    assert (compat.AIOHTTP_VERSION >= (3, 12)) is compat.CLOSE_IS_COROUTINE


def test_the_proxy_credentials_field_is_detected() -> None:
    fields = client_reqrep.ConnectionKey._fields
    assert ("proxy_auth" in fields) is compat.KEY_HAS_PROXY_AUTH
    assert "proxy_auth" not in Key40._fields  # the 4.0 shape: nothing to read


@pytest.mark.parametrize(
    ("force_close", "value", "seconds"),
    [
        (False, 15.0, 15.0),
        (False, 30, 30.0),
        (False, 0, 0.0),
        (False, None, None),  # 3.14.5: never expires from idling
        (True, None, None),  # 3.11 to 3.14 with force_close
        (True, sentinel, None),  # the 3.15 branch and master with force_close
        (False, True, None),
    ],
)
def test_keepalive_seconds(force_close: bool, value: object, seconds: object) -> None:
    assert compat.keepalive_seconds(force_close, value) == seconds


def test_check_factory_names_a_connector_without_one() -> None:
    class Connector50:
        pass

    with pytest.raises(TypeError, match=r"set no _factory"):
        compat.check_factory(Connector50())
    factory = Connector50()
    factory._factory = lambda: None  # type: ignore[attr-defined]
    compat.check_factory(factory)


# ------------------------------------------ the close step, on real servers


async def _read_one(conn: PoolConnector, target: str) -> None:
    session = aiohttp.ClientSession(connector=conn, connector_owner=False)
    async with session, session.get(target) as resp:
        await resp.read()


async def test_the_close_step_closes_the_pool(server: TestServer) -> None:
    # aiohttp's own close() goes through the close step of the installed
    # aiohttp: the pool closes its idle connection and counts it.
    conn = PoolConnector()
    await _read_one(conn, url(server, "/small"))
    assert conn.stats().idle == 1
    await conn.close()
    stats = conn.stats()
    assert (stats.idle, stats.closed["connector_closed"]) == (0, 1)
    assert conn.closed


async def test_the_4_0_name_of_the_close_step_closes_the_pool_too(
    server: TestServer,
) -> None:
    # On 3.x nothing calls _close_immediately yet; called as aiohttp 4.0's
    # close() and __del__ do, it closes the pool and returns what close()
    # must wait for.
    conn = PoolConnector()
    await _read_one(conn, url(server, "/small"))
    waiters: list[Awaitable[object]] | None = conn._close_immediately()
    assert conn.closed
    assert conn.stats().idle == 0
    if waiters is not None:  # aiohttp 3.11 returns nothing to wait for
        await asyncio.gather(*waiters, return_exceptions=True)
    assert conn.stats().closed["connector_closed"] == 1


async def test_an_unclosed_connector_is_closed_when_collected(
    server: TestServer,
) -> None:
    # __del__ closes the pool through the same step as close() (it called
    # _close by name before 4.0 renamed it).
    conn = PoolConnector()
    await _read_one(conn, url(server, "/small"))
    assert conn.stats().idle == 1
    closed: list[str] = []
    conn.add_listener(
        lambda event: closed.append(event.reason) if isinstance(event, Closed) else None
    )
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        del conn
        with pytest.warns(ResourceWarning, match="Unclosed connector"):
            gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert closed == ["connector_closed"]
    assert [context["message"] for context in seen] == ["Unclosed connector"]


@pytest.mark.parametrize("body", ["none", "stream", "empty"])
@pytest.mark.parametrize("stream_error", [None, "caller", "real"])
@pytest.mark.parametrize("at_eof", [False, True])
@pytest.mark.parametrize("protocol_error", [False, True])
@pytest.mark.parametrize("server_said_close", [False, True])
async def test_read_to_end_is_classify_releases_eof_with_force_close(
    body: str,
    stream_error: str | None,
    at_eof: bool,
    protocol_error: bool,
    server_said_close: bool,
) -> None:
    """The force_close fast lane (``PoolConnection.release``) counts
    ``("eof", "force_close")`` when ``read_to_end`` says so: exactly when
    ``classify_release`` would, on aiohttp's own protocol and body stream in
    every state a release can find them."""
    from aiohttp.streams import EMPTY_PAYLOAD

    from aioconnpool._aiohttp.release_paths import classify_release

    loop = asyncio.get_running_loop()
    protocol = ResponseHandler(loop)
    protocol._should_close = server_said_close
    if protocol_error:
        protocol.set_exception(ValueError("parser"))
    if body == "stream":
        stream = StreamReader(protocol, 2**16, loop=loop)
        if at_eof:
            stream.feed_eof()
        if stream_error == "caller":
            marker = compat.caller_stop_marker
            assert isinstance(marker, BaseException)
            stream.set_exception(marker)
        elif stream_error == "real":
            stream.set_exception(ValueError("body"))
        protocol._payload = stream
    elif body == "empty":
        protocol._payload = EMPTY_PAYLOAD
    classified = classify_release(
        protocol, closing=False, force_close=True, explicit=True
    )
    assert compat.read_to_end(protocol) == (classified == ("eof", "force_close"))
