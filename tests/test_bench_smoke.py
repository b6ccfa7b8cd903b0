"""Smoke test of bench/core_scaling.py: it runs, and reports every scenario.

No timing is asserted: the figures depend on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "core_scaling.py"

SCENARIOS = (
    "1. release with many keys waiting",
    "2. hot key",
    "3. stats snapshot",
    "4. memory",
)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("core_scaling", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


def test_tiny_run_reports_every_scenario(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--tiny", "--no-write"]) == 0
    out = capsys.readouterr().out
    for title in SCENARIOS:
        assert title in out
    assert "results written" not in out


def test_tiny_run_writes_json(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "results" / "core_scaling.json"
    assert bench.main(["--quick", "--tiny", "--output", str(target)]) == 0
    capsys.readouterr()
    data = json.loads(target.read_text(encoding="utf-8"))
    for field in ("python", "platform", "cpu_count", "date", "command"):
        assert field in data
    assert data["config"]["mode"] == "tiny"
    for scenario in ("release_with_waiters", "hot_key", "stats_snapshot", "memory"):
        rows = data[scenario]
        assert [row["keys"] for row in rows] == data["config"]["keys"]
    # Every key drained in the memory scenario leaves no live key behind.
    assert all(row["live_keys_after_drain"] == 0 for row in data["memory"])
    assert not list(target.parent.glob("*.tmp"))
