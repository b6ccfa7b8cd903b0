"""The peer suite: aiohttp's own client tests, run with ``PoolConnector``.

``make peer`` runs this script with the project's interpreter. It

1. reads the aiohttp version installed there, downloads that version's sdist
   from PyPI (``pip download --no-binary :all: --no-deps``) into
   ``.peer-cache/`` and extracts its ``tests/``, ``pytest.ini`` and
   ``requirements/`` (not its ``aiohttp/``: the tests must import the
   installed aiohttp);
2. builds ``.peer-venv`` with that aiohttp, what aiohttp's tests need (pinned
   by the sdist's own ``requirements/constraints.txt``) and this project,
   editable; the project's ``.venv`` is left alone;
3. runs the chosen test files (``FILES``) on pyloop and uvloop twice: as they
   are (baseline) and with ``swap_plugin`` making ``PoolConnector`` the
   ``TCPConnector`` (swapped), each run recording one outcome per test id
   (``record_plugin``);
4. compares the two per test id and writes ``.peer-cache/report.md`` and
   ``report.json``.

It fails when a test that passes on the baseline does not pass swapped,
unless ``peer/expected.toml`` lists that id with its reason; when the swap
did not take effect (no ``PoolConnector`` created in a file, or a plain
``TCPConnector`` created); or when a file collected no tests.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "peer"
CACHE = ROOT / ".peer-cache"
VENV = ROOT / ".peer-venv"
EXPECTED = PEER / "expected.toml"

FILES = (
    "test_client_functional.py",
    "test_client_session.py",
    "test_client_ws_functional.py",
    "test_proxy_functional.py",
    "test_client_middleware.py",
    "test_client_middleware_digest_auth.py",
    "test_client_ws.py",
    "test_proxy.py",
    "test_test_utils.py",
    "test_web_functional.py",
    "test_web_sendfile_functional.py",
)
"""aiohttp's test files that drive a ``TCPConnector`` (directly or through
``ClientSession``). Files that only test request/response objects with mocks
(``test_client_request.py``, ``test_client_response.py``...) never create a
connector, and ``test_connector.py`` tests ``TCPConnector``'s own internals."""

LOOPS = ("pyloop", "uvloop")

WANTED = re.compile(r"[^/]+/(tests/|requirements/|pytest\.ini$|README\.rst$)")
"""What is extracted from the sdist: the tests, their configuration and
requirements, and the README one of them serves; never ``aiohttp/``."""

TEST_REQUIREMENTS = (
    "pytest",
    "pytest-mock",
    "pytest-timeout",
    "trustme",
    "uvloop",
    "proxy.py",
    "freezegun",
    "blockbuster",
    "isal",
    "zlib-ng",
    "brotli",
    "aiodns",
    "coverage",
)
"""What aiohttp's ``tests/conftest.py`` and the chosen files import (see the
sdist's ``requirements/test-common.in`` and ``base.in``); the versions come
from its ``requirements/constraints.txt``."""

PASSED = "passed"


def log(message: str) -> None:
    print(f"peer: {message}", flush=True)


def run(cmd: Sequence[str | Path], **kwargs: object) -> None:
    log(" ".join(str(part) for part in cmd))
    subprocess.run([str(part) for part in cmd], check=True, **kwargs)  # type: ignore[call-overload]


# ------------------------------------------------------------------ preparing


def installed_aiohttp() -> str:
    return importlib.metadata.version("aiohttp")


def fetch_sdist(version: str) -> Path:
    """The extracted tests of aiohttp ``version``'s sdist, downloaded once."""
    target = CACHE / f"aiohttp-{version}"
    stamp = target / ".extracted"
    if stamp.exists() and stamp.read_text() == WANTED.pattern:
        return target
    downloads = CACHE / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / f"aiohttp-{version}.tar.gz"
    if not archive.exists():
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"aiohttp=={version}",
                "-d",
                downloads,
            ]
        )
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if WANTED.match(m.name)]
        for member in members:
            member.name = member.name.split("/", 1)[1]
        if sys.version_info >= (3, 12):
            tar.extractall(target, members=members, filter="data")
        else:
            tar.extractall(target, members=members)  # names checked above
    stamp.write_text(WANTED.pattern)
    return target


