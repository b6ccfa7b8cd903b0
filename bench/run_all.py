"""Run every benchmark in turn (``make bench``).

Each script runs in a process of its own, one after the other, with the same
mode flags; each prints its table and writes its JSON to ``bench/results/``
(unless ``--no-write``). Then ``charts.py`` draws the docs' charts from those
results (``docs/img/bench-*.svg``). The default mode takes about 18 minutes on a 2-core
machine, ``--quick`` a few minutes, ``--tiny`` seconds.

Usage::

    .venv/bin/python bench/run_all.py [--quick] [--tiny] [--no-write] [--verbose]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from harness.cli import switches_on

HERE = Path(__file__).resolve().parent
SCRIPTS = ("core_scaling.py", "sockets.py", "fds.py", "fleet.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every aioconnpool benchmark.")
    for flag, text in (
        ("--quick", "smaller sizes, fewer repeats"),
        ("--tiny", "a smoke test of each benchmark (seconds)"),
        ("--no-write", "do not write the JSON results"),
        ("--verbose", "print progress to stderr"),
    ):
        parser.add_argument(flag, action="store_true", help=text)
    args = parser.parse_args(argv)
    flags = switches_on(args)
    failed: list[str] = []
    for name in SCRIPTS:
        command = [sys.executable, str(HERE / name), *flags]
        print(f"$ {' '.join(command)}", flush=True)
        started = time.perf_counter()
        code = subprocess.run(command, check=False).returncode
        print(
            f"({name}: exit {code}, {time.perf_counter() - started:.0f} s)\n",
            flush=True,
        )
        if code:
            failed.append(name)
    if not args.no_write:
        # The docs' charts, from the results just written.
        code = subprocess.run(
            [sys.executable, str(HERE / "charts.py")], check=False
        ).returncode
        if code:
            failed.append("charts.py")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
