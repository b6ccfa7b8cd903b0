"""The pytest plugin's fixtures, in a test suite of yours.

Run: ``pytest examples/test_pool_guard.py``. The second test fails on
purpose, at teardown, with the plugin's report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from _loopback import make_app
from aiohttp.test_utils import TestServer

from aioconnpool import PoolConnector
from aioconnpool.testing import LoopbackResolver


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with TestServer(make_app(), host="127.0.0.1") as server:
        assert server.port is not None
        yield server.port


# --8<-- [start:tests]
async def status_of(session: aiohttp.ClientSession, url: str) -> int:
    resp = await session.get(url)
    return resp.status  # the bug: the response is never read nor released


async def test_reads_what_it_gets(
    pool_connector: Callable[..., PoolConnector], port: int
) -> None:
    connector = pool_connector(resolver=LoopbackResolver(suffix=".test"))
    # The fixture closes the connector at teardown, after its checks.
    async with (
        aiohttp.ClientSession(connector=connector, connector_owner=False) as session,
        session.get(f"http://a.test:{port}/big") as resp,
    ):
        assert len(await resp.read()) == 3 * 1024 * 1024


async def test_forgets_to_release(
    pool_connector: Callable[..., PoolConnector], port: int
) -> None:
    connector = pool_connector(resolver=LoopbackResolver(suffix=".test"))
    async with aiohttp.ClientSession(
        connector=connector, connector_owner=False
    ) as session:
        assert await status_of(session, f"http://a.test:{port}/big") == 200


# --8<-- [end:tests]
