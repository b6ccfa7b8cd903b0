"""Bad settings fail at ``RedisFleet(...)`` with an error that names the bad
value; a wrong port fails at first use. A password never shows, in any form
redis-py accepts it."""

from __future__ import annotations

import aiohttp
import pytest

from aioconnpool import PoolConnector
from aioconnpool.fleet import FleetUnavailableError, RedisFleet, mask_url
from aioconnpool.testing import LoopbackResolver, free_port

from .harness import CountingServer

SECRET = "s3cret-pw"
GOOD = f"redis://user:{SECRET}@127.0.0.1:6379/0"


def fleet(url: str = GOOD, **kw: object) -> RedisFleet:
    settings: dict[str, object] = {"name": "x", "limit_per_host": 1, **kw}
    return RedisFleet(url, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "named"),
    [
        (f"redis://:{SECRET}@127.0.0.1:notaport/0", "127.0.0.1:notaport"),
        (f"redis://:{SECRET}@127.0.0.1:99999/0", "99999"),
        (f"redis://:{SECRET}@127.0.0.1:0/0", "bad port: 0"),
        (f"http://user:{SECRET}@127.0.0.1/0", "http://"),
        (f"redis://:{SECRET}@127.0.0.1/zero", "'zero'"),
        (f"redis://:{SECRET}@[::1/0", "[::1"),
        ("127.0.0.1:6379", "127.0.0.1:6379"),
        ("", "''"),
        (f"redis://user:{SECRET}@/0", "redis://"),  # no host
    ],
)
def test_a_malformed_url_is_named_with_the_password_masked(
    url: str, named: str
) -> None:
    with pytest.raises(ValueError, match="Redis URL") as info:
        fleet(url)
    message = str(info.value)
    assert named in message
    assert SECRET not in message
    assert SECRET not in repr(info.value)


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_named(limit: int) -> None:
    with pytest.raises(ValueError, match=f"limit_per_host must be >= 1, got {limit}"):
        fleet(limit_per_host=limit)


@pytest.mark.parametrize("limit", ["3", True, 2.0, None])
def test_a_limit_that_is_not_an_int_is_named(limit: object) -> None:
    with pytest.raises(TypeError, match="limit_per_host must be an int") as info:
        fleet(limit_per_host=limit)
    assert repr(limit) in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("limit", [0, -1, "1", True])
def test_a_bad_host_limit_is_named(limit: object) -> None:
    with pytest.raises((ValueError, TypeError), match=r"host_limits\['slow.test'\]"):
        fleet(host_limits={"slow.test": limit})


@pytest.mark.parametrize("mode", ["sometimes", "LOCAL", "", None])
def test_an_unknown_on_unavailable_is_named(mode: object) -> None:
    with pytest.raises(ValueError, match="on_unavailable must be one of") as info:
        fleet(on_unavailable=mode)
    assert f"got {mode!r}" in str(info.value)


@pytest.mark.parametrize("ttl", [0, -1, -0.5, float("nan"), float("inf")])
def test_a_lease_ttl_not_above_zero_is_named(ttl: float) -> None:
    with pytest.raises(ValueError, match=f"lease_ttl must be .*got {ttl!r}"):
        fleet(lease_ttl=ttl)


def test_a_lease_ttl_of_the_wrong_type_is_named() -> None:
    with pytest.raises(TypeError, match=r"lease_ttl must be a number.*'10'"):
        fleet(lease_ttl="10")


@pytest.mark.parametrize(
    "url",
    [
        f"redis://user:{SECRET}@127.0.0.1:6379/0",
        f"redis://:{SECRET}@127.0.0.1:6379/0",
        f"rediss://user:{SECRET}@127.0.0.1:6380/1",
        # redis-py also takes the password from the query string; its own
        # documentation writes unix sockets that way.
        f"redis://127.0.0.1:6379/0?password={SECRET}",
        f"unix:///run/redis.sock?db=0&password={SECRET}",
        f"unix://user:{SECRET}@/run/redis.sock?db=0",
    ],
)
def test_the_password_never_shows(url: str) -> None:
    assert SECRET not in mask_url(url)
    f = fleet(url)
    assert SECRET not in repr(f)
    assert SECRET not in f.snapshot().address
    assert SECRET not in repr(f.snapshot())
    assert SECRET not in str(f.snapshot().to_dict())
    # And a bad setting next to it does not show it either.
    with pytest.raises(ValueError, match="limit_per_host") as info:
        fleet(url, limit_per_host=0)
    assert SECRET not in str(info.value)


async def test_a_wrong_port_fails_at_first_use_naming_host_and_redis(
    counting_server: CountingServer,
) -> None:
    port = free_port()  # nobody listens there
    url = f"redis://user:{SECRET}@127.0.0.1:{port}/0"
    connector = PoolConnector(
        fleet=fleet(url, on_unavailable="raise", redis_timeout=0.5),
        resolver=LoopbackResolver(suffix=".test"),
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(FleetUnavailableError) as info:
            await session.get(f"http://a.test:{counting_server.port}/")
        err = info.value
        assert err.host.host == "a.test"
        assert err.address == f"redis://***@127.0.0.1:{port}/0"
        message = str(err)
        assert "a.test" in message
        assert f"127.0.0.1:{port}" in message
        assert SECRET not in message
        st = connector.stats()
        assert st.acquired == st.connecting == 0
        assert st.fleet is not None
        assert st.fleet.state == "unavailable"
        assert st.fleet.outages == 1
    assert counting_server.served == {}
