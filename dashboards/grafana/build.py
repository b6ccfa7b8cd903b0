"""Writes ``aioconnpool.json``, the Grafana dashboard for the Prometheus
exporter (``aioconnpool.prometheus.PoolCollector``).

Run ``python dashboards/grafana/build.py`` after changing a panel; the JSON is
committed so that it can be imported as it is (Dashboards > New > Import).
``tests/test_grafana.py`` checks that every metric the panels query is one
the exporter writes, and that the JSON is this script's output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'connector=~"$connector", host=~"$host"'
POOL = 'connector=~"$connector"'


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
    }


def panel(
    n: int,
    title: str,
    targets: list[dict[str, Any]],
    *,
    x: int,
    y: int,
    w: int = 12,
    h: int = 8,
    unit: str = "short",
    stacked: bool = False,
    description: str = "",
) -> dict[str, Any]:
    return {
        "id": n,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {
                    "drawStyle": "line",
                    "fillOpacity": 40 if stacked else 0,
                    "stacking": {"mode": "normal" if stacked else "none"},
                },
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "table", "placement": "right"}},
        "targets": targets,
    }


def quantile(q: str, metric: str, ref: str) -> dict[str, Any]:
    return target(
        f"histogram_quantile({q}, sum by (le) "
        f"(rate(aioconnpool_pool_{metric}_seconds_bucket{{{POOL}}}[$__rate_interval])))",
        f"p{q[2:]} {metric.replace('_', ' ')}",
        ref,
    )


def dashboard() -> dict[str, Any]:
    panels = [
        panel(
            1,
            "Acquired per host (stacked)",
            [target(f"sum by (host) (aioconnpool_acquired{{{SEL}}})", "{{host}}", "A")],
            x=0,
            y=0,
            w=8,
            stacked=True,
            description='Connections in a request\'s hands. host="_other" sums '
            "the hosts outside the exporter's max_hosts busiest.",
        ),
        panel(
            2,
            "Idle per host (stacked)",
            [target(f"sum by (host) (aioconnpool_idle{{{SEL}}})", "{{host}}", "A")],
            x=8,
            y=0,
            w=8,
            stacked=True,
        ),
        panel(
            3,
            "Waiting per host (stacked)",
            [target(f"sum by (host) (aioconnpool_waiting{{{SEL}}})", "{{host}}", "A")],
            x=16,
            y=0,
            w=8,
            stacked=True,
            description="Requests queued for a connection.",
        ),
        panel(
            4,
            "Pool: acquired, idle, connecting, waiting",
            [
                target(f"sum(aioconnpool_pool_{g}{{{POOL}}})", g, ref)
                for g, ref in (
                    ("acquired", "A"),
                    ("idle", "B"),
                    ("connecting", "C"),
                    ("waiting", "D"),
                )
            ]
            + [target(f"sum(aioconnpool_pool_limit{{{POOL}}})", "limit", "E")],
            x=0,
            y=8,
        ),
        panel(
            5,
            "Wait for a connection: p50 and p99",
            [quantile("0.50", "wait_time", "A"), quantile("0.99", "wait_time", "B")],
            x=12,
            y=8,
            unit="s",
            description="From the wait_time histogram's buckets.",
        ),
        panel(
            6,
            "Connect and hold time: p50 and p99",
            [
                quantile("0.50", "connect_time", "A"),
                quantile("0.99", "connect_time", "B"),
                quantile("0.50", "hold_time", "C"),
                quantile("0.99", "hold_time", "D"),
            ],
            x=0,
            y=16,
            unit="s",
        ),
        panel(
            7,
            "Requests and new connections per second",
            [
                target(
                    f"sum(rate(aioconnpool_pool_requests_total{{{POOL}}}[$__rate_interval]))",
                    "requests",
                    "A",
                ),
                target(
                    f"sum(rate(aioconnpool_pool_created_total{{{POOL}}}[$__rate_interval]))",
                    "created",
                    "B",
                ),
                target(
                    f"sum(rate(aioconnpool_pool_reused_total{{{POOL}}}[$__rate_interval]))",
                    "reused",
                    "C",
                ),
            ],
            x=12,
            y=16,
            unit="reqps",
        ),
        panel(
            8,
            "How acquisitions ended (per second)",
            [
                target(
                    "sum by (how) (rate(aioconnpool_pool_released_total"
                    f"{{{POOL}}}[$__rate_interval]))",
                    "{{how}}",
                    "A",
                )
            ],
            x=0,
            y=24,
            stacked=True,
        ),
        panel(
            9,
            "Why connections closed (per second)",
            [
                target(
                    "sum by (reason) (rate(aioconnpool_pool_closed_total"
                    f"{{{POOL}}}[$__rate_interval]))",
                    "{{reason}}",
                    "A",
                )
            ],
            x=12,
            y=24,
            stacked=True,
        ),
        panel(
            10,
            "Rejected, timed out, connect errors (per second)",
            [
                target(
                    f"sum(rate(aioconnpool_pool_{c}_total{{{POOL}}}[$__rate_interval]))",
                    c.replace("_", " "),
                    ref,
                )
                for c, ref in (
                    ("rejected", "A"),
                    ("wait_timeouts", "B"),
                    ("connect_errors", "C"),
                )
            ],
            x=0,
            y=32,
        ),
        panel(
            11,
            "Requests per second per host",
            [
                target(
                    "sum by (host) (rate(aioconnpool_requests_total"
                    f"{{{SEL}}}[$__rate_interval]))",
                    "{{host}}",
                    "A",
                )
            ],
            x=12,
            y=32,
            unit="reqps",
        ),
        panel(
            12,
            "Politeness: waiting on pacing, paused hosts, pauses",
            [
                target(
                    f"sum(aioconnpool_pool_pacing_waiting{{{POOL}}})",
                    "waiting on pacing",
                    "A",
                ),
                target(
                    f"sum by (host, reason) (aioconnpool_paused{{{SEL}}})",
                    "paused: {{host}} ({{reason}})",
                    "B",
                ),
                target(
                    f"sum(increase(aioconnpool_pool_pauses_total{{{POOL}}}"
                    "[$__rate_interval]))",
                    "pauses asked for",
                    "C",
                ),
            ],
            x=0,
            y=40,
            description="Requests waiting out a host's delay_per_host / "
            "host_delays or a pause (they hold no slot), the hosts paused now "
            "(pause_host, backoff_middleware's 429/503) and new pauses.",
        ),
        panel(
            13,
            "Adaptive limit per host",
            [
                target(
                    f"max by (host) (aioconnpool_adaptive_limit{{{SEL}}})",
                    "{{host}}",
                    "A",
                )
            ],
            x=12,
            y=40,
            description='limit_per_host="auto" or AdaptiveLimit: each host\'s '
            "learned limit (aioconnpool_adaptive_gradient and "
            "aioconnpool_adaptive_min_rtt_seconds tell why).",
        ),
    ]

    def variable(name: str, query: str, label: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": query, "refId": name},
            "definition": query,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "refresh": 2,
            "sort": 1,
        }

    return {
        "title": "aioconnpool",
        "uid": "aioconnpool",
        "description": "PoolConnector pools, from aioconnpool.prometheus.",
        "tags": ["aioconnpool", "aiohttp"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                variable(
                    "connector",
                    "label_values(aioconnpool_pool_limit, connector)",
                    "connector",
                ),
                variable(
                    "host",
                    'label_values(aioconnpool_acquired{connector=~"$connector"}, host)',
                    "host",
                ),
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    (HERE / "aioconnpool.json").write_text(render())
