"""Prometheus: register the collector, serve /metrics, scrape it."""

from __future__ import annotations

import aiohttp
from _loopback import run
from prometheus_client import CollectorRegistry, start_http_server

from aioconnpool import PoolConnector
from aioconnpool.prometheus import register, unregister
from aioconnpool.testing import LoopbackResolver

SHOWN = (
    "aioconnpool_pool_requests_total",
    "aioconnpool_requests_total",
    'aioconnpool_released_total{host="a.test"',
    'aioconnpool_closed_total{host="b.test"',
    "aioconnpool_pool_wait_time_seconds_count",
)


async def main(port: int) -> None:
    # --8<-- [start:setup]
    connector = PoolConnector(
        limit_per_host=4, resolver=LoopbackResolver(suffix=".test")
    )
    registry = CollectorRegistry()  # or leave it out: the global REGISTRY
    collector = register(connector, registry, max_hosts=50)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    metrics_url = f"http://127.0.0.1:{server.server_port}/metrics"
    # --8<-- [end:setup]
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            for host in ("a.test", "a.test", "b.test"):
                async with session.get(f"http://{host}:{port}/close") as resp:
                    await resp.read()
            # --8<-- [start:scrape]
            async with (  # as Prometheus would
                aiohttp.ClientSession() as scraper,
                scraper.get(metrics_url) as resp,
            ):
                text = await resp.text()
            # --8<-- [end:scrape]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        unregister(collector, registry)
    for line in text.splitlines():
        if line.startswith(SHOWN) and not line.endswith(" 0.0"):
            print(line.replace(f'port="{port}"', 'port="PORT"'))


if __name__ == "__main__":
    run(main)
