"""Pool events: what happened, to which host, and how long it took.

``connector.add_listener(callback)`` makes the connector call ``callback``
with one of these for every step of every request. Each carries the public
``PoolKey`` (never credentials or proxy settings) and ``at``, the event loop's
clock when it happened. Durations are in seconds.

A request's life: ``Queued`` -> ``Dequeued`` (if it had to wait), or
``Rejected`` (``block=False``); then ``Acquired(reused=True)``, or
``ConnectStarted`` -> ``ConnectEnded`` -> ``Acquired(reused=False)`` (or
``ConnectFailed``); then ``Released``. A connection's end: ``Closed``.
Rarely, an idle connection granted to a queued request is found closed (or
written to) by the server when the request comes to take it: that grant ends
``Released(how="error")`` -> ``Closed`` at once, and the same request goes
on to its next ``Acquired`` or ``ConnectStarted``.
``LeakSuspected`` comes from leak detection (``leak_threshold``).

Pacing (``delay_per_host``, ``host_delays``, pauses) comes before all that:
``PacingQueued`` -> ``PacingDequeued(outcome="released")`` when a request
had to wait for its start, or ``PacingLate`` when its start would fall after
its deadline. ``HostPaused`` -> ``HostResumed`` bracket a host's pause
(``pause_host``, ``backoff_middleware``).

Adaptive limits (``limit_per_host="auto"`` or an ``AdaptiveLimit``):
``LimitAdjusted`` whenever a host's learned limit changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._keys import PoolKey

__all__ = [
    "Acquired",
    "Closed",
    "ConnectEnded",
    "ConnectFailed",
    "ConnectStarted",
    "Dequeued",
    "HostPaused",
    "HostResumed",
    "LeakSuspected",
    "LimitAdjusted",
    "PacingDequeued",
    "PacingLate",
    "PacingQueued",
    "PoolEvent",
    "Queued",
    "Rejected",
    "Released",
]


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """The base of every event: the host (never credentials) and when."""

    key: PoolKey
    at: float


@dataclass(frozen=True, slots=True)
class Queued(PoolEvent):
    """A request found no free slot and waits; ``waiting`` for this host now."""

    waiting: int


@dataclass(frozen=True, slots=True)
class Dequeued(PoolEvent):
    """A waiting request left the queue, after ``waited`` seconds."""

    outcome: Literal["served", "cancelled", "timed_out", "closed"]
    waited: float


@dataclass(frozen=True, slots=True)
class Rejected(PoolEvent):
    """``block=False``: a request that would have waited was refused."""


@dataclass(frozen=True, slots=True)
class ConnectStarted(PoolEvent):
    """A request got a slot and no idle connection: a new one is opened."""


@dataclass(frozen=True, slots=True)
class ConnectEnded(PoolEvent):
    """A new connection is open (and acquired by its request)."""

    duration: float


@dataclass(frozen=True, slots=True)
class ConnectFailed(PoolEvent):
    """Opening a connection failed or was cancelled."""

    duration: float


@dataclass(frozen=True, slots=True)
class Acquired(PoolEvent):
    """A request holds a connection: an idle one (``reused``, idle for
    ``idle_for`` seconds) or the one it just opened."""

    reused: bool
    idle_for: float | None


@dataclass(frozen=True, slots=True)
class Released(PoolEvent):
    """An acquisition ended (``how``: see ``RELEASE_HOWS``) after ``held`` s."""

    how: str
    held: float


@dataclass(frozen=True, slots=True)
class Closed(PoolEvent):
    """A connection was closed (``reason``: see ``CLOSE_REASONS``) after
    ``lifetime`` seconds and ``requests`` requests."""

    reason: str
    lifetime: float
    requests: int


@dataclass(frozen=True, slots=True)
class LeakSuspected(PoolEvent):
    """A connection has been held ``held`` seconds, past ``leak_threshold``."""

    held: float
    task: str | None
    stack: str | None


@dataclass(frozen=True, slots=True)
class PacingQueued(PoolEvent):
    """A request waits on its host's pacing (``delay_per_host``,
    ``host_delays``, or a pause) until ``start`` (the loop's clock; the
    earliest it may go); ``waiting`` on pacing for this host now."""

    start: float
    waiting: int


@dataclass(frozen=True, slots=True)
class PacingDequeued(PoolEvent):
    """A request left its host's pacing queue after ``waited`` seconds: let
    go to the pool (``"released"``), given up (``"cancelled"``), refused
    because a pause pushed its start past its deadline (``"late"``), or
    refused because the connector closed (``"closed"``)."""

    outcome: Literal["released", "cancelled", "late", "closed"]
    waited: float


@dataclass(frozen=True, slots=True)
class PacingLate(PoolEvent):
    """A request was refused: its start (``start``) would fall after its
    ``ClientTimeout`` deadline (``deadline``), both on the loop's clock."""

    start: float
    deadline: float | None


@dataclass(frozen=True, slots=True)
class HostPaused(PoolEvent):
    """The host is paused until ``until`` (the loop's clock) for ``reason``
    (``"429"``, ``"503"``, or what ``pause_host`` was given)."""

    until: float
    reason: str


@dataclass(frozen=True, slots=True)
class HostResumed(PoolEvent):
    """The host's pause ended."""


@dataclass(frozen=True, slots=True)
class LimitAdjusted(PoolEvent):
    """A host's adaptive limit changed from ``previous`` to ``limit`` at the
    end of a window of samples: ``reason`` is ``"overload"`` (too many 5xx,
    429 or connection errors), ``"latency"`` (the gradient shrank it) or
    ``"growth"`` (room to grow); ``gradient``, ``min_rtt`` and ``rtt`` (the
    window's median round trip, ``None`` with no good sample) are the
    window's figures, in seconds."""

    limit: int
    previous: int
    reason: Literal["overload", "latency", "growth"]
    gradient: float
    min_rtt: float | None
    rtt: float | None
