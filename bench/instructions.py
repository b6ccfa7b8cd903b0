"""Machine instructions per request, deterministic: callgrind, not a clock.

The socket benchmarks time requests on a shared machine, where the same two
clients run back to back differ by up to 2x from pair to pair: they cannot
resolve a 5% difference in CPU. This counts the machine instructions the
client process executes per request instead, the same on every run.

Each client and workload runs ``bench/socket_workloads.py`` under
``valgrind --tool=callgrind`` twice, at ``--small`` and ``--large``
requests; the difference of the two totals divided by the difference of
the request counts is the cost of one request (start-up, imports, warm-up
and the server's start cancel out). One run without callgrind goes first,
so that a module edited since its last import is compiled outside the
count. The server is another process, which
callgrind does not follow: only the client is counted. Counting runs get a
server that keeps idle connections 10 minutes (``socket_workloads``), so
no reconnection is counted. String hashing is seeded (``--hash-seed``,
0 by default): with random seeds, the number of probes of dict lookups
moves a client's count by thousands of instructions from run to run.

With ``--functions K`` it also prints, per request, the K C functions whose
own cost differs most between the clients (``callgrind_annotate``): the
bytecode loop (``_PyEval_EvalFrameDefault``), allocation, the collector.

It takes about 1 minute per run at the default sizes (callgrind runs
Python about 50 times slower), so 8 runs for the default two clients and
two workloads. It is a diagnostic, not part of ``make bench``.

Usage::

    .venv/bin/python bench/instructions.py [--small 1000] [--large 4000]
        [--workloads hot,queued] [--clients aiohttp,aioconnpool]
        [--functions 15] [--force-close] [--output PATH]

``--force-close`` closes every connection after its request: each request
then opens one, the new-connection path a crawl over many hosts takes
(``--workloads hot --force-close``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE / "socket_workloads.py"

_SUMMARY = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)
_FUNCTION = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$")
_BUILD_DIR = re.compile(r"^.*/Python-[\d.]+/")
_CALLS = re.compile(r" \([\d,]+x\)$")


def instructions_of(out_file: Path) -> int:
    """The total instructions (``Ir``) of one callgrind output file."""
    match = _SUMMARY.search(out_file.read_text())
    if match is None:
        raise RuntimeError(f"no 'summary:' line in {out_file}")
    return int(match.group(1))


def by_function(out_file: Path) -> dict[str, int]:
    """Each function's own instructions (exclusive), from callgrind_annotate."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", str(out_file)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    costs: dict[str, int] = {}
    for line in text.splitlines():
        match = _FUNCTION.match(line)
        if match is None or ":" not in match.group(2):
            continue
        name = match.group(2).split(" [", 1)[0]
        if name.startswith("=>"):
            continue  # a call from the function above: in the callee's own cost
        name = _CALLS.sub("", name)  # "(3,200x)": calls differ between runs
        name = _BUILD_DIR.sub("", name)  # the interpreter's build directory
        costs[name] = costs.get(name, 0) + int(match.group(1).replace(",", ""))
    return costs


def run_once(
    workload: str,
    client: str,
    n: int,
    out_dir: Path,
    hash_seed: str,
    *,
    force_close: bool = False,
    warm_up: bool = False,
) -> Path:
    """One run under callgrind; returns its output file (``warm_up``: the
    same run without callgrind, which writes no file)."""
    # No time budget: callgrind runs Python about 50 times slower.
    spec: dict[str, Any] = {"workload": workload, "client": client, "port": 0, "n": n}
    spec["budget_s"] = 24 * 3600
    if force_close:
        spec["force_close"] = True
    out_file = out_dir / f"callgrind.{workload}.{client}.{n}"
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]
    if warm_up:
        # The same run without callgrind first: a module edited since its
        # last import is compiled again (and its .pyc written) by the first
        # process that imports it, which would count the compiler's
        # instructions in one of the two counted runs and not the other.
        valgrind = []
    done = subprocess.run(
        [*valgrind, sys.executable, str(WORKLOADS), json.dumps(spec)],
        check=False,  # its failure is reported below, with its stderr
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
    )
    result_lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not result_lines:
        raise RuntimeError(
            f"{workload}/{client} n={n} failed (rc {done.returncode}):\n"
            f"{done.stderr[-2000:]}"
        )
    result = json.loads(result_lines[-1])
    if result.get("status") != "ok" or result.get("errors"):
        raise RuntimeError(f"{workload}/{client} n={n}: {result}")
    return out_file


def measure(
    workload: str,
    client: str,
    *,
    small: int,
    large: int,
    functions: int,
    out_dir: Path,
    hash_seed: str,
    force_close: bool = False,
) -> dict[str, Any]:
    run_once(
        workload,
        client,
        small,
        out_dir,
        hash_seed,
        force_close=force_close,
        warm_up=True,
    )
    first = run_once(
        workload, client, small, out_dir, hash_seed, force_close=force_close
    )
    second = run_once(
        workload, client, large, out_dir, hash_seed, force_close=force_close
    )
    per_request = (instructions_of(second) - instructions_of(first)) / (large - small)
    row: dict[str, Any] = {"instructions_per_request": per_request}
    if functions:
        before, after = by_function(first), by_function(second)
        row["by_function"] = {
            name: (after.get(name, 0) - before.get(name, 0)) / (large - small)
            for name in set(before) | set(after)
        }
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=4000)
    parser.add_argument("--workloads", default="hot,queued")
    parser.add_argument("--clients", default="aiohttp,aioconnpool")
    parser.add_argument("--functions", type=int, default=0)
    parser.add_argument(
        "--hash-seed",
        default="0",
        help="PYTHONHASHSEED of the runs (default 0): string hashing decides "
        "how many probes a dict lookup takes, which moves a client's count by "
        "up to 4%% from one random seed to another",
    )
    parser.add_argument(
        "--force-close",
        action="store_true",
        help="close every connection after its request (force_close=True): "
        "each request opens a connection, the path of a crawl over many hosts",
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if not 0 < args.small < args.large:
        parser.error(f"need 0 < --small < --large, got {args.small}, {args.large}")
    if shutil.which("valgrind") is None:
        parser.error("needs valgrind: apt-get install -y valgrind")
    clients = args.clients.split(",")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads.split(","):
            rows = results[workload] = {}
            for client in clients:
                rows[client] = measure(
                    workload,
                    client,
                    small=args.small,
                    large=args.large,
                    functions=args.functions,
                    out_dir=Path(tmp),
                    hash_seed=args.hash_seed,
                    force_close=args.force_close,
                )
                print(
                    f"{workload:7} {client:12} "
                    f"{rows[client]['instructions_per_request']:>12,.0f} "
                    "instructions per request",
                    flush=True,
                )
            if len(clients) == 2:
                a, b = (rows[c]["instructions_per_request"] for c in clients)
                print(f"{workload:7} {clients[1]} / {clients[0]}: {b / a:.4f}")
                if args.functions:
                    fa, fb = (rows[c]["by_function"] for c in clients)
                    diffs = sorted(
                        set(fa) | set(fb),
                        key=lambda f: -abs(fb.get(f, 0) - fa.get(f, 0)),
                    )
                    for name in diffs[: args.functions]:
                        print(
                            f"    {fa.get(name, 0):>10,.0f} {fb.get(name, 0):>10,.0f}"
                            f"  {fb.get(name, 0) - fa.get(name, 0):>+10,.0f}  {name}"
                        )
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
