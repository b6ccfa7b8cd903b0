"""What the benchmark scripts share: their mode flags and how they write JSON.

``core_scaling.py`` and ``sockets.py`` take the same ``--quick`` / ``--tiny``
/ ``--no-write`` / ``--output`` / ``--verbose`` flags (``run_all.py`` passes
them on to both) and write their results the same way.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["add_mode_flags", "write_json"]


def add_mode_flags(
    parser: argparse.ArgumentParser, *, quick: str, tiny: str, results: Path
) -> None:
    """Add the flags every benchmark script takes; ``quick`` and ``tiny`` say
    what those modes do, ``results`` is the default output file."""
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--tiny", action="store_true", help=tiny)
    parser.add_argument(
        "--no-write", action="store_true", help=f"do not write {results.name}"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=results,
        help=f"where to write the JSON (default: bench/results/{results.name})",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="print progress to stderr"
    )


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
