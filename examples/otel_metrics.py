"""OpenTelemetry: instrument a connector, read the metrics back."""

from __future__ import annotations

import aiohttp
from _loopback import run
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)

from aioconnpool import PoolConnector
from aioconnpool.otel import instrument
from aioconnpool.testing import LoopbackResolver


async def main(port: int) -> None:
    # --8<-- [start:setup]
    reader = InMemoryMetricReader()  # in production: a PeriodicExportingMetricReader
    provider = MeterProvider(metric_readers=[reader])
    connector = PoolConnector(
        limit_per_host=4, resolver=LoopbackResolver(suffix=".test")
    )
    handle = instrument(connector, provider, max_hosts=50)
    # --8<-- [end:setup]
    async with aiohttp.ClientSession(connector=connector) as session:
        for path in ("/small", "/small", "/close"):
            async with session.get(f"http://a.test:{port}{path}") as resp:
                await resp.read()
        # --8<-- [start:read]
        data = reader.get_metrics_data()
        # --8<-- [end:read]
    handle.close()
    provider.shutdown()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in sorted(scope.metrics, key=lambda m: m.name):
                for point in metric.data.data_points:
                    attrs = {
                        k: v
                        for k, v in (point.attributes or {}).items()
                        if k != "server.port"
                    }
                    if isinstance(point, NumberDataPoint):
                        value = f"value={point.value}"
                    elif isinstance(point, HistogramDataPoint):
                        value = f"count={point.count}"
                    else:
                        continue
                    print(f"{metric.name} {value} {attrs}")


if __name__ == "__main__":
    run(main)
