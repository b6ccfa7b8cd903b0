"""Helpers for testing code that uses aioconnpool against loopback servers."""

from __future__ import annotations

import asyncio
import socket

from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = ["LoopbackResolver"]


class LoopbackResolver(AbstractResolver):
    """Resolves host names to 127.0.0.1, so one local server can play many hosts.

    Pass it as ``resolver=`` to ``PoolConnector`` (or any ``TCPConnector``).
    With ``suffix`` set (e.g. ``".test"``), other names fail to resolve, so a
    typo can never send traffic off the machine. ``delay`` makes every lookup
    take that long (to hold a request in the connecting state); ``calls``
    counts lookups.
    """

    def __init__(self, *, suffix: str | None = None, delay: float = 0.0) -> None:
        self.suffix = suffix
        self.delay = delay
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """127.0.0.1 for ``host`` (after ``delay``); ``OSError`` for a name
        outside ``suffix``."""
        self.calls += 1
        if self.suffix is not None and not host.endswith(self.suffix):
            raise OSError(
                f"LoopbackResolver only resolves *{self.suffix} names, not {host!r}"
            )
        if self.delay:
            await asyncio.sleep(self.delay)
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        """Nothing to release."""
