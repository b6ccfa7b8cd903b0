"""The backoff a host asks for: a client middleware that pauses the host in
the pool when it answers 429 or 503.

Glue, not a leaf: a retried request keeps its place in its host's pacing
queue, which takes a handshake with the pacing gate that the public API does
not offer (``pacing.PLACE``, a context variable the gate reads in
``connect()``), and it awaits. Everything else it does is public:
``connector.pause_host``.

On a throttled answer it reads ``Retry-After`` (delay-seconds or an
HTTP-date; anything else is ignored and counted), pauses the host for that
long (capped by ``max_retry_after``), or, with none, for an exponential
backoff with jitter (``base * 2 ** (n - 1)`` for the n-th throttle in a row,
capped by ``max_backoff``). ``stall_after`` throttles in a row make the host
*stalled*: that request and every new one fail at once with
:class:`HostStalledError` until the pause ends; the next answer that is not
throttled resets the count. With ``retries``, the throttled request itself
is sent again once the pause ends, from its first place in the host's queue.
"""

from __future__ import annotations

import email.utils
import math
import random as _random
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING

from .._errors import HostStalledError
from .._keys import PoolKey, pool_key_of
from . import compat as _compat
from .pacing import PLACE, Place

if TYPE_CHECKING:
    from aiohttp import ClientRequest, ClientResponse

    from .connector import PoolConnector

__all__ = ["BackoffMiddleware", "backoff_middleware", "parse_retry_after"]

