"""Whether the accounting core runs compiled (mypyc) or as Python source.

``setup.py`` compiles the modules of ``COMPILED`` with mypyc when it can and
falls back to the same source otherwise: both behave alike (the test suite
runs against each, ``tox.ini``), the compiled one costs less per request
(``docs/performance.md``, "Fifth pass, kept: the compiled core").
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from pathlib import Path
from types import ModuleType

__all__ = [
    "COMPILED",
    "compiled_core",
    "compiled_modules",
    "stale_modules",
    "use_sources_if_asked",
]

COMPILED: tuple[str, ...] = (
    "records",
    "view",
    "ready",
    "idle",
    "bookkeeping",
    "checks",
    "closes",
    "grants",
    "releases",
    "pool",
)
"""The core's modules ``setup.py`` compiles: those every request passes
through and what they import at run time from the core."""


def compiled_modules() -> dict[str, bool]:
    """Each module of ``COMPILED``, imported, and whether it is compiled."""
    found = {}
    for name in COMPILED:
        module = importlib.import_module(f"{__package__}.{name}")
        path = getattr(module, "__file__", None) or ""
        found[name] = path.endswith(tuple(EXTENSION_SUFFIXES))
    return found


def compiled_core() -> bool:
    """Whether the accounting core runs compiled: every module of ``COMPILED``
    is a C extension built by mypyc. False when the build fell back to
    Python (no compiler, ``AIOCONNPOOL_NO_EXTENSIONS=1``, not CPython)."""
    return all(compiled_modules().values())


# Modules whose Final literals (the counts' layout, the histogram table's
# bounds) the compiled modules inline: a change there makes them stale too.
INLINED_FROM: tuple[str, ...] = ("counters.py", "../_histogram.py")


def stale_modules(
    directory: Path = Path(__file__).parent, names: tuple[str, ...] = COMPILED
) -> list[str]:
    """The compiled files (for this interpreter) in ``directory`` older than
    their module's source or than a module they inline constants from
    (``INLINED_FROM``): ``pip install -e .`` compiles in place, and Python
    imports a compiled module before its source, so an edit made since would
    not run. ``tests/conftest.py`` refuses to start on one."""
    inlined = [directory / name for name in INLINED_FROM]
    newest_inlined = max(
        (path.stat().st_mtime for path in inlined if path.exists()), default=0.0
    )
    stale = []
    for name in names:
        source = (directory / f"{name}.py").stat().st_mtime
        for suffix in EXTENSION_SUFFIXES:
            built = directory / f"{name}{suffix}"
            if built.exists() and built.stat().st_mtime < max(source, newest_inlined):
                stale.append(built.name)
    return stale


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Imports the modules of ``COMPILED`` from their source, compiled or not."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __package__ or name not in COMPILED:
            return None
        source = Path(__file__).parent / f"{name}.py"
        return importlib.util.spec_from_file_location(fullname, source)


def use_sources_if_asked() -> None:
    """With ``AIOCONNPOOL_NO_EXTENSIONS`` set (and not 0) when the core is
    first imported, run its source even where a compiled build sits beside
    it (as ``AIOHTTP_NO_EXTENSIONS`` does for aiohttp): to compare the two in
    one checkout, or to step through the core in a debugger. Called by the
    package before it imports any module of ``COMPILED``."""
    if os.environ.get("AIOCONNPOOL_NO_EXTENSIONS", "") in ("", "0"):
        return
    if not any(isinstance(finder, _SourceFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())
