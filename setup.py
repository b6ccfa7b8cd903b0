"""The build: the accounting core compiled with mypyc when it can be.

Everything is in ``pyproject.toml`` except this one thing. The core's modules
(``CORE_MODULES``) are plain, strictly typed Python; mypyc compiles the same
source into C extensions, which is what brings the pool's own cost per
request under aiohttp's (``docs/performance.md``, "Fifth pass, kept: the
compiled core"). The source stays the fallback, and the reference:

* ``AIOCONNPOOL_NO_EXTENSIONS=1`` builds pure Python (as aiohttp's
  ``AIOHTTP_NO_EXTENSIONS`` does);
* without mypyc, on another interpreter than CPython, or when the C compiler
  fails, the build warns and installs pure Python, unless
  ``AIOCONNPOOL_REQUIRE_EXTENSIONS=1`` (CI sets it) makes that an error.

``aioconnpool.compiled_core()`` tells which one is running.
"""

from __future__ import annotations

import os
import platform
import runpy
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The core's modules to compile: aioconnpool/_core/compiled.py lists them
# (read here without importing the package, whose dependencies a build
# environment does not have).
_LISTED = runpy.run_path(str(Path(__file__).parent / "aioconnpool/_core/compiled.py"))
CORE_MODULES = [f"aioconnpool/_core/{name}.py" for name in _LISTED["COMPILED"]]
# mypyc type-checks what it compiles, and follows the imports (the package's
# __init__ among them) into modules that need aiohttp and yarl, which a build
# environment does not have: those it only reads, silently. `make typecheck`
# checks the whole package, strictly, with its dependencies.
MYPYC_OPTIONS = ["--follow-imports=silent", "--ignore-missing-imports"]


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _warn(message: str) -> None:
    print(f"aioconnpool: {message}; installing the pure-Python core", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """Falls back to the pure-Python core when the compiler fails: all of
    the core compiled, or none of it (a compiled module imports the shared
    library of the others)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            if _flag("AIOCONNPOOL_REQUIRE_EXTENSIONS"):
                raise
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            _warn(f"compiling the core failed ({exc})")


def ext_modules() -> list[Any]:
    if _flag("AIOCONNPOOL_NO_EXTENSIONS"):
        return []
    if platform.python_implementation() != "CPython":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if _flag("AIOCONNPOOL_REQUIRE_EXTENSIONS"):
            raise
        _warn("mypyc is not installed")
        return []
    try:
        modules: list[Any] = mypycify(
            [*MYPYC_OPTIONS, *CORE_MODULES],
            opt_level="3",
            group_name="aioconnpool_core",
        )
    except (Exception, SystemExit) as exc:  # mypyc refused the source: our bug
        if _flag("AIOCONNPOOL_REQUIRE_EXTENSIONS"):
            raise
        _warn(f"mypyc failed ({exc})")
        return []
    return modules


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