def build_venv(version: str, sdist: Path) -> Path:
    """``.peer-venv`` with aiohttp ``version``, the test tools and the project."""
    python = VENV / "bin" / "python"
    constraints = sdist / "requirements" / "constraints.txt"
    spec = [f"aiohttp=={version}", *TEST_REQUIREMENTS]
    digest = hashlib.sha256(
        "\n".join([*spec, constraints.read_text(), sys.version]).encode()
    ).hexdigest()
    stamp = VENV / ".installed"
    if stamp.exists() and stamp.read_text() == digest:
        return python
    if not python.exists():
        run([sys.executable, "-m", "venv", VENV])
    run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    run([python, "-m", "pip", "install", "--quiet", "-c", constraints, *spec])
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", ROOT])
    stamp.write_text(digest)
    return python


# ------------------------------------------------------------------- running


@dataclass(frozen=True)
class RunResult:
    mode: str
    outcomes: dict[str, str]
    durations: dict[str, float]
    seconds: float
    swap: dict[str, dict[str, int]] | None


def run_suite(
    python: Path,
    sdist: Path,
    mode: str,
    targets: Sequence[str],
    loops: Sequence[str],
    *,
    swap: bool,
) -> RunResult:
    """Run ``targets`` (paths or test ids under ``tests/``) in ``.peer-venv``."""
    out = CACHE / "runs"
    out.mkdir(parents=True, exist_ok=True)
    record = out / f"{mode}.json"
    swap_report = out / f"{mode}-swap.json"
    for stale in (record, swap_report):
        stale.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PEER)
    env["PEER_RECORD"] = str(record)
    env["PEER_SWAP_REPORT"] = str(swap_report)
    env.pop("PYTHONDEVMODE", None)
    plugins = ["-p", "record_plugin", "-p", "no:aioconnpool"]
    if swap:
        plugins += ["-p", "swap_plugin"]
    cmd: list[str | Path] = [
        python,
        "-m",
        "pytest",
        "-o",
        "addopts=",
        "-p",
        "no:cacheprovider",
        *plugins,
        "-m",
        "not dev_mode and not autobahn and not internal",
        "--strict-markers",
        "-q",
        "--no-header",
        "-rfE",
        "--tb=line",
        f"--aiohttp-loop={','.join(loops)}",
        *[f"tests/{target}" for target in targets],
    ]
    started = time.monotonic()
    log(f"{mode} run: {len(targets)} targets on {', '.join(loops)}")
    # A failing test is data here, not an error: only the record counts.
    subprocess.run([str(part) for part in cmd], cwd=sdist, env=env, check=False)
    seconds = time.monotonic() - started
    if not record.exists():
        raise SystemExit(f"peer: the {mode} run wrote no results ({record})")
    data = json.loads(record.read_text())
    counted = json.loads(swap_report.read_text()) if swap_report.exists() else None
    return RunResult(mode, data["outcomes"], data["durations"], seconds, counted)


# ---------------------------------------------------------------- comparing


def load_expected(path: Path = EXPECTED) -> dict[str, str]:
    """``{test id: reason}`` from ``expected.toml`` (``[[difference]]`` tables
    with ``id`` and ``reason``; ``id`` may end in ``[*]`` for every loop)."""
    try:  # Python 3.11+; the runner's own interpreter may be 3.10
        tomllib: Any = importlib.import_module("tomllib")
    except ImportError:
        raise SystemExit("peer: the runner needs Python 3.11 or newer") from None
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    expected: dict[str, str] = {}
    for entry in data.get("difference", []):
        test_id, reason = entry.get("id"), entry.get("reason")
        if not isinstance(test_id, str) or not isinstance(reason, str):
            raise SystemExit(f"peer: {path}: each difference needs an id and a reason")
        if not reason.strip() or "\n" in reason.strip():
            raise SystemExit(f"peer: {path}: {test_id}: give the reason in one line")
        if test_id in expected:
            raise SystemExit(f"peer: {path}: {test_id} is listed twice")
        expected[test_id] = reason.strip()
    return expected


def expected_reason(test_id: str, expected: Mapping[str, str]) -> str | None:
    if test_id in expected:
        return expected[test_id]
    base = test_id.split("[", 1)[0]
    return expected.get(f"{base}[*]")


def loop_of(test_id: str) -> str:
    params = test_id.partition("[")[2]
    for loop in LOOPS:
        if re.search(rf"(^|-){loop}(-|\]$)", params):
            return loop
    return "no loop"


def file_of(test_id: str) -> str:
    return test_id.split("::", 1)[0].removeprefix("tests/")


@dataclass
class Comparison:
    regressions: dict[str, str]
    """Passed on the baseline, not swapped, not listed: ``{id: outcome}``."""
    intended: dict[str, tuple[str, str]]
    """Listed and differing: ``{id: (outcome, reason)}``."""
    stale: list[str]
    """Listed, but the test passed swapped (or passes on neither)."""
    improved: list[str]
    """Failed on the baseline, passed swapped."""
    missing: list[str]
    """Passed on the baseline, absent from the swapped run."""
    flaky: dict[str, str] = field(default_factory=dict)
    """Failed swapped, then passed when run again on its own: ``{id: outcome}``."""


