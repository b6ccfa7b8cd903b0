"""What a benchmark ran on: interpreter, platform, load, versions, sockets.

Recorded with every result, so a figure can be read against the machine
that produced it.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

__all__ = ["describe", "load_average", "tcp_time_wait_sockets", "versions"]


def describe() -> dict[str, Any]:
    """The interpreter, its implementation, the platform, the CPU count and
    whether aioconnpool's core ran compiled (``compiled_core()``)."""
    from aioconnpool import compiled_core

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "aioconnpool_compiled_core": compiled_core(),
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or ``None`` where unknown."""
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def versions(*packages: str) -> dict[str, str]:
    """The installed version of each of ``packages``."""
    return {name: metadata.version(name) for name in packages}


def tcp_time_wait_sockets(path: str = "/proc/net/sockstat") -> int | None:
    """TCP sockets in TIME_WAIT on this host (Linux), or ``None``.

    Recorded before every run: tens of thousands of them (left by earlier
    runs that closed their connections first) make each ``connect()``
    search longer for a free local port, which slows the rows that open a
    connection per request, such as the force-close floor.
    """
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("TCP:"):
                    fields = line.split()
                    return int(fields[fields.index("tw") + 1])
    except (OSError, ValueError, IndexError):
        return None
    return None
