"""The Grafana dashboard (``dashboards/grafana/aioconnpool.json``) queries
only what the Prometheus exporter writes: every metric name, and every label
the panels group or filter by, is checked against a real scrape of a pool
that served requests on loopback."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aioconnpool import PoolConnector
from aioconnpool.prometheus import PoolCollector

from .conftest import url

HERE = Path(__file__).resolve().parents[1] / "dashboards" / "grafana"
METRIC = re.compile(r"\baioconnpool_[a-z_]+")
GROUPED = re.compile(r"by \(([a-z_, ]+)\)")
MATCHED = re.compile(r"([a-z_]+)=~")


def load_builder() -> object:
    spec = importlib.util.spec_from_file_location("grafana_build", HERE / "build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_json_is_the_builders_output() -> None:
    builder = load_builder()
    assert (HERE / "aioconnpool.json").read_text() == builder.render()  # type: ignore[attr-defined]


async def test_every_query_names_what_the_exporter_writes(server: TestServer) -> None:
    # Pacing, a pause and adaptive limits on: their metrics are written only
    # for a pool that has them.
    connector = PoolConnector(limit_per_host="auto", delay_per_host=0.01)
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(3):
            async with session.get(url(server, "/small")) as resp:
                await resp.read()
            async with session.get(url(server, f"/status/{500 + i}")) as resp:
                await resp.read()
        connector.pause_host(url(server, "/small"), 30, reason="429")
        registry = CollectorRegistry()
        registry.register(PoolCollector({"api": connector}))
        scrape = generate_latest(registry).decode()
    written: set[str] = set()
    labels: set[str] = {"le"}
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            written.add(sample.name)
            labels.update(sample.labels)
    dashboard = json.loads((HERE / "aioconnpool.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [
        v["definition"] for v in dashboard["templating"]["list"] if "definition" in v
    ]
    assert len(queries) >= 20
    asked = {name for q in queries for name in METRIC.findall(q)}
    assert asked, queries
    assert asked - written == set(), sorted(asked - written)
    used = {
        label.strip()
        for q in queries
        for group in GROUPED.findall(q)
        for label in group.split(",")
    } | {label for q in queries for label in MATCHED.findall(q)}
    assert used - labels == set(), sorted(used - labels)
    # What the issue asks the dashboard to show.
    titles = " | ".join(p["title"] for p in dashboard["panels"])
    for needed in ("Acquired", "Idle", "Waiting", "p50 and p99", "ended", "closed"):
        assert needed in titles, needed
    assert "Rejected, timed out" in titles
    assert "Politeness" in titles
    assert "Adaptive limit" in titles
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"host"}