def compare(
    baseline: Mapping[str, str], swapped: Mapping[str, str], expected: Mapping[str, str]
) -> Comparison:
    result = Comparison({}, {}, [], [], [])
    listed_and_differing: set[str] = set()
    for test_id, before in sorted(baseline.items()):
        after = swapped.get(test_id)
        if after is None:
            if before == PASSED:
                result.missing.append(test_id)
            continue
        if before == PASSED and after != PASSED:
            reason = expected_reason(test_id, expected)
            if reason is None:
                result.regressions[test_id] = after
            else:
                result.intended[test_id] = (after, reason)
                listed_and_differing.add(test_id)
        elif before != PASSED and after == PASSED:
            result.improved.append(test_id)
    for listed in expected:
        pattern = listed.removesuffix("[*]")
        if not any(
            test_id == listed or test_id.split("[", 1)[0] == pattern
            for test_id in listed_and_differing
        ):
            result.stale.append(listed)
    return result


# ------------------------------------------------------------------ reporting


def tally(outcomes: Mapping[str, str], files: Iterable[str]) -> dict[str, Counter[str]]:
    """``{"file / loop": Counter(outcome)}`` plus a ``"total"`` row."""
    rows: dict[str, Counter[str]] = {}
    for name in files:
        for loop in (*LOOPS, "no loop"):
            rows[f"{name} / {loop}"] = Counter()
    rows["total"] = Counter()
    for test_id, outcome in outcomes.items():
        row = f"{file_of(test_id)} / {loop_of(test_id)}"
        rows.setdefault(row, Counter())[outcome] += 1
        rows["total"][outcome] += 1
    return {row: counts for row, counts in rows.items() if counts}


def file_seconds(durations: Mapping[str, float]) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for test_id, spent in durations.items():
        name = file_of(test_id)
        seconds[name] = seconds.get(name, 0.0) + spent
    return seconds


def _counts(counts: Counter[str]) -> str:
    return ", ".join(f"{n:,} {outcome}" for outcome, n in sorted(counts.items()))


