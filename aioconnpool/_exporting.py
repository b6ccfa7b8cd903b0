"""What the metric exporters (``prometheus``, ``otel``) share: a snapshot
taken safely from any thread, and the ranking behind the cardinality cap."""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ._keys import PoolKey
from ._stats import HostStats, PoolStats

if TYPE_CHECKING:
    from ._connector import PoolConnector

__all__ = ["busiest", "snapshot_on_loop"]

HOP_TIMEOUT = 10.0  # seconds a collector thread waits for the loop


def snapshot_on_loop(
    connector: PoolConnector, loop: asyncio.AbstractEventLoop | None
) -> PoolStats:
    """``connector.stats()``, taken on the connector's loop.

    The pool is not thread-safe, and both a Prometheus HTTP server and an
    OpenTelemetry periodic reader collect from threads of their own: such a
    call hands the snapshot to the loop and waits for it.
    """
    if loop is not None and loop.is_running():
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:
            done: concurrent.futures.Future[PoolStats] = concurrent.futures.Future()

            def take() -> None:
                try:
                    done.set_result(connector.stats())
                except BaseException as exc:  # handed to the collecting thread
                    done.set_exception(exc)

            loop.call_soon_threadsafe(take)
            return done.result(timeout=HOP_TIMEOUT)
    return connector.stats()


def busiest(hosts: Mapping[PoolKey, HostStats], n: int) -> list[PoolKey]:
    """The ``n`` hosts with most requests, ties broken by key (stable ranks)."""
    if len(hosts) <= n:
        return sorted(hosts, key=lambda k: (-hosts[k].requests, k))
    ranked = heapq.nsmallest(n, hosts.items(), key=lambda kv: (-kv[1].requests, kv[0]))
    return [key for key, _ in ranked]
