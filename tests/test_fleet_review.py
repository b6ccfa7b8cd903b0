"""Regressions found by a second reader of the fleet (issue 14), driving a
``RedisFleet`` directly against a real Redis, the way ``FleetGatedConnector``
does (``take_now``, else ``acquire``; ``release``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from aioconnpool import PoolKey
from aioconnpool.fleet import FleetTimeoutError, RedisFleet
from aioconnpool.testing import RedisServer

KEY = PoolKey("a.test", 80, False)
NAME = "review"
P = f"aioconnpool:{{{NAME}}}:"
HOLDERS = f"{P}h:http://a.test:80:holders"


@pytest.fixture
async def fleets(redis_server: RedisServer) -> AsyncIterator[list[RedisFleet]]:
    made: list[RedisFleet] = []
    yield made
    for fleet in made:
        await fleet.close()


def new_fleet(
    url: str, made: list[RedisFleet], limit: int = 2, **kw: object
) -> RedisFleet:
    fleet = RedisFleet(url, name=NAME, limit_per_host=limit, **kw)  # type: ignore[arg-type]
    fleet.bind(asyncio.get_running_loop())
    made.append(fleet)
    return fleet


async def get(fleet: RedisFleet) -> None:
    if not fleet.take_now(KEY):
        await fleet.acquire(KEY)


async def held_in_redis(url: str) -> dict[str, int]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        raw = await client.hgetall(HOLDERS)
    finally:
        await client.aclose()
    return {str(k): int(v) for k, v in raw.items()}


async def test_a_busy_process_does_not_starve_another(
    redis_server: RedisServer, fleets: list[RedisFleet]
) -> None:
    """A process that keeps handing its own releases to its next requests
    (take_now) must still let another process's waiter in."""
    a = new_fleet(redis_server.url, fleets)
    b = new_fleet(redis_server.url, fleets, acquire_timeout=3.0)
    stop = asyncio.Event()

    async def worker() -> None:
        await get(a)
        while not stop.is_set():
            await asyncio.sleep(0.005)  # the request
            a.release(KEY)
            await get(a)  # the next one, same host
        a.release(KEY)

    workers = [asyncio.create_task(worker()) for _ in range(2)]
    await asyncio.sleep(0.2)
    started = asyncio.get_running_loop().time()
    await get(b)  # FleetTimeoutError after 3 s before the fix
    waited = asyncio.get_running_loop().time() - started
    b.release(KEY)
    stop.set()
    await asyncio.gather(*workers)
    assert waited < 1.0


async def test_a_later_request_does_not_pass_an_earlier_one(
    redis_server: RedisServer, fleets: list[RedisFleet]
) -> None:
    a = new_fleet(redis_server.url, fleets, limit=1)
    await get(a)  # R0 holds the only slot
    order: list[str] = []

    async def request(name: str) -> None:
        await get(a)
        order.append(name)
        await asyncio.sleep(0.02)
        a.release(KEY)

    first = asyncio.create_task(request("R1"))  # queued in the fleet
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    a.release(KEY)  # R0 ends
    second = asyncio.create_task(request("R2"))  # arrives after R1
    await asyncio.gather(first, second)
    assert order == ["R1", "R2"]


async def test_a_release_during_a_resync_counts_once(
    redis_server: RedisServer, fleets: list[RedisFleet]
) -> None:
    a = new_fleet(redis_server.url, fleets)
    b = new_fleet(redis_server.url, fleets, acquire_timeout=0.5)
    await get(a)
    await get(a)  # A holds 2 of 2
    await asyncio.sleep(0.1)
    a._lapsed()  # what the heartbeat does when the lease is in doubt
    a.release(KEY)  # a request ends before the resync's call goes out
    await asyncio.sleep(0.2)
    assert sum((await held_in_redis(redis_server.url)).values()) == 1
    await get(b)  # the one free slot
    with pytest.raises(FleetTimeoutError):
        await get(b)  # no more: A still holds one
    a.release(KEY)
    b.release(KEY)


