"""The ``aioconnpool`` command (also ``python -m aioconnpool``).

Subcommands:

``demo``
    crawl an embedded loopback server through a ``PoolConnector`` and print
    what the pool saw (see :mod:`aioconnpool._demo`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aioconnpool",
        description="aioconnpool: an exact, observable aiohttp connection pool.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    demo = commands.add_parser(
        "demo",
        help="crawl an embedded loopback server and print the pool's report",
        description=(
            "Start an aiohttp server on 127.0.0.1 playing several virtual hosts "
            "(fast, slow, Connection: close, 1 MiB bodies, 500 errors), crawl it "
            "through a PoolConnector(limit=20, limit_per_host=4) and print the "
            "pool's per-host report and socket reuse. No traffic leaves the machine."
        ),
    )
    demo.add_argument(
        "--requests",
        type=_positive_int,
        default=200,
        metavar="N",
        help="how many requests to make (default 200)",
    )
    demo.add_argument(
        "--seed", type=int, default=1, help="random seed of the request mix (default 1)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import DemoOptions, run_demo

        options = DemoOptions(requests=args.requests, seed=args.seed)
        try:
            return asyncio.run(run_demo(options, sys.stdout))
        except BrokenPipeError:
            # The reader went away (piped into ``head``...): silence the
            # flush at exit, as the Python documentation recommends.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 1
    raise AssertionError(f"unhandled command {args.command!r}")  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
