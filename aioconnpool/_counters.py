"""Monotonic counters kept per key and in total by the accounting core."""

from __future__ import annotations

from ._histogram import Timings

__all__ = ["CLOSE_REASONS", "RELEASE_HOWS", "Counters"]

RELEASE_HOWS: tuple[str, ...] = (
    "eof",  # the body was received to the end (read, or arrived with the headers)
    "release",  # released before the end: release(), async-with exit...
    "close",  # closed by the caller before the end
    "error",  # the request failed: reset, bad response, read timeout, raising trace
    "cancelled",  # the task was cancelled while holding the connection
    "gc",  # garbage-collected without being released (a leak in the caller)
    "connector_closed",  # the connector closed under it
)
"""How an acquisition can end; always present in ``released`` mappings."""

CLOSE_REASONS: tuple[str, ...] = (
    "server",  # Connection: close, HTTP/1.0, or the peer closed the socket
    "unread",  # released with body bytes still unread
    "caller",  # closed by the caller
    "expired",  # idle longer than keepalive_timeout
    "max_age",  # older than max_connection_age
    "max_requests",  # served max_requests_per_connection requests
    "pool_full",  # released while max_idle_per_host / max_idle were reached
    "evicted",  # its host was the least recently used beyond max_hosts
    "error",  # a protocol or transport error
    "cancelled",  # the task holding it was cancelled
    "force_close",  # the connector was built with force_close=True
    "upgraded",  # the connection was upgraded (e.g. to a WebSocket)
    "gc",  # garbage-collected without being released
    "connector_closed",  # the connector was closed
)
"""Why a connection can be closed; always present in ``closed`` mappings."""


class Counters:
    """Counters that only go up. ``copy()`` before handing one out."""

    __slots__ = (
        "closed",
        "connect_errors",
        "created",
        "rejected",
        "released",
        "requests",
        "reused",
        "timings",
        "wait_timeouts",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.created = 0
        self.reused = 0
        self.connect_errors = 0
        self.rejected = 0
        self.wait_timeouts = 0
        self.released: dict[str, int] = dict.fromkeys(RELEASE_HOWS, 0)
        self.closed: dict[str, int] = dict.fromkeys(CLOSE_REASONS, 0)
        self.timings = Timings()

    def bump_released(self, how: str) -> None:
        self.released[how] = self.released.get(how, 0) + 1

    def bump_closed(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1

    def copy(self) -> Counters:
        # Field by field rather than Counters().add(self): stats() copies the
        # counters of every live key, and adding walks every histogram bucket.
        new = Counters.__new__(Counters)
        new.requests = self.requests
        new.created = self.created
        new.reused = self.reused
        new.connect_errors = self.connect_errors
        new.rejected = self.rejected
        new.wait_timeouts = self.wait_timeouts
        new.released = dict(self.released)
        new.closed = dict(self.closed)
        new.timings = self.timings.copy()
        return new

    def add(self, other: Counters) -> None:
        self.requests += other.requests
        self.created += other.created
        self.reused += other.reused
        self.connect_errors += other.connect_errors
        self.rejected += other.rejected
        self.wait_timeouts += other.wait_timeouts
        for how, n in other.released.items():
            self.released[how] = self.released.get(how, 0) + n
        for reason, n in other.closed.items():
            self.closed[reason] = self.closed.get(reason, 0) + n
        self.timings.add(other.timings)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Counters):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        # Every field, nonzero entries of the mappings: a failed equality in a
        # test must show where the counters differ.
        released = {k: v for k, v in self.released.items() if v}
        closed = {k: v for k, v in self.closed.items() if v}
        return (
            f"Counters(requests={self.requests}, created={self.created}, "
            f"reused={self.reused}, connect_errors={self.connect_errors}, "
            f"rejected={self.rejected}, wait_timeouts={self.wait_timeouts}, "
            f"released={released}, closed={closed})"
        )