def write_report(
    version: str,
    *,
    baseline: RunResult,
    swapped: RunResult,
    comparison: Comparison,
    files: Sequence[str],
    problems: Sequence[str],
) -> Path:
    base_rows = tally(baseline.outcomes, files)
    swap_rows = tally(swapped.outcomes, files)
    base_seconds = file_seconds(baseline.durations)
    swap_seconds = file_seconds(swapped.durations)
    created = (swapped.swap or {}).get("created", {})
    readers: Counter[str] = Counter(
        file_of(test_id) for test_id in (swapped.swap or {}).get("view_reads", {})
    )
    lines = [
        f"# Peer suite: aiohttp {version}'s tests with PoolConnector",
        "",
        f"Python {sys.version.split()[0]}; baseline {baseline.seconds:.0f} s, "
        f"swapped {swapped.seconds:.0f} s (wall clock, collection included).",
        "",
        "| file / loop | baseline | swapped |",
        "|---|---|---|",
    ]
    for row in sorted(set(base_rows) | set(swap_rows), key=lambda r: (r == "total", r)):
        lines.append(
            f"| {row} | {_counts(base_rows.get(row, Counter()))} "
            f"| {_counts(swap_rows.get(row, Counter()))} |"
        )
    lines += [
        "",
        "| file | PoolConnectors created | tests reading _conns/_acquired "
        "| baseline s | swapped s |",
        "|---|---|---|---|---|",
    ]
    for name in files:
        lines.append(
            f"| {name} | {created.get(f'tests/{name}', 0):,} "
            f"| {readers[name]:,} "
            f"| {base_seconds.get(name, 0.0):.1f} | {swap_seconds.get(name, 0.0):.1f} |"
        )
    sections: list[tuple[str, list[str]]] = [
        ("Problems", list(problems)),
        (
            "Regressions (passed on the baseline, not swapped, not listed)",
            [f"`{i}`: {o}" for i, o in comparison.regressions.items()],
        ),
        (
            "Intended differences (peer/expected.toml)",
            [f"`{i}`: {o}. {r}" for i, (o, r) in comparison.intended.items()],
        ),
        (
            "Failed swapped once, passed when run again (not counted)",
            [f"`{i}`: {o}" for i, o in comparison.flaky.items()],
        ),
        ("Listed but not differing (stale entries)", comparison.stale),
        ("Missing from the swapped run", comparison.missing),
        ("Failed on the baseline, passed swapped", comparison.improved),
        (
            "Failed on the baseline (environment; not compared)",
            [i for i, o in sorted(baseline.outcomes.items()) if o == "failed"],
        ),
    ]
    for title, items in sections:
        lines += ["", f"## {title}: {len(items)}"]
        if items:
            lines += ["", *(f"- {item}" for item in items)]
    report = CACHE / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = {
        "aiohttp": version,
        "python": sys.version.split()[0],
        "seconds": {"baseline": baseline.seconds, "swapped": swapped.seconds},
        "baseline": {row: dict(c) for row, c in base_rows.items()},
        "swapped": {row: dict(c) for row, c in swap_rows.items()},
        "pool_connectors_created": created,
        "tests_reading_private_attributes": dict(readers),
        "regressions": comparison.regressions,
        "intended": {
            i: {"outcome": o, "reason": r} for i, (o, r) in comparison.intended.items()
        },
        "stale": comparison.stale,
        "missing": comparison.missing,
        "flaky": comparison.flaky,
        "improved": comparison.improved,
        "problems": list(problems),
    }
    (CACHE / "report.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return report


def swap_problems(swapped: RunResult, files: Sequence[str]) -> list[str]:
    """Why the swapped run does not prove anything, if it does not."""
    if swapped.swap is None:
        return ["the swap plugin wrote no report: was it loaded?"]
    problems = []
    created = swapped.swap.get("created", {})
    for name in files:
        if not created.get(f"tests/{name}"):
            problems.append(f"{name}: no PoolConnector created: the swap failed")
    for name, count in swapped.swap.get("plain", {}).items():
        problems.append(f"{name}: {count} plain TCPConnector created despite the swap")
    return problems


def collection_problems(baseline: RunResult, files: Sequence[str]) -> list[str]:
    seen = Counter(file_of(test_id) for test_id in baseline.outcomes)
    return [f"{name}: no test collected" for name in files if not seen[name]]


# ---------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", nargs="+", default=list(FILES), metavar="FILE")
    parser.add_argument("--loops", default=",".join(LOOPS))
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="compare the results of the last runs again without running them",
    )
    args = parser.parse_args(argv)
    files: list[str] = args.files
    loops = tuple(args.loops.split(","))
    expected = load_expected()
    version = installed_aiohttp()
    started = time.monotonic()
    sdist = fetch_sdist(version)
    python = build_venv(version, sdist)
    log(f"prepared in {time.monotonic() - started:.0f} s")
    if args.reuse:
        baseline, swapped = _load_run("baseline"), _load_run("swapped")
    else:
        baseline = run_suite(python, sdist, "baseline", files, loops, swap=False)
        swapped = run_suite(python, sdist, "swapped", files, loops, swap=True)
        _save_run(baseline)
        _save_run(swapped)
    comparison = compare(baseline.outcomes, swapped.outcomes, expected)
    if comparison.regressions and not args.reuse:
        # Timing-sensitive tests can fail once under load: a regression
        # counts only if it fails again when run again on its own.
        ids = [test_id.removeprefix("tests/") for test_id in comparison.regressions]
        retry = run_suite(python, sdist, "swapped-retry", ids, loops, swap=True)
        for test_id, outcome in retry.outcomes.items():
            if outcome == PASSED and test_id in comparison.regressions:
                comparison.flaky[test_id] = comparison.regressions.pop(test_id)
    problems = collection_problems(baseline, files) + swap_problems(swapped, files)
    report = write_report(
        version,
        baseline=baseline,
        swapped=swapped,
        comparison=comparison,
        files=files,
        problems=problems,
    )
    print(report.read_text(encoding="utf-8"))
    log(f"report: {report} (and report.json)")
    failed = bool(problems or comparison.regressions or comparison.missing)
    log("FAILED" if failed else "passed")
    return 1 if failed else 0


def _save_run(result: RunResult) -> None:
    (CACHE / "runs" / f"{result.mode}-summary.json").write_text(
        json.dumps(
            {
                "outcomes": result.outcomes,
                "durations": result.durations,
                "seconds": result.seconds,
                "swap": result.swap,
            }
        ),
        encoding="utf-8",
    )


def _load_run(mode: str) -> RunResult:
    path = CACHE / "runs" / f"{mode}-summary.json"
    if not path.exists():
        raise SystemExit(f"peer: no earlier {mode} run to reuse ({path})")
    data = json.loads(path.read_text(encoding="utf-8"))
    return RunResult(
        mode, data["outcomes"], data["durations"], data["seconds"], data["swap"]
    )


if __name__ == "__main__":
    sys.exit(main())
