"""The manual check against an unreleased aiohttp, built from its source tree.

CI reaches only PyPI, and aiohttp's next releases (the 3.15 branch, master
for 4.0) are not on it yet, so this check is run by hand, on a source tree
of aiohttp (a clone, or ``git archive`` of a branch)::

    python peer/against_source.py PATH/TO/aiohttp [--aiofastnet] [-- PYTEST ARGS]

It

1. copies the tree to a scratch directory without ``.git`` (aiohttp's
   ``setup.py`` refuses a clone whose ``vendor/llhttp`` submodule is missing;
   the pure-Python build below does not need it);
2. builds ``.source-venv/<tree name>/``: this project (editable, with its
   ``dev`` extras), then that aiohttp in pure Python
   (``AIOHTTP_NO_EXTENSIONS=1``) in place of the one from PyPI, and the
   runtime dependencies it declares; with ``--aiofastnet``, also
   ``aiofastnet``, which aiohttp 3.15 uses for its connections when present;
3. runs this project's test suite there (``pytest tests``), with
   ``AIOCONNPOOL_ALLOW_AIOHTTP`` set to the version built, so that an
   aiohttp outside ``SUPPORTED_RANGE`` is accepted for the run (it is
   refused at import otherwise).

Its exit code is pytest's. ``docs/compatibility.md`` ("aiohttp 3.15 and
4.0") has the results of the last run on each branch.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".source-venv"


def log(message: str) -> None:
    print(f"against-source: {message}", flush=True)


def run(cmd: Sequence[str | Path], **kwargs: object) -> None:
    log(" ".join(str(part) for part in cmd))
    subprocess.run([str(part) for part in cmd], check=True, **kwargs)  # type: ignore[call-overload]


def check_tree(tree: Path) -> None:
    """``tree`` must be an aiohttp source tree."""
    if not (tree / "aiohttp" / "connector.py").is_file():
        raise SystemExit(f"against-source: {tree} is not an aiohttp source tree")
    if not ((tree / "setup.py").is_file() or (tree / "pyproject.toml").is_file()):
        raise SystemExit(f"against-source: {tree} has no setup.py or pyproject.toml")


def build(tree: Path, venv: Path, *, aiofastnet: bool) -> tuple[Path, str]:
    """``venv`` with this project and the aiohttp of ``tree``; its python
    and the aiohttp version built."""
    python = venv / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", venv])
        run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    run([python, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev]"])
    env = dict(os.environ, AIOHTTP_NO_EXTENSIONS="1")
    with tempfile.TemporaryDirectory(prefix="aiohttp-src-") as scratch:
        copy = Path(scratch) / "aiohttp"
        shutil.copytree(tree, copy, ignore=shutil.ignore_patterns(".git"))
        pip: list[str | Path] = [python, "-m", "pip", "install", "--quiet", "--no-deps"]
        run([*pip, "--force-reinstall", copy], env=env)
    # What the built aiohttp needs at run time (markers evaluated by pip).
    requires = subprocess.run(
        [
            python,
            "-c",
            "import importlib.metadata as m; "
            "print('\\n'.join(r for r in m.requires('aiohttp') or () "
            "if 'extra ==' not in r))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    wanted = [r for r in requires if r.strip()]
    if aiofastnet:
        wanted.append("aiofastnet")
    if wanted:
        run([python, "-m", "pip", "install", "--quiet", *wanted])
    version = subprocess.run(
        [python, "-c", "import aiohttp; print(aiohttp.__version__)"],
        check=True,
        capture_output=True,
        text=True,
        env=dict(os.environ, AIOHTTP_NO_EXTENSIONS="1"),
    ).stdout.strip()
    return python, version


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", type=Path, help="an aiohttp source tree")
    parser.add_argument(
        "--aiofastnet",
        action="store_true",
        help="also install aiofastnet (aiohttp 3.15's optional transports)",
    )
    parser.add_argument(
        "--venv",
        type=Path,
        help="the virtualenv to build (default: .source-venv/<tree name>)",
    )
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest")
    args = parser.parse_args(argv)
    tree = args.tree.resolve()
    check_tree(tree)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", tree.name)
    venv = args.venv or VENVS / (name + ("-aiofastnet" if args.aiofastnet else ""))
    python, version = build(tree, venv, aiofastnet=args.aiofastnet)
    log(f"aiohttp {version} from {tree}, in {venv}")
    env = dict(os.environ, AIOCONNPOOL_ALLOW_AIOHTTP=version)
    cmd = [python, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"]
    cmd += args.pytest_args
    log(" ".join(str(part) for part in cmd))
    done = subprocess.run([str(part) for part in cmd], cwd=ROOT, env=env, check=False)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
