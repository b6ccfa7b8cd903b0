"""``--web`` of ``aioconnpool demo`` and ``aioconnpool crawl``: the live
dashboard (:mod:`aioconnpool.web`) served while the command runs.

The URL is printed on stderr as soon as the page is up. When the crawl is
done the page stays up, showing the final state, for ``--web-for`` seconds
or until Ctrl-C; then the connector closes and the report is printed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TextIO

from .. import PoolConnector

__all__ = ["WebOptions", "dashboard_during"]


@dataclass(frozen=True)
class WebOptions:
    port: int = 0  # 0: any free port
    linger: float | None = None  # seconds to keep the page up after; None: Ctrl-C


@asynccontextmanager
async def dashboard_during(
    connector: PoolConnector, options: WebOptions | None, err: TextIO
) -> AsyncIterator[None]:
    """Serve the dashboard of ``connector`` around the crawl (nothing when
    ``options`` is None)."""
    if options is None:
        yield
        return
    from ..web import serve_dashboard

    server = serve_dashboard(connector, port=options.port)
    print(f"dashboard: {server.url}", file=err, flush=True)
    try:
        yield
        if options.linger is None:
            print(
                f"crawl done; the dashboard stays at {server.url} until Ctrl-C",
                file=err,
                flush=True,
            )
            await asyncio.Event().wait()  # until cancelled (Ctrl-C)
        elif options.linger > 0:
            print(
                f"crawl done; the dashboard stays at {server.url} for "
                f"{options.linger:g} s",
                file=err,
                flush=True,
            )
            await asyncio.sleep(options.linger)
    finally:
        server.close()
