"""robots.txt ``Crawl-delay`` as a floor on a host's pacing.

    from aioconnpool.robots import apply_robots

    rules = await apply_robots(session, connector, "https://example.org/")
    if rules.can_fetch("*", url): ...

A leaf: it uses only the public API (``PoolConnector.stats``,
``set_host_delay``). The file is parsed by the standard library's
``urllib.robotparser`` (which reads whole seconds only), fetched through the
session, so with the pool's pacing and limits like any other request.
"""

from __future__ import annotations

import urllib.robotparser

import aiohttp
from yarl import URL

from . import PoolConnector

__all__ = ["apply_robots"]


async def apply_robots(
    session: aiohttp.ClientSession,
    connector: PoolConnector,
    url: str | URL,
    *,
    user_agent: str = "*",
) -> urllib.robotparser.RobotFileParser:
    """Fetch the robots.txt of ``url``'s host and apply its ``Crawl-delay``
    for ``user_agent`` to the host as a floor: the host's delay becomes the
    larger of the delay in force and the crawl delay (set for
    ``scheme://host:port``, see ``PoolConnector.set_host_delay``).

    Returns the parsed rules (``can_fetch``, ``crawl_delay``...). As
    ``RobotFileParser.read`` does, 401 and 403 disallow everything and
    other 4xx allow everything; on 5xx nothing is applied and the rules
    allow nothing (``can_fetch`` is false until read).
    """
    target = URL(url)
    if target.host is None or target.scheme not in ("http", "https"):
        raise ValueError(
            f"apply_robots needs an absolute http(s) URL, got {str(url)!r}"
        )
    origin = target.origin()
    rules = urllib.robotparser.RobotFileParser(str(origin / "robots.txt"))
    async with session.get(origin / "robots.txt") as resp:
        status = resp.status
        text = await resp.text(errors="replace") if status == 200 else ""
    if status in (401, 403):
        rules.disallow_all = True  # type: ignore[attr-defined]  # not in typeshed
        rules.modified()
    elif 400 <= status < 500:
        rules.allow_all = True  # type: ignore[attr-defined]  # not in typeshed
        rules.modified()
    elif status < 400:
        rules.parse(text.splitlines())  # sets modified()
    else:
        return rules
    delay = rules.crawl_delay(user_agent)
    if delay is not None:
        seconds = float(delay)
        if seconds > connector.stats(origin).delay:
            connector.set_host_delay(
                f"{origin.scheme}://{origin.host}:{origin.port}", seconds
            )
    return rules
