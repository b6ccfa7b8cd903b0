"""Pool policies against a real loopback server: the classic requests/urllib3
demonstrations (pool_connections, pool_maxsize, pool_block, mount) redone
with host names ``a.test``, ``b.test``... mapped to 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from aioconnpool import (
    AioConnPoolError,
    PoolClosedError,
    PoolConnector,
    PoolFullError,
    PoolKey,
    PoolTimeoutError,
)
from tests.conftest import Recorder, settle, url

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]


def port_of(server: TestServer) -> int:
    assert server.port is not None
    return server.port


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``condition`` holds (bounded, not a timing test)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def get(session: aiohttp.ClientSession, target: str) -> str:
    async with session.get(target) as resp:
        return await resp.text()


def hold(
    session: aiohttp.ClientSession, server: TestServer, host: str, n: int
) -> list[asyncio.Task[str]]:
    """``n`` requests to ``host``'s /hang: they hold their connections until
    the recorder's gate opens."""
    target = url(server, "/hang", host=host)
    return [asyncio.create_task(get(session, target)) for _ in range(n)]


# ------------------------------------------------ max_hosts (pool_connections)


@pytest.mark.parametrize(
    ("max_hosts", "created", "evicted"), [(1, 3, 2), (2, 2, 0), (None, 2, 0)]
)
async def test_max_hosts_a_b_a(
    server: TestServer,
    make_session: Build,
    max_hosts: int | None,
    created: int,
    evicted: int,
) -> None:
    session, conn = make_session(max_hosts=max_hosts)
    for host in ("a.test", "b.test", "a.test"):
        assert await get(session, url(server, "/small", host=host)) == "ok"
    stats = conn.stats()
    assert stats.created == created
    assert stats.closed["evicted"] == evicted
    # With one host slot, b evicted a, then a evicted b.
    a = conn.stats(url(server, "/", host="a.test"))
    assert a.closed["evicted"] == evicted // 2
    assert stats.idle == len(conn.connections()) == (max_hosts or 2)


# ------------------------------------------- max_idle_per_host (pool_maxsize)


async def test_max_idle_per_host_discards_with_urllib3_warning(
    server: TestServer,
    make_session: Build,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="aioconnpool")
    session, conn = make_session(max_idle_per_host=1)
    target = url(server, "/", host="a.test")
    for round_ in (1, 2):
        recorder.gate.clear()
        tasks = hold(session, server, "a.test", 2)
        await until(lambda: conn.stats(target).acquired == 2, "2 acquired")
        recorder.gate.set()
        assert await asyncio.gather(*tasks) == ["late", "late"]
        await settle()
        stats = conn.stats(target)
        assert stats.idle == 1
        assert stats.closed["pool_full"] == round_
    assert (stats.created, stats.reused) == (3, 1)
    warnings = [r for r in caplog.records if r.name == "aioconnpool"]
    assert [r.levelno for r in warnings] == [logging.WARNING] * 2
    assert warnings[0].getMessage() == (
        "Connection pool is full, discarding connection: a.test. "
        "Connection pool size: 1"
    )


