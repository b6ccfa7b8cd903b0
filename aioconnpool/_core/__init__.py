"""The accounting core: a pure, synchronous model of a keyed connection pool.

Nothing in this package imports aiohttp or asyncio, and nothing awaits: the
import contracts in ``pyproject.toml`` and ``tests/test_layers.py`` check it.
:class:`PoolCore` (``pool``) is the one entry point; its docstring is the
theory of operation. The connector (``aioconnpool._aiohttp``) reports events
to it and carries out the :class:`Decision` each event returns.
"""

# First: AIOCONNPOOL_NO_EXTENSIONS=1 runs the source of a compiled core.
from .compiled import use_sources_if_asked

use_sources_if_asked()

from .counters import Counters  # noqa: E402
from .pool import PoolCore  # noqa: E402
from .records import (  # noqa: E402
    CLOSED,
    DONE,
    GRANTED,
    NOTHING,
    QUEUED,
    REJECTED,
    Closing,
    ConnRecord,
    Decision,
    KeyFigures,
    Ticket,
)

__all__ = [
    "CLOSED",
    "DONE",
    "GRANTED",
    "NOTHING",
    "QUEUED",
    "REJECTED",
    "Closing",
    "ConnRecord",
    "Counters",
    "Decision",
    "KeyFigures",
    "PoolCore",
    "Ticket",
]
