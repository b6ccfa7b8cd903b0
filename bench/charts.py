"""Charts of the latest ``make bench`` results, for the docs.

Reads ``bench/results/sockets.json`` and ``bench/results/fleet.json`` and
writes SVG files to ``docs/img/`` (``make bench`` runs it last):

* ``bench-hosts.svg`` -- req/s against the number of hosts of a crawl, for
  aiohttp and aioconnpool (and httpx when it ran), with the force-close
  floor measured in the same run;
* ``bench-queued.svg`` -- req/s of the queued one-host sweep against N;
* ``bench-fairness.svg`` -- the fleet's fairness: the latency distribution
  (CDF) of each of four processes contending for one host.

A chart whose results are missing is left out (with a line saying so).
Medians of the recorded runs; the figures and their ranges are in the JSON
and the tables of ``docs/performance.md``.

Usage::

    .venv/bin/python bench/charts.py [--results DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
COLORS = {
    "aiohttp": "#6a737d",
    "aioconnpool": "#0366d6",
    "httpx": "#e36209",
    "floor": "#b31d28",
}
# Reproducible SVG: no date, fixed ids.
plt.rcParams["svg.hashsalt"] = "aioconnpool"
plt.rcParams["svg.fonttype"] = "none"
METADATA = {"Date": None}


def _median_rps(client: dict[str, Any]) -> float | None:
    rates = [r["req_per_s"] for r in client.get("runs", []) if r.get("status") == "ok"]
    return statistics.median(rates) if rates else None


def _number(row: str) -> int:
    return int(row.split("=", 1)[1].replace(",", ""))


def _series(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        if "=" not in row["row"]:
            continue
        for name, client in row["clients"].items():
            rps = _median_rps(client)
            if rps is not None:
                series.setdefault(name, []).append((_number(row["row"]), rps))
    return series


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata=METADATA, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")


def _rps_chart(
    rows: list[dict[str, Any]], *, xlabel: str, title: str, path: Path
) -> None:
    """req/s of each client against the rows' number (``K=``, ``N=``), with
    the force-close floor when the rows have one."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name, points in _series(rows).items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=name, color=COLORS.get(name))
    floor = next((r for r in rows if r["row"] == "floor"), None)
    if floor is not None:
        rates = [_median_rps(c) for c in floor["clients"].values()]
        known = [r for r in rates if r is not None]
        if known:
            ax.axhline(
                statistics.median(known),
                linestyle="--",
                color=COLORS["floor"],
                label="floor (every request a new connection)",
            )
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("requests per second")
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    _save(fig, path)


def hosts_chart(sockets: dict[str, Any], out: Path) -> None:
    _rps_chart(
        sockets["sections"]["crawl"],
        xlabel="hosts in the crawl (log scale)",
        title=f"A crawl over many hosts ({sockets['date'][:10]})",
        path=out / "bench-hosts.svg",
    )


def queued_chart(sockets: dict[str, Any], out: Path) -> None:
    _rps_chart(
        sockets["sections"]["queued"],
        xlabel="requests queued on one host (N, log scale)",
        title=f"The queued sweep ({sockets['date'][:10]})",
        path=out / "bench-queued.svg",
    )


def fairness_chart(fleet: dict[str, Any], out: Path) -> bool:
    fairness = (fleet.get("processes") or {}).get("fairness") or {}
    per_process = fairness.get("per_process") or []
    if not per_process or not all(p.get("latency_cdf_ms") for p in per_process):
        return False
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    percents = list(range(101))
    for i, p in enumerate(per_process):
        ax.plot(p["latency_cdf_ms"], percents, label=f"process {i + 1}")
    ax.set_xlabel("request latency, ms (mostly the wait for a fleet slot)")
    ax.set_ylabel("% of requests")
    ax.set_title(
        f"Fleet fairness: {len(per_process)} processes, one host, fleet limit "
        f"{fairness.get('fleet_limit')} ({fleet['date'][:10]})"
    )
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    _save(fig, out / "bench-fairness.svg")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "img")
    args = parser.parse_args(argv)
    sockets_path = args.results / "sockets.json"
    if sockets_path.exists():
        sockets = json.loads(sockets_path.read_text())
        hosts_chart(sockets, args.out)
        queued_chart(sockets, args.out)
    else:
        print(f"no {sockets_path}: the hosts and queued charts are left out")
    fleet_path = args.results / "fleet.json"
    if not fleet_path.exists() or not fairness_chart(
        json.loads(fleet_path.read_text()), args.out
    ):
        print(f"no fairness latencies in {fleet_path}: that chart is left out")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