async def test_a_session_redis_forgot_registers_anew(
    redis_server: RedisServer, fleets: list[RedisFleet]
) -> None:
    """Redis loses a live session (a stale snapshot, a failover): its next
    call is told so and registers what it holds, instead of carrying on with
    a session Redis recreated empty."""
    a = new_fleet(redis_server.url, fleets)
    b = new_fleet(redis_server.url, fleets, acquire_timeout=0.5)
    await get(a)
    await asyncio.sleep(0.1)
    session = a.snapshot().session
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        await client.zadd(f"{P}sessions", {session: 0})  # its lease "ran out"
    finally:
        await client.aclose()
    await get(b)  # collects A's session: B may take the slot A lost
    later = asyncio.create_task(get(a))  # A's next call learns that it lost it
    await asyncio.sleep(0.3)
    assert a.snapshot().lapses == 1
    assert a.snapshot().session != session
    # A registered the slot it really holds, under its new session: with
    # B's, the limit is full, and A's new request waits (before the fix, A
    # carried on in a session Redis had recreated empty: 3 in use).
    held = await held_in_redis(redis_server.url)
    assert held == {a.snapshot().session: 1, b.snapshot().session: 1}
    assert not later.done()
    b.release(KEY)
    await asyncio.wait_for(later, 2)
    a.release(KEY)
    a.release(KEY)


