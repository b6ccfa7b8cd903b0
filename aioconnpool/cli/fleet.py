"""``aioconnpool fleet status REDIS_URL --name NAME``: the fleet table.

Reads the whole fleet from Redis (``aioconnpool.fleet.fleet_status``) and
prints its sessions (process, machine, lease left) and hosts (limit, slots
held per session, requests waiting), or with ``--json`` the same as JSON.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ..fleet import FleetStatus

__all__ = ["fleet_status_command", "format_fleet_status"]


def format_fleet_status(status: FleetStatus) -> str:
    """The fleet as a plain-text table."""
    lines = [f"fleet {status.name!r} at {status.address}"]
    if status.epoch is None:
        lines.append("  no such fleet here (no process has used it yet)")
        return "\n".join(lines) + "\n"
    grace = (
        f", grace period: {status.grace_left:.1f} s left" if status.grace_left else ""
    )
    lines.append(f"  epoch {status.epoch}{grace}")
    lines.append(f"  sessions: {len(status.sessions)}")
    if status.sessions:
        header = f"{'session':<40} {'pid':>7} {'machine':<20} {'lease left':>10}"
        lines.append(f"    {header} {'age':>9}")
        for s in status.sessions:
            age = "-" if s.age is None else f"{s.age:.1f} s"
            lease = f"{s.lease_left:.1f} s" if s.lease_left > 0 else "expired"
            lines.append(
                f"    {s.session:<40} {s.pid or '-':>7} {s.hostname:<20} "
                f"{lease:>10} {age:>9}"
            )
    shown = len(status.hosts)
    more = f" (the {shown} most recently used)" if shown < status.hosts_total else ""
    lines.append(f"  hosts: {status.hosts_total}{more}")
    if status.hosts:
        lines.append(
            f"    {'host':<40} {'limit':>5} {'held':>5} {'waiting':>7}  holders"
        )
        for h in status.hosts:
            holders = ", ".join(f"{s}={n}" for s, n in sorted(h.holders.items()))
            lines.append(
                f"    {h.host:<40} {h.limit:>5} {h.held:>5} {h.waiting:>7}  {holders}"
            )
    return "\n".join(lines) + "\n"


def fleet_status_command(
    url: str,
    name: str,
    *,
    as_json: bool,
    max_hosts: int,
    out: TextIO,
    err: TextIO,
    cluster: bool = False,
) -> int:
    """Run ``aioconnpool fleet status``; the exit status."""
    try:
        from ..fleet import fleet_status, mask_url
    except ImportError as exc:
        err.write(f"aioconnpool fleet: {exc}\n")
        return 2
    try:
        status = asyncio.run(
            fleet_status(url, name=name, max_hosts=max_hosts, cluster=cluster)
        )
    except (ValueError, TypeError) as exc:
        err.write(f"aioconnpool fleet status: {exc}\n")
        return 2
    except Exception as exc:  # redis' connection and timeout errors
        err.write(
            f"aioconnpool fleet status: cannot read fleet {name!r} from "
            f"{mask_url(url)}: {type(exc).__name__}: {exc}\n"
        )
        return 1
    if as_json:
        out.write(json.dumps(status.to_dict(), indent=2) + "\n")
    else:
        out.write(format_fleet_status(status))
    return 0
