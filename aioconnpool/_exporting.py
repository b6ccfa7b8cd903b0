"""What the metric exporters (``prometheus``, ``otel``) share: a snapshot
taken safely from any thread, and the ranking behind the cardinality cap."""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
from collections.abc import Mapping
from typing import TYPE_CHECKING

from . import FleetHostStats, HostStats, HostTable, PoolKey, PoolStats

if TYPE_CHECKING:
    from . import PoolConnector

__all__ = ["busiest", "busiest_fleet_hosts", "snapshot_on_loop"]

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
    """The ``n`` hosts with most requests, ties broken by key (stable ranks).

    Over a snapshot's ``HostTable`` the ranking reads the request counts
    without building every host's ``HostStats``: a scrape then builds the
    ``n`` it exports, not the thousands a crawler has.
    """
    if isinstance(hosts, HostTable):
        requests_of = hosts.requests_of
    else:

        def requests_of(key: PoolKey) -> int:
            return hosts[key].requests

    def rank(key: PoolKey) -> tuple[int, PoolKey]:
        return (-requests_of(key), key)

    if len(hosts) <= n:
        return sorted(hosts, key=rank)
    return heapq.nsmallest(n, hosts, key=rank)


def busiest_fleet_hosts(
    hosts: Mapping[PoolKey, FleetHostStats], n: int
) -> list[tuple[PoolKey, FleetHostStats]]:
    """The ``n`` fleet hosts where this process holds or waits most (then
    by slots held fleet-wide): the ones the exporters label."""
    return sorted(
        hosts.items(),
        key=lambda kv: (kv[1].mine + kv[1].waiting_here, kv[1].acquired),
        reverse=True,
    )[:n]
