"""What the benchmark scripts share on the command line and in their JSON.

``core_scaling.py`` and ``sockets.py`` take the same ``--quick`` / ``--tiny``
/ ``--no-write`` / ``--output`` / ``--verbose`` flags (``run_all.py`` passes
them on to both), pick their sizes from them the same way, start their JSON
record with the same fields and write it the same way.

Each script describes its modes as a triple of its own configs, ``(FULL,
QUICK, TINY)``; the quick and tiny ones say what their flag does
(``flag_help``, shown by ``--help``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .machine import describe

__all__ = [
    "SWITCHES",
    "ModeConfig",
    "mode_parser",
    "pick_mode",
    "progress_printer",
    "publish",
    "run_record",
    "switches_on",
    "write_json",
]

# The mode flags that take no value: what run_all.py passes on to each script.
SWITCHES = ("--quick", "--tiny", "--no-write", "--verbose")


class ModeConfig(Protocol):
    """What a script's config for one mode must have."""

    @property
    def flag_help(self) -> str:
        """What the flag that picks this mode does, for ``--help``."""
        ...


Mode = TypeVar("Mode", bound=ModeConfig)


def mode_parser(
    description: str, results: Path, modes: tuple[Mode, Mode, Mode]
) -> argparse.ArgumentParser:
    """A parser with the flags every benchmark script takes, for ``modes``
    (full, quick, tiny); ``results`` is the default output file. A script
    adds its own flags after these."""
    _, quick, tiny = modes
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick.flag_help)
    parser.add_argument("--tiny", action="store_true", help=tiny.flag_help)
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
    return parser


def switches_on(args: argparse.Namespace) -> list[str]:
    """The :data:`SWITCHES` set in ``args``, as command-line words."""
    return [
        flag
        for flag in SWITCHES
        if getattr(args, flag.removeprefix("--").replace("-", "_"))
    ]


def pick_mode(args: argparse.Namespace, modes: tuple[Mode, Mode, Mode]) -> Mode:
    """Which of ``modes`` (full, quick, tiny) the flags ask for: ``--tiny``
    wins over ``--quick``."""
    full, quick, tiny = modes
    return tiny if args.tiny else quick if args.quick else full


def progress_printer(args: argparse.Namespace) -> Callable[[str], None]:
    """Prints progress to stderr with ``--verbose``, and nothing without."""

    def progress(msg: str) -> None:
        if args.verbose:
            print(f"... {msg}", file=sys.stderr, flush=True)

    return progress


def run_record(benchmark: str, script: str, argv: list[str] | None) -> dict[str, Any]:
    """The first fields of every results file: the benchmark, when, the
    command (``script`` run with ``argv``, or this process's own command line)
    and the machine it ran on."""
    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "command": [sys.executable, *(sys.argv if argv is None else [script, *argv])],
        **describe(),
    }


def publish(args: argparse.Namespace, results: dict[str, Any], text: str) -> None:
    """Print the report ``text``; write ``results`` unless ``--no-write``."""
    print(text)
    if not args.no_write:
        write_json(args.output, results)
        print(f"\nresults written to {args.output}")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
