"""The build: the accounting core compiled with mypyc, or left as Python.

``AIOCONNPOOL_EXPECT_COMPILED`` says which one this run must have: ``make
test`` sets it to 1 (its install requires the compiled core), and tox's
pure-Python environment to 0 (``tox.ini``). A build that fell back to
Python without anyone asking would otherwise go unnoticed, and so would the
benchmarks' figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import aioconnpool
from aioconnpool._core import compiled

EXPECT = os.environ.get("AIOCONNPOOL_EXPECT_COMPILED")


def test_the_core_is_built_as_this_run_expects() -> None:
    if EXPECT is None:
        pytest.skip("set AIOCONNPOOL_EXPECT_COMPILED=1 (or 0) to check the build")
    modules = compiled.compiled_modules()
    if EXPECT == "1":
        python = [name for name, built in modules.items() if not built]
        assert not python, (
            f"expected the compiled core, but these modules run as Python: {python} "
            "(reinstall with AIOCONNPOOL_REQUIRE_EXTENSIONS=1 to see why)"
        )
        assert aioconnpool.compiled_core()
    else:
        built = [name for name, built in modules.items() if built]
        assert not built, f"expected pure Python, but these are compiled: {built}"
        assert not aioconnpool.compiled_core()


def test_every_compiled_module_is_a_core_module_with_a_source() -> None:
    core = Path(compiled.__file__).parent
    for name in compiled.COMPILED:
        assert (core / f"{name}.py").is_file(), name
    # The ones left out on purpose (setup.py says why) stay Python.
    for name in ("counters", "history", "pacing", "adaptive"):
        assert name not in compiled.COMPILED
        module = sys.modules.get(f"aioconnpool._core.{name}")
        if module is not None:
            assert module.__file__ is not None
            assert module.__file__.endswith(".py"), module.__file__


def test_a_compiled_file_older_than_its_source_is_stale(tmp_path: Path) -> None:
    suffix = EXTENSION_SUFFIXES[0]
    for name in ("fresh", "old", "pure"):
        (tmp_path / f"{name}.py").write_text("")
    (tmp_path / f"fresh{suffix}").write_bytes(b"")
    (tmp_path / f"old{suffix}").write_bytes(b"")
    os.utime(tmp_path / "fresh.py", (1_000, 1_000))
    os.utime(tmp_path / f"old{suffix}", (1_000, 1_000))
    names = ("fresh", "old", "pure")
    assert compiled.stale_modules(tmp_path, names) == [f"old{suffix}"]
    # This checkout's own (conftest.py stops a run before this one).
    assert compiled.stale_modules() == []


def _core_as_imported(no_extensions: str) -> list[str]:
    """What a fresh interpreter reports: compiled_core(), and whether the
    grants module came from its source."""
    code = (
        "import sys, aioconnpool; "
        "grants = sys.modules['aioconnpool._core.grants']; "
        "print(aioconnpool.compiled_core(), grants.__file__.endswith('.py'))"
    )
    env = {**os.environ, "AIOCONNPOOL_NO_EXTENSIONS": no_extensions}
    argv = [sys.executable, "-c", code]
    done = subprocess.run(argv, check=False, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_no_extensions_runs_the_source_beside_a_compiled_build() -> None:
    # The switch works at import time too, whatever the build: the two cores
    # can be compared, or the source stepped through, in one checkout.
    assert _core_as_imported("1") == ["False", "True"]
    # "0" is "not set", as for aiohttp's AIOHTTP_NO_EXTENSIONS.
    core = Path(compiled.__file__).parent
    built = all(
        any((core / f"{name}{suffix}").exists() for suffix in EXTENSION_SUFFIXES)
        for name in compiled.COMPILED
    )
    assert _core_as_imported("0") == [str(built), str(not built)]
