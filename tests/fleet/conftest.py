"""Fixtures of the multi-process fleet scenarios.

``redis_server`` comes from ``tests/conftest.py``: a real ``redis-server``
(``aioconnpool.testing.RedisServer``) on a free loopback port, persistence
off, in a temporary directory, with ``url``, ``port``, ``kill()`` (SIGKILL),
``restart()`` (same port, empty), ``pause()`` (SIGSTOP) and ``resume()``
(SIGCONT); stopped afterwards in all cases. When ``redis-server`` is missing
or does not start, the test fails (never skips) and says to install the
Debian package ``redis-server`` (``apt-get install -y redis-server``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .harness import CountingServer, Workers


@pytest.fixture
async def counting_server() -> AsyncIterator[CountingServer]:
    """A loopback server that counts its concurrent requests per host."""
    server = CountingServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def workers() -> AsyncIterator[Workers]:
    """Starts worker processes; every one is killed and reaped afterwards."""
    started = Workers()
    try:
        yield started
    finally:
        await started.reap()
