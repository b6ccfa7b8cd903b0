"""The ``aioconnpool`` command: ``demo`` and ``crawl`` (``main``), the embedded
demo server and job (``demo``), and the terminal renderers (``render``).

A leaf: it uses the package's public API only (the import contracts in
``pyproject.toml`` check it)."""

from .main import main

__all__ = ["main"]