Handler = Callable[["ClientRequest"], Awaitable["ClientResponse"]]


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds, or an
    HTTP-date compared with ``now`` (``time.time()``); ``None`` if it is
    neither. A date in the past means 0."""
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a bare one is invalid
        return None
    return max(when.timestamp() - now, 0.0)


def _check_number(name: str, value: object, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number, not {type(value).__name__}: {value!r}"
        )
    if not math.isfinite(value) or value < minimum:
        raise ValueError(
            f"{name} must be a finite number >= {minimum:g}, got {value!r}"
        )
    return float(value)


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}: {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


class BackoffMiddleware:
    """The middleware :func:`backoff_middleware` returns: pass it to
    ``ClientSession(middlewares=[...])``. Its counters only go up:
    ``throttled`` (429/503 answers seen), ``retried`` (requests sent again),
    ``invalid_retry_after`` (garbage ``Retry-After`` values ignored),
    ``stalled`` (requests failed with :class:`HostStalledError`)."""

    def __init__(
        self,
        connector: PoolConnector,
        *,
        retries: int,
        statuses: Collection[int],
        base: float,
        max_backoff: float,
        max_retry_after: float,
        jitter: float,
        stall_after: int | None,
        random: Callable[[], float],
    ) -> None:
        self._connector = connector
        self._gate = connector._pacing_gate()  # retries keep their place
        self.retries = retries
        self.statuses = frozenset(statuses)
        self.base = base
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.jitter = jitter
        self.stall_after = stall_after
        self._random = random
        self._in_a_row: dict[PoolKey, int] = {}
        self.throttled = 0
        self.retried = 0
        self.invalid_retry_after = 0
        self.stalled = 0

    async def __call__(self, req: ClientRequest, handler: Handler) -> ClientResponse:
        key = pool_key_of(req.connection_key)
        self._check_stalled(key)
        place = Place(self._gate.pacer.take_seq())
        token = PLACE.set(place)
        try:
            attempt = 0
            while True:
                resp = await handler(req)
                place.retry = True
                if resp.status not in self.statuses:
                    self._in_a_row.pop(key, None)
                    return resp
                self._throttled(key, resp)
                if attempt >= self.retries:
                    return resp
                resp.release()
                self._check_stalled(key)
                attempt += 1
                self.retried += 1
        finally:
            PLACE.reset(token)

    def _throttled(self, key: PoolKey, resp: ClientResponse) -> None:
        """Pause ``key`` as ``resp`` asks (or by backoff); a stall fails the
        request at once."""
        self.throttled += 1
        n = self._in_a_row[key] = self._in_a_row.get(key, 0) + 1
        seconds: float | None = None
        raw = resp.headers.get("Retry-After")
        if raw is not None:
            seconds = parse_retry_after(raw, time.time())
            if seconds is None:
                self.invalid_retry_after += 1
            else:
                seconds = min(seconds, self.max_retry_after)
        if seconds is None:
            seconds = min(self.max_backoff, self.base * 2 ** (n - 1))
            seconds *= 1.0 - self.jitter * self._random()
        self._connector.pause_host(key, seconds, reason=str(resp.status))
        if self.stall_after is not None and n >= self.stall_after:
            resp.release()
            self._check_stalled(key)

    def _check_stalled(self, key: PoolKey) -> None:
        n = self._in_a_row.get(key, 0)
        if self.stall_after is None or n < self.stall_after:
            return
        host = self._connector.stats(key)
        if host.paused_until is None:
            return  # the pause is over: one more try
        self.stalled += 1
        now = self._connector._loop.time()
        raise HostStalledError(
            f"{key} answered {host.pause_reason} {n} times in a row "
            f"(stall_after={self.stall_after}): its requests fail until its "
            f"pause ends in {host.paused_until - now:.3g} s",
            key,
            n,
        )


def backoff_middleware(
    connector: PoolConnector,
    *,
    retries: int = 3,
    statuses: Collection[int] = (429, 503),
    base: float = 1.0,
    max_backoff: float = 60.0,
    max_retry_after: float = 300.0,
    jitter: float = 0.5,
    stall_after: int | None = 10,
    random: Callable[[], float] = _random.random,
) -> BackoffMiddleware:
    """A client middleware (``ClientSession(middlewares=[...])``, aiohttp
    3.12 and later) that pauses a host in ``connector``'s pool when it
    answers one of ``statuses``.

    The pause lasts what ``Retry-After`` says (seconds or an HTTP-date,
    capped by ``max_retry_after``), or without one ``base * 2 ** (n - 1)``
    seconds for the n-th such answer in a row, capped by ``max_backoff`` and
    shortened by up to ``jitter`` (a fraction). Every queued and future
    request to the host waits it out, holding no slot. The throttled request
    is sent again up to ``retries`` times, keeping its place in the host's
    queue; after that its response is returned as it is. After
    ``stall_after`` throttled answers in a row (``None``: never) requests to
    the host fail at once with :class:`HostStalledError` until the pause
    ends. Raises ``RuntimeError`` on aiohttp 3.11, which has no client
    middlewares.
    """
    if not _compat.HAS_CLIENT_MIDDLEWARES:
        import aiohttp

        raise RuntimeError(
            "backoff_middleware needs aiohttp >= 3.12 (client middlewares, "
            f"ClientSession(middlewares=...)); aiohttp {aiohttp.__version__} "
            "is installed"
        )
    from .connector import PoolConnector

    if not isinstance(connector, PoolConnector):
        raise TypeError(
            "backoff_middleware needs the session's PoolConnector, not "
            f"{type(connector).__name__}"
        )
    codes = list(statuses)
    for code in codes:
        if (
            isinstance(code, bool)
            or not isinstance(code, int)
            or not 100 <= code <= 599
        ):
            raise ValueError(f"statuses must be HTTP status codes, got {code!r}")
    jitter = _check_number("jitter", jitter)
    if jitter > 1:
        raise ValueError(f"jitter must be within [0, 1], got {jitter!r}")
    return BackoffMiddleware(
        connector,
        retries=_check_int("retries", retries, minimum=0),
        statuses=codes,
        base=_check_number("base", base),
        max_backoff=_check_number("max_backoff", max_backoff),
        max_retry_after=_check_number("max_retry_after", max_retry_after),
        jitter=jitter,
        stall_after=None
        if stall_after is None
        else _check_int("stall_after", stall_after, minimum=1),
        random=random,
    )