async def test_max_idle_closes_the_longest_idle(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session(max_idle=2)
    for host in ("a.test", "b.test", "c.test"):
        await get(session, url(server, "/small", host=host))
    stats = conn.stats()
    assert (stats.idle, stats.closed["pool_full"]) == (2, 1)
    a = conn.stats(url(server, "/", host="a.test"))
    assert (a.idle, a.closed["pool_full"]) == (0, 1)
    assert {info.key.host for info in conn.connections()} == {"b.test", "c.test"}


# ------------------------------------------------------ host_limits (mount)


async def test_host_limits_most_specific_pattern_wins(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    port = server.port
    session, conn = make_session(
        limit_per_host=4,
        host_limits={
            "a.test": 1,  # any port
            f"http://a.test:{port}": 2,  # this port: more specific
            "b.test": 3,
            f"c.test:{port}": None,  # no per-host limit
        },
    )
    expected = {"a.test": 2, "b.test": 3, "c.test": None, "d.test": 4}
    for host, limit in expected.items():
        assert conn.stats(url(server, "/", host=host)).limit == limit
    tasks = [t for host in expected for t in hold(session, server, host, 6)]
    in_use = {"a.test": 2, "b.test": 3, "c.test": 6, "d.test": 4}

    def all_held() -> bool:
        return all(
            conn.stats(url(server, "/", host=h)).acquired == n
            for h, n in in_use.items()
        )

    await until(all_held, "every host at its own limit")
    for host, n in in_use.items():
        stats = conn.stats(url(server, "/", host=host))
        assert (stats.acquired, stats.waiting) == (n, 6 - n)
        assert stats.limit == expected[host]
    recorder.gate.set()
    await asyncio.gather(*tasks)
    assert conn.stats().host_limits == {
        "a.test": 1,
        f"http://a.test:{port}": 2,
        "b.test": 3,
        f"c.test:{port}": None,
    }


async def test_set_host_limit_at_runtime_wakes_waiters_at_once(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    session, conn = make_session(limit_per_host=1)
    target = url(server, "/", host="a.test")
    tasks = hold(session, server, "a.test", 4)
    await until(lambda: conn.stats(target).waiting == 3, "3 waiting")
    conn.set_host_limit("a.test", 3)
    # Raising the limit woke two waiters in the same call, before any await.
    stats = conn.stats(target)
    assert (stats.limit, stats.acquired + stats.connecting, stats.waiting) == (3, 3, 1)
    conn.remove_host_limit("a.test")
    assert conn.stats(target).limit == 1
    assert conn.host_limits == {}
    with pytest.raises(KeyError, match=r"a\.test"):
        conn.remove_host_limit("a.test")
    recorder.gate.set()
    assert await asyncio.gather(*tasks) == ["late"] * 4
    assert conn.stats().acquired == 0


async def test_a_bad_runtime_limit_changes_nothing(make_session: Build) -> None:
    _, conn = make_session(host_limits={"a.test": 2})
    with pytest.raises(ValueError, match="-1"):
        conn.set_host_limit("b.test", -1)
    with pytest.raises(ValueError, match="path"):
        conn.set_host_limit("http://b.test/api", 2)
    assert conn.host_limits == {"a.test": 2}


# ----------------------------------------------------- block (pool_block)


async def test_block_false_raises_pool_full_exactly_when_full(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    session, conn = make_session(limit=10, limit_per_host=2, block=False)
    tasks = hold(session, server, "a.test", 2)
    target = url(server, "/", host="a.test")
    await until(lambda: conn.stats(target).acquired == 2, "2 acquired")
    with pytest.raises(PoolFullError) as info:
        await get(session, url(server, "/small", host="a.test"))
    error = info.value
    assert isinstance(error, aiohttp.ClientConnectionError)
    assert isinstance(error, AioConnPoolError)
    assert error.key == PoolKey("a.test", port_of(server), False)
    message = str(error)
    assert f"http://a.test:{server.port}" in message
    assert "limit_per_host=2" in message
    assert "limit=10" in message
    # Another host is not full: served.
    assert await get(session, url(server, "/small", host="b.test")) == "ok"
    stats = conn.stats(target)
    assert (stats.rejected, stats.waiting, conn.stats().rejected) == (1, 0, 1)
    recorder.gate.set()
    await asyncio.gather(*tasks)
    # Room again: no longer rejected.
    assert await get(session, url(server, "/small", host="a.test")) == "ok"


async def test_acquire_timeout_raises_pool_timeout_and_leaves_no_waiter(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    session, conn = make_session(limit_per_host=1, acquire_timeout=0.05)
    target = url(server, "/", host="a.test")
    tasks = hold(session, server, "a.test", 1)
    await until(lambda: conn.stats(target).acquired == 1, "1 acquired")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PoolTimeoutError) as info:
        await get(session, url(server, "/small", host="a.test"))
    assert loop.time() - started >= 0.05
    error = info.value
    # Not replaced by aiohttp's ConnectionTimeoutError (see _errors.py).
    assert type(error) is PoolTimeoutError
    assert isinstance(error, aiohttp.ClientConnectionError)
    assert error.timeout == 0.05
    assert error.key == PoolKey("a.test", port_of(server), False)
    assert "acquire_timeout" in str(error)
    assert "limit_per_host=1" in str(error)
    stats = conn.stats(target)
    assert (stats.wait_timeouts, stats.waiting, conn.stats().waiting) == (1, 0, 0)
    recorder.gate.set()
    await asyncio.gather(*tasks)
    stats = conn.stats(target)
    assert (stats.acquired, stats.idle, stats.requests) == (0, 1, 2)


async def test_acquire_timeout_does_not_fire_for_a_request_served_in_time(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session(limit_per_host=1, acquire_timeout=5.0)
    results = await asyncio.gather(
        *(get(session, url(server, "/small", host="a.test")) for _ in range(5))
    )
    assert results == ["ok"] * 5
    assert conn.stats().wait_timeouts == 0


# -------------------------------------------------------- connection lifetime


async def test_max_requests_per_connection(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session(max_requests_per_connection=2)
    for _ in range(5):
        await get(session, url(server, "/small", host="a.test"))
    stats = conn.stats()
    assert (stats.created, stats.reused) == (3, 2)
    assert stats.closed["max_requests"] == 2
    assert [info.requests for info in conn.connections()] == [1]


async def test_max_connection_age(server: TestServer, make_session: Build) -> None:
    session, conn = make_session(max_connection_age=0.05)
    await get(session, url(server, "/small", host="a.test"))
    assert conn.stats().idle == 1
    await asyncio.sleep(0.1)  # older than its age while idle: not reused
    await get(session, url(server, "/small", host="a.test"))
    await asyncio.sleep(0.1)  # and one past its age when released: closed
    assert conn.stats().idle == 1
    await get(session, url(server, "/small", host="a.test"))
    stats = conn.stats()
    assert (stats.created, stats.reused) == (3, 0)
    assert stats.closed["max_age"] == 2


@pytest.mark.parametrize("reuse", ["fifo", "lifo"])
async def test_reuse_order_on_real_sockets(
    server: TestServer, make_session: Build, recorder: Recorder, reuse: str
) -> None:
    session, _conn = make_session(reuse=reuse)
    big = url(server, "/big", host="a.test")
    # Two streaming responses hold two connections; read to the end one
    # after the other, they are released in that order.
    first, second = await session.get(big), await session.get(big)
    sockets = []
    for resp in (first, second):
        assert resp.connection is not None
        assert resp.connection.transport is not None
        sockets.append(resp.connection.transport.get_extra_info("sockname"))
        await resp.read()
    seen: list[tuple[object, ...]] = []
    recorder.on_request = lambda request: seen.append(
        tuple(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
    )
    await get(session, url(server, "/small", host="a.test"))
    expected = sockets[1] if reuse == "lifo" else sockets[0]
    assert seen == [tuple(expected)]


# ------------------------------------------------------------------ logging


async def test_logs_in_urllib3_vocabulary(
    server: TestServer, make_session: Build, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioconnpool")
    session, conn = make_session()
    target = url(server, "/small", host="a.test")
    await get(session, target)
    await get(session, target)
    await get(session, url(server, "/close", host="a.test"))
    await settle()
    messages = [r.getMessage() for r in caplog.records if r.name == "aioconnpool"]
    assert messages == [
        f"Starting new HTTP connection (1): a.test:{server.port}",
        f"Reusing connection to http://a.test:{server.port}",
        f"Reusing connection to http://a.test:{server.port}",
        f"Closing connection to http://a.test:{server.port} (reason: server)",
    ]
    levels = {r.getMessage().split()[0]: r.levelno for r in caplog.records}
    assert levels == {
        "Starting": logging.DEBUG,
        "Reusing": logging.DEBUG,
        "Closing": logging.INFO,
    }
    assert conn.stats().closed["server"] == 1


async def test_log_levels_changed_at_any_time_take_effect(
    server: TestServer, make_session: Build, caplog: pytest.LogCaptureFixture
) -> None:
    # The paths every request takes read logging's own cache of
    # isEnabledFor (reporting.LOG_LEVELS): a level set, a logger disabled or
    # logging.disable() between two requests must show in the next one.
    logger = logging.getLogger("aioconnpool")
    session, _conn = make_session()
    target = url(server, "/small", host="a.test")

    def reuse_lines() -> int:
        lines = [r for r in caplog.records if r.getMessage().startswith("Reusing")]
        caplog.clear()
        return len(lines)

    caplog.set_level(logging.INFO, logger="aioconnpool")
    await get(session, target)
    await get(session, target)
    assert reuse_lines() == 0
    caplog.set_level(logging.DEBUG, logger="aioconnpool")
    await get(session, target)
    assert reuse_lines() == 1
    logger.disabled = True
    try:
        await get(session, target)
        assert reuse_lines() == 0
    finally:
        logger.disabled = False
    await get(session, target)
    assert reuse_lines() == 1
    logging.disable(logging.DEBUG)
    try:
        await get(session, target)
        assert reuse_lines() == 0
    finally:
        logging.disable(logging.NOTSET)
    await get(session, target)
    assert reuse_lines() == 1
    caplog.set_level(logging.WARNING, logger="aioconnpool")
    await get(session, url(server, "/close", host="a.test"))
    await settle()
    assert not [r for r in caplog.records if r.name == "aioconnpool"]


async def test_library_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("aioconnpool").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


# --------------------------------------------------------------- closed pool


async def test_a_queued_request_gets_pool_closed_when_the_connector_closes(
    server: TestServer, make_session: Build
) -> None:
    session, conn = make_session(limit_per_host=1)
    target = url(server, "/", host="a.test")
    (holder,) = hold(session, server, "a.test", 1)
    queued = asyncio.create_task(get(session, url(server, "/small", host="a.test")))
    await until(lambda: conn.stats(target).waiting == 1, "1 waiting")
    await conn.close()
    with pytest.raises(PoolClosedError, match="Connector is closed"):
        await queued
    with pytest.raises(aiohttp.ClientError):
        await holder  # its socket was closed under it
    stats = conn.stats()
    assert (stats.acquired, stats.waiting, stats.is_closed) == (0, 0, True)


# ------------------------------------------------------------- bad options


BAD_OPTIONS: list[tuple[dict[str, object], type[Exception], str]] = [
    ({"host_limits": ["a.test"]}, TypeError, "host_limits must be a mapping"),
    ({"host_limits": {"a.test": 0}}, ValueError, "host_limits['a.test'] must be >= 1"),
    ({"host_limits": {"a.test": -2}}, ValueError, "-2"),
    ({"host_limits": {"a.test": 1.5}}, TypeError, "1.5"),
    ({"host_limits": {"a.test": True}}, TypeError, "True"),
    ({"host_limits": {3: 1}}, TypeError, "3"),
    ({"host_limits": {"ftp://a.test": 1}}, ValueError, "ftp://a.test"),
    ({"host_limits": {"http://a.test/api": 1}}, ValueError, "path '/api'"),
    ({"host_limits": {"http://u:secret@a.test": 1}}, ValueError, "credentials"),
    ({"host_limits": {"": 1}}, ValueError, "no host"),
    ({"host_limits": {"a.test": 1, "A.TEST": 2}}, ValueError, "both mean"),
    ({"host_limits": {"a.test": 1, "a.test.": 2}}, ValueError, "both mean"),
    ({"host_limits": {"*.a.test": 1}}, ValueError, "wildcards are not supported"),
    ({"host_limits": {"a.test:80:90": 1}}, ValueError, "not a host name"),
    ({"host_limits": {"a.test:0": 1}}, ValueError, "port 0"),
    ({"host_limits": {"http://a.test:0": 1}}, ValueError, "port 0"),
    ({"max_idle_per_host": -1}, ValueError, "max_idle_per_host must be >= 0"),
    ({"max_idle_per_host": "2"}, TypeError, "max_idle_per_host must be an int"),
    ({"max_idle": -1}, ValueError, "max_idle must be >= 0"),
    ({"max_hosts": 0}, ValueError, "max_hosts must be >= 1"),
    ({"max_hosts": 2.0}, TypeError, "max_hosts must be an int"),
    ({"block": "no"}, TypeError, "block must be True or False"),
    ({"acquire_timeout": 0}, ValueError, "acquire_timeout must be > 0"),
    ({"acquire_timeout": -1.0}, ValueError, "acquire_timeout"),
    ({"acquire_timeout": float("nan")}, ValueError, "nan"),
    ({"acquire_timeout": "1"}, TypeError, "acquire_timeout"),
    ({"block": False, "acquire_timeout": 1.0}, ValueError, "no effect with block"),
    ({"max_connection_age": 0}, ValueError, "max_connection_age must be > 0"),
    ({"max_requests_per_connection": 0}, ValueError, "must be >= 1"),
    ({"reuse": "newest"}, ValueError, "reuse must be 'fifo' or 'lifo', got 'newest'"),
    ({"reuse": 1}, TypeError, "reuse must be"),
    ({"limit_per_host": 2, "max_idle_per_host": 3}, ValueError, "limit_per_host=2"),
    (
        {"limit_per_host": 2, "host_limits": {"a.test": 3}, "max_idle_per_host": 4},
        ValueError,
        "every host_limits value",
    ),
    ({"limit": 5, "max_idle_per_host": 6}, ValueError, "more than limit=5"),
    ({"max_idle": 2, "max_idle_per_host": 3}, ValueError, "more than max_idle=2"),
]


@pytest.mark.parametrize(("options", "error", "text"), BAD_OPTIONS)
async def test_bad_options_are_refused_with_their_value(
    options: dict[str, object], error: type[Exception], text: str
) -> None:
    with pytest.raises(error) as info:
        PoolConnector(**options)  # type: ignore[arg-type]
    assert text in str(info.value)
    assert "secret" not in str(info.value)


GOOD_OPTIONS: list[dict[str, object]] = [
    # An override above limit_per_host makes a bigger idle cap meaningful.
    {"limit_per_host": 2, "host_limits": {"a.test": 8}, "max_idle_per_host": 4},
    # No per-host limit at all: any idle cap can bind.
    {"limit_per_host": 0, "limit": 0, "max_idle_per_host": 50},
    {"host_limits": {"a.test": None, "[::1]:8080": 2, "https://b.test/": 3}},
    {"max_idle_per_host": 0, "max_idle": 0, "max_hosts": 1, "reuse": "lifo"},
    # Idle connections do not count against limit: several hosts may keep
    # more idle connections than limit in all.
    {"limit": 2, "max_idle": 4},
]


@pytest.mark.parametrize("options", GOOD_OPTIONS)
async def test_good_options_are_accepted(options: dict[str, object]) -> None:
    conn = PoolConnector(**options)  # type: ignore[arg-type]
    await conn.close()


# ------------------------------------------------- found by a second reader


async def test_thousands_of_cancelled_waiters_granted_in_one_step(
    server: TestServer, make_session: Build
) -> None:
    """A release whose grant lands on a cancelled waiter gives it back, which
    grants the next one...: handled by a worklist, not by recursion."""
    session, conn = make_session(limit=1)
    held = await session.get(url(server, "/big", host="a.test"))
    tasks = [
        asyncio.create_task(session.get(url(server, "/small", host="a.test")))
        for _ in range(3000)
    ]
    await until(lambda: conn.stats().waiting == 3000, "3000 waiting")
    for task in tasks:
        task.cancel()
    held.release()  # same step: every grant meets a cancelled task
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    stats = conn.stats()
    assert (stats.acquired, stats.connecting, stats.waiting) == (0, 0, 0)
    assert stats.created + stats.reused == sum(stats.released.values())
    assert await get(session, url(server, "/small", host="a.test")) == "ok"


async def test_a_grant_given_back_is_still_expired(
    server: TestServer, make_session: Build
) -> None:
    """An idle connection returned by a failed hand-over (a raising reuse
    trace) after the expiry timer found the pool empty is still timed."""

    async def failing_reuse(*_: object) -> None:
        await asyncio.sleep(0.1)
        raise RuntimeError("trace failed")

    trace = aiohttp.TraceConfig()
    trace.on_connection_reuseconn.append(failing_reuse)
    session, conn = make_session({"trace_configs": [trace]}, keepalive_timeout=0.05)
    await get(session, url(server, "/small", host="a.test"))
    with pytest.raises(RuntimeError, match="trace failed"):
        await session.get(url(server, "/small", host="a.test"))
    assert conn.stats().idle == 1
    await until(lambda: conn.stats().idle == 0, "the idle connection expired")
    assert conn.stats().closed["expired"] == 1


async def test_aiohttp_connect_timeout_first_is_not_a_wait_timeout(
    server: TestServer, make_session: Build, recorder: Recorder
) -> None:
    session, conn = make_session(limit_per_host=1, acquire_timeout=5.0)
    (holder,) = hold(session, server, "a.test", 1)
    await until(lambda: conn.stats().acquired == 1, "1 acquired")
    with pytest.raises(aiohttp.ConnectionTimeoutError):
        await session.get(
            url(server, "/small", host="a.test"),
            timeout=aiohttp.ClientTimeout(connect=0.05),
        )
    stats = conn.stats()
    assert (stats.waiting, stats.wait_timeouts) == (0, 0)
    recorder.gate.set()
    assert await holder == "late"


async def test_an_idle_cap_of_zero_does_not_warn_per_request(
    server: TestServer, make_session: Build, caplog: pytest.LogCaptureFixture
) -> None:
    session, conn = make_session(max_idle_per_host=0)
    for _ in range(3):
        await get(session, url(server, "/small", host="a.test"))
    assert conn.stats().closed["pool_full"] == 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "key",
    [
        "user:s3cret@a.test",
        "https://user:s3c@ret@a.test",
        "https://user:s3/cret@a.test",
    ],
)
async def test_credentials_in_a_pattern_never_reach_the_message(key: str) -> None:
    with pytest.raises(ValueError, match="host_limits key") as info:
        PoolConnector(host_limits={key: 1})
    assert "s3" not in str(info.value)
    assert "cret" not in str(info.value)


async def test_credentials_in_a_bad_host_limits_value_are_masked() -> None:
    from yarl import URL

    with pytest.raises(TypeError) as info:
        PoolConnector(host_limits={URL("http://user:s3cret@a.test"): 1})  # type: ignore[dict-item]
    assert "s3cret" not in str(info.value)
    with pytest.raises(TypeError) as info:
        PoolConnector(host_limits=[("http://user:s3cret@a.test", 1)])  # type: ignore[arg-type]
    assert "s3cret" not in str(info.value)
