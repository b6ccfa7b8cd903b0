"""The pieces of the benchmarks' plain-text reports.

Tables of right-aligned columns, ratios (``1.23x``), spreads (``min-max``),
byte sizes, and the title line that names the run's mode and machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["ratio", "size", "spread", "table", "title"]


def title(benchmark: str, results: dict[str, Any]) -> str:
    """The report's first line: the benchmark, its mode, the machine."""
    return (
        f"aioconnpool {benchmark} ({results['config']['mode']} mode) -- Python "
        f"{results['python']}, {results['platform']}, {results['cpu_count']} CPUs"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``rows`` under ``headers``, every column right-aligned, indented."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )
    return "\n".join("  " + line for line in lines)


def ratio(value: float | None, base: float = 1.0) -> str:
    """``value / base`` as ``1.23x``; ``-`` for no value or a zero base."""
    return f"{value / base:.2f}x" if value is not None and base else "-"


def spread(values: Sequence[float], spec: str = ",.0f") -> str:
    """The lowest and the highest of ``values``: ``min-max``."""
    return f"{min(values):{spec}}-{max(values):{spec}}"


def size(n: float) -> str:
    """A byte count in B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
