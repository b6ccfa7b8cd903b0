"""The package's layers: public names where the docs say, and the import
contracts of ``pyproject.toml`` (import-linter) -- kept by the real tree, and
each broken by a copy of the tree with one forbidden import added."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "aioconnpool"

# Every public name, at the path the README and docs/api.md give for it.
# Written out, not read from __all__: moving a module must not move a name.
DOCUMENTED: dict[str, tuple[str, ...]] = {
    "aioconnpool": (
        "PoolConnector",
        "PoolKey",
        "PoolStats",
        "HostStats",
        "HostTable",
        "ConnectionInfo",
        "Histogram",
        "LeakInfo",
        "FleetStats",
        "FleetHostStats",
        "HostLimits",
        "AioConnPoolError",
        "PoolFullError",
        "PoolTimeoutError",
        "PacingDeadlineError",
        "HostStalledError",
        "backoff_middleware",
        "compiled_core",
        "BackoffMiddleware",
        "PoolClosedError",
        "PoolEvent",
        "Queued",
        "Dequeued",
        "Rejected",
        "ConnectStarted",
        "ConnectEnded",
        "ConnectFailed",
        "Acquired",
        "Released",
        "Closed",
        "LeakSuspected",
        "PacingQueued",
        "PacingDequeued",
        "PacingLate",
        "HostPaused",
        "HostResumed",
        "AdaptiveLimit",
        "LimitAdjusted",
        "COUNTER_NAMES",
        "RELEASE_HOWS",
        "CLOSE_REASONS",
        "SUPPORTED_RANGE",
        "__version__",
    ),
    "aioconnpool.prometheus": ("PoolCollector", "register", "unregister", "OTHER"),
    "aioconnpool.otel": ("Instrumentation", "instrument"),
    "aioconnpool.testing": (
        "LoopbackResolver",
        "RedisClusterServers",
        "RedisServer",
        "RedisServerError",
        "free_port",
    ),
    "aioconnpool.fleet": (
        "RedisFleet",
        "FleetUnavailableError",
        "FleetTimeoutError",
        "fleet_status",
        "FleetStatus",
        "FleetSessionStatus",
        "FleetHostStatus",
        "mask_url",
    ),
    "aioconnpool.robots": ("apply_robots",),
    "aioconnpool.pytest_plugin": (
        "DEFAULT_LEAK_THRESHOLD",
        "PoolGuard",
        "pool_connector",
        "pool_guard",
    ),
}


@pytest.mark.parametrize("module_name", sorted(DOCUMENTED))
def test_public_names_import_from_their_documented_path(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in DOCUMENTED[module_name] if not hasattr(module, name)]
    assert missing == []
    # Nothing public that the docs do not list either.
    assert set(module.__all__) == set(DOCUMENTED[module_name])


def test_the_command_and_the_plugin_are_registered() -> None:
    entry_points = importlib.metadata.entry_points()
    (command,) = entry_points.select(group="console_scripts", name="aioconnpool")
    assert callable(command.load())
    (plugin,) = entry_points.select(group="pytest11", name="aioconnpool")
    assert plugin.load() is importlib.import_module("aioconnpool.pytest_plugin")
    proc = subprocess.run(
        [sys.executable, "-m", "aioconnpool", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout


def _lint_imports(tree: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """Run import-linter over the package found in ``tree`` (its
    ``pyproject.toml`` holds the contracts; import-linter finds it in the
    working directory: the import-linter releases for Python 3.10 take no
    config path as an argument, the newer ones deprecate ``--config``)."""
    command = [
        sys.executable,
        "-c",
        "import sys; from importlinter.cli import lint_imports_command as c; "
        "sys.exit(c())",
        "--no-cache",
    ]
    for contract in contracts:
        command += ["--contract", contract]
    return subprocess.run(
        command,
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_import_contracts_hold() -> None:
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 3 kept, 0 broken." in proc.stdout


# One forbidden import each, as someone might add it by mistake.
BREAKS = {
    "the core imports asyncio": ("pure-core", "_core/ready.py", "import asyncio"),
    "the core imports aiohttp": ("pure-core", "_keys.py", "import aiohttp"),
    "the CLI reaches into the core": (
        "leaves-use-public-api",
        "cli/render.py",
        "from aioconnpool._core import PoolCore",
    ),
    "an exporter reads the glue": (
        "leaves-use-public-api",
        "prometheus.py",
        "from aioconnpool._aiohttp import connector",
    ),
    "the core imports the read side": (
        "layers",
        "_core/view.py",
        "from aioconnpool import _stats",
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_each_contract_can_fail(case: str, tmp_path: Path) -> None:
    contract, module, line = BREAKS[case]
    shutil.copytree(
        PACKAGE, tmp_path / "aioconnpool", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "aioconnpool" / module
    target.write_text(f"{target.read_text()}\n{line}  # noqa\n")
    proc = _lint_imports(tmp_path, contract)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "BROKEN" in proc.stdout
    assert "Contracts: 0 kept, 1 broken." in proc.stdout
    # Named at the line that was added.
    dotted = "aioconnpool." + module.removesuffix(".py").replace("/", ".")
    assert dotted in proc.stdout


_ASYNC_NODES = (ast.AsyncFunctionDef, ast.Await, ast.AsyncFor, ast.AsyncWith)


def _async_nodes(source: str) -> list[str]:
    return [
        f"line {node.lineno}: {type(node).__name__}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, _ASYNC_NODES)
    ]


def test_the_async_detector_finds_awaits() -> None:
    found = _async_nodes("async def f():\n    await g()\n")
    assert found == ["line 1: AsyncFunctionDef", "line 2: Await"]


CORE_FILES = sorted(
    [
        *(PACKAGE / "_core").glob("*.py"),
        PACKAGE / "_keys.py",
        PACKAGE / "_events.py",
        PACKAGE / "_histogram.py",
    ]
)


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_the_core_never_awaits(path: Path) -> None:
    assert _async_nodes(path.read_text()) == []