async def test_a_release_redis_did_not_count_makes_the_process_register_anew(
    redis_server: RedisServer,
    fleets: list[RedisFleet],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failover to a replica that missed the write of a grant: Redis
    counts fewer of A's slots than A holds. A's next call about the host
    (here a release, which alone would not yet go below zero) is answered
    BEHIND, and A registers what it really holds under a new session, so
    the count is exact again."""
    a = new_fleet(redis_server.url, fleets, limit=2)
    await get(a)
    await get(a)
    await asyncio.sleep(0.1)  # the grants reach Redis
    session = a.snapshot().session
    assert await held_in_redis(redis_server.url) == {session: 2}
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        await client.hset(HOLDERS, session, 1)  # one grant's write "lost"
    finally:
        await client.aclose()
    a.release(KEY)  # Redis counts 1 - 1 = 0, A holds 1: found out
    await asyncio.sleep(0.3)
    assert a.snapshot().lapses == 1
    assert any("counted fewer" in r.getMessage() for r in caplog.records)
    assert a.snapshot().session != session
    assert await held_in_redis(redis_server.url) == {a.snapshot().session: 1}
    a.release(KEY)
    await asyncio.sleep(0.1)
    assert a.snapshot().lapses == 1
    assert await held_in_redis(redis_server.url) == {}
    assert a.snapshot().hosts[KEY].mine == 0
    # A goes on under its new session.
    await get(a)
    await asyncio.sleep(0.1)
    assert await held_in_redis(redis_server.url) == {a.snapshot().session: 1}
    a.release(KEY)


async def test_a_lapse_noticed_inside_a_reply_gives_nothing_back_for_the_old_session(
    redis_server: RedisServer,
    fleets: list[RedisFleet],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reply that comes later than the lease (a Redis stall) is found out
    at its first grant to a live request: the process starts a new session.
    The same reply also grants a request cancelled meanwhile; that slot was
    the old session's, which the new one drops. It must not be "given back"
    by a release under the new session: Redis would then count fewer of the
    process's slots than it holds (room for one more connection than the
    limit), or, holding none, answer BEHIND for no lost write at all."""
    a = new_fleet(
        redis_server.url,
        fleets,
        limit=3,
        lease_ttl=1.0,
        redis_timeout=2.0,
        on_unavailable="wait",
    )
    await get(a)  # one slot held, under a confirmed session
    first = a.snapshot().session
    redis_server.pause()
    live = asyncio.create_task(a.acquire(KEY))
    doomed = asyncio.create_task(a.acquire(KEY))
    # Their call hangs; the lease runs out meanwhile; when that call gives
    # up, the process starts a new session, whose first call goes, carrying
    # both acquires again, into the same stall. (Wait for the new session
    # itself: a call sent before the pause may still come back first.)
    for _ in range(800):
        if a.snapshot().session != first:
            break
        await asyncio.sleep(0.01)
    assert a.snapshot().session != first
    doomed.cancel()
    await asyncio.sleep(1.2)  # past the new session's lease, within redis_timeout
    redis_server.resume()
    await asyncio.wait_for(live, 5)
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await asyncio.sleep(0.3)
    mine = a.snapshot().hosts[KEY].mine
    assert mine == 2
    assert sum((await held_in_redis(redis_server.url)).values()) == mine
    assert not any("counted fewer" in r.getMessage() for r in caplog.records)
    # So another process gets the one slot left, and no more.
    b = new_fleet(redis_server.url, fleets, limit=3, acquire_timeout=0.5)
    await get(b)
    with pytest.raises(FleetTimeoutError):
        await get(b)
    b.release(KEY)
    a.release(KEY)
    a.release(KEY)


async def test_a_grant_redis_lost_is_found_while_the_process_stays_busy_on_the_host(
    redis_server: RedisServer,
    fleets: list[RedisFleet],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis lost one of A's grants (a failover), and A keeps the host busy:
    its connections end and new ones start, so it never holds fewer slots
    than Redis lost and no release of it goes below zero. The shortfall
    must still show at A's next call about the host, not only once A has
    let go of the host: until then another process gets the slot Redis
    thinks free, one more than the limit."""
    a = new_fleet(redis_server.url, fleets, limit=2)
    await get(a)
    await get(a)
    await asyncio.sleep(0.1)  # the grants reach Redis
    session = a.snapshot().session
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        await client.hset(HOLDERS, session, 1)  # one grant's write "lost"
    finally:
        await client.aclose()
    a.release(KEY)  # one of the connections from before the failover ends
    await asyncio.sleep(0.1)
    await get(a)  # a new request on the host
    await asyncio.sleep(0.1)
    a.release(KEY)  # ...and the other connection from before ends too
    await asyncio.sleep(0.1)
    await get(a)
    await asyncio.sleep(0.1)
    assert a.snapshot().hosts[KEY].mine == 2
    assert sum((await held_in_redis(redis_server.url)).values()) == 2
    assert a.snapshot().lapses == 1
    assert any("counted fewer" in r.getMessage() for r in caplog.records)
    b = new_fleet(redis_server.url, fleets, limit=2, acquire_timeout=0.5)
    with pytest.raises(FleetTimeoutError):
        await get(b)  # no slot left: A holds both
    a.release(KEY)
    a.release(KEY)


class ReplyDroppingProxy:
    """A TCP proxy to Redis that can lose a reply: with ``drop_next`` set,
    the next bytes Redis sends back are not forwarded and the client's
    connection is cut, after Redis has run the command. What a network
    failure at the wrong moment does."""

    def __init__(self, port: int) -> None:
        self.redis_port = port
        self.drop_next = False
        self.dropped = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.handlers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.redis_port)
        self.writers += (client_w, redis_w)
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, replies: bool
        ) -> None:
            try:
                while data := await src.read(65536):
                    if replies and self.drop_next:
                        self.drop_next = False
                        self.dropped += 1
                        break
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                for w in (client_w, redis_w):
                    w.close()

        await asyncio.gather(
            pipe(client_r, redis_w, False), pipe(redis_r, client_w, True)
        )

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            # From Python 3.12, wait_closed() also waits for the connections
            # it accepted: the fleet's client still has one.
            for writer in self.writers:
                writer.close()
            await asyncio.gather(*self.handlers, return_exceptions=True)
            await self.server.wait_closed()


async def test_a_script_whose_reply_is_lost_is_not_run_again(
    redis_server: RedisServer, fleets: list[RedisFleet]
) -> None:
    """The connection drops after Redis ran a call, before its reply came
    back. The call must not be sent again (redis-py's own retries would run
    the acquire twice: one slot counted that nobody holds). It is an outage;
    the process then registers what it really holds, anew."""
    proxy = ReplyDroppingProxy(redis_server.port)
    await proxy.start()
    try:
        a = new_fleet(
            f"redis://127.0.0.1:{proxy.port}/0",
            fleets,
            limit=3,
            on_unavailable="wait",
            redis_timeout=0.5,
        )
        await get(a)
        await asyncio.sleep(0.1)
        assert sum((await held_in_redis(redis_server.url)).values()) == 1
        proxy.drop_next = True
        await asyncio.wait_for(get(a), 10)  # through an outage and a resync
        await asyncio.sleep(0.3)
        assert proxy.dropped == 1
        snapshot = a.snapshot()
        assert snapshot.outages == 1
        assert snapshot.hosts[KEY].mine == 2
        # Redis counts exactly what the process holds: 2, not 3.
        assert await held_in_redis(redis_server.url) == {snapshot.session: 2}
        a.release(KEY)
        a.release(KEY)
    finally:
        await proxy.stop()
