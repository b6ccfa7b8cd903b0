"""Import the scripts of ``bench/`` in tests.

``bench/`` is no package: its scripts import each other and the ``harness``
package by plain name, so it goes on ``sys.path``, and each script is
registered in ``sys.modules`` before it runs (dataclasses look their module
up there).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["BENCH_DIR", "load_bench_script"]

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


def load_bench_script(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` (once; later calls return the same module).

    A dotted ``name`` is a module of a package of ``bench/``:
    ``harness.server`` is ``bench/harness/server.py``.
    """
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    if name in sys.modules:
        return sys.modules[name]
    if "." in name:
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module
