"""The clients under test, and the host names they send requests to.

Every ``*.test`` host name resolves to the loopback address
(:class:`~aioconnpool.testing.LoopbackResolver`), so a benchmark can spread
its requests over thousands of hosts served by one loopback server. The
three clients (aiohttp's ``TCPConnector``, aioconnpool's ``PoolConnector``,
httpx's ``AsyncClient``) are opened the same way and driven through one
``fetch(url)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from aioconnpool import PoolConnector
from aioconnpool.testing import LoopbackResolver

__all__ = [
    "AIOHTTP",
    "HTTPX",
    "OURS",
    "SUFFIX",
    "BadStatus",
    "Client",
    "Fetch",
    "connector",
    "host_name",
    "open_client",
    "pool_connector",
    "url_for",
]

OURS, AIOHTTP, HTTPX = "aioconnpool", "aiohttp", "httpx"
SUFFIX = ".test"  # every host name ending so resolves to 127.0.0.1

Fetch = Callable[[str], Awaitable[None]]


def host_name(i: int) -> str:
    """The ``i``-th host name: ``h{i}.test``."""
    return f"h{i}{SUFFIX}"


def url_for(host: str, port: int) -> str:
    """The root URL of ``host`` on the loopback server at ``port``."""
    return f"http://{host}:{port}/"


def pool_connector(**kwargs: Any) -> PoolConnector:
    """aioconnpool's connector, resolving ``*.test`` to the loopback address."""
    return PoolConnector(resolver=LoopbackResolver(suffix=SUFFIX), **kwargs)


def connector(client: str, **kwargs: Any) -> aiohttp.TCPConnector:
    """aiohttp's connector or ours (``client``), with the same keywords."""
    # aiohttp's DNS cache is left at its defaults (use_dns_cache=True,
    # ttl_dns_cache=10) for both.
    if client == OURS:
        return pool_connector(**kwargs)
    return aiohttp.TCPConnector(resolver=LoopbackResolver(suffix=SUFFIX), **kwargs)


class BadStatus(Exception):
    """An answer other than ``200 OK``."""


@dataclass
class Client:
    fetch: Fetch
    pool: Callable[[], dict[str, int]] = dict


@asynccontextmanager
async def open_client(
    client: str,
    *,
    limit: int,
    limit_per_host: int = 0,
    force_close: bool = False,
    trace_configs: Sequence[aiohttp.TraceConfig] = (),
    pool_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[Client]:
    """``client`` (:data:`AIOHTTP`, :data:`OURS` or :data:`HTTPX`), open until
    the block ends; ``pool()`` gives aioconnpool's own counts (nothing for the
    others). ``pool_options``: ``PoolConnector``'s own keywords (``max_idle``,
    ...), for aioconnpool only."""
    if pool_options and client != OURS:
        raise ValueError(f"pool_options {dict(pool_options)!r} are for {OURS} only")
    if client == HTTPX:
        import httpx  # only here: the other clients' processes do without it

        if limit_per_host or force_close or trace_configs:
            raise ValueError("httpx has no per-host limit, force_close or traces")
        limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        # No timeouts at all (the pool timeout would fail queued requests);
        # the run's budget stops a run that takes too long.
        async with httpx.AsyncClient(
            limits=limits, timeout=httpx.Timeout(None)
        ) as httpx_client:

            async def fetch_httpx(url: str) -> None:
                resp = await httpx_client.get(url)
                if resp.status_code != 200:
                    raise BadStatus(resp.status_code)

            yield Client(fetch_httpx)
        return
    if client not in (AIOHTTP, OURS):
        raise ValueError(f"unknown client {client!r}")
    conn = connector(
        client,
        limit=limit,
        limit_per_host=limit_per_host,
        force_close=force_close,
        **(pool_options or {}),
    )
    async with aiohttp.ClientSession(
        connector=conn,
        timeout=aiohttp.ClientTimeout(total=None),
        trace_configs=list(trace_configs) or None,
    ) as session:

        async def fetch_aiohttp(url: str) -> None:
            async with session.get(url) as resp:
                await resp.read()
                if resp.status != 200:
                    raise BadStatus(resp.status)

        def pool() -> dict[str, int]:
            if not isinstance(conn, PoolConnector):
                return {}
            stats = conn.stats()
            return {
                "requests": stats.requests,
                "created": stats.created,
                "reused": stats.reused,
                "idle_at_end": stats.idle,
            }

        yield Client(fetch_aiohttp, pool)
