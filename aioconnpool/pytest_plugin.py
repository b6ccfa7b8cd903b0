"""A pytest plugin that finds unreleased responses in your test suite.

Installed with aioconnpool (the ``pytest11`` entry point) but inert: nothing
happens unless a test asks for one of its fixtures (pytest-asyncio needed).

``pool_connector``
    a factory: ``pool_connector(**kwargs)`` builds a ``PoolConnector`` (any
    of its keywords) that is guarded and closed at teardown. It turns leak
    detection on (``leak_threshold=0.001`` unless you pass one), so that the
    report shows where each connection was acquired; a connection held past
    the threshold is also logged at WARNING, as leak detection does.
``pool_guard``
    ``pool_guard(connector)`` guards a connector the test built itself (and
    returns it); build it with ``leak_threshold=`` to get stacks.

A guarded connector fails the test at teardown (reported by pytest as an error
in teardown) when, at the end of the test or when it was closed during the
test, connections were still acquired or requests still waiting, or when
responses were dropped without being read or released (``released["gc"]``).
The report names each offending host with its figures and the stack of
whoever acquired each connection still held (or held past the threshold).

Requests answered by a mock such as aioresponses never reach the connector,
so they are never reported.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from . import LeakInfo, LeakSuspected, PoolConnector, PoolEvent, PoolStats

try:
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover - depends on the environment
    # pytest then fails the tests that use these, saying that an async
    # fixture needs a plugin (pytest-asyncio).
    _async_fixture = pytest.fixture  # type: ignore[assignment]

__all__ = ["DEFAULT_LEAK_THRESHOLD", "PoolGuard", "pool_connector", "pool_guard"]

DEFAULT_LEAK_THRESHOLD = 0.001
"""``leak_threshold`` of the connectors ``pool_connector`` builds: low, so
that almost any connection still held at the end has its stack."""

_STACK_WAIT = 1.0  # at most this long at teardown for held stacks to appear


class _Guard:
    """Watches one connector for the length of a test."""

    def __init__(self, connector: PoolConnector) -> None:
        self.connector = connector
        self._gc_before = connector.stats().released["gc"]
        self._suspected: list[LeakSuspected] = []
        self._findings: list[str] = []
        self._shown: set[tuple[object, str | None]] = set()
        connector.add_listener(self._on_event)
        # Note what is still held the moment the connector closes (a session
        # closing it, say): closing releases it all and forgets the stacks.
        original = connector.close

        def close(*args: Any, **kwargs: Any) -> Any:
            if not connector.closed:
                self._note(connector.stats(), self._held_stacks())
            return original(*args, **kwargs)

        setattr(connector, "close", close)  # noqa: B010 - an instance hook

    def _on_event(self, event: PoolEvent) -> None:
        if isinstance(event, LeakSuspected):
            self._suspected.append(event)

    def _held_stacks(self) -> list[LeakInfo]:
        try:
            return self.connector.leaks()
        except RuntimeError:  # leak detection is off: no stacks
            return []

    async def inspect(self) -> None:
        """At teardown: note what the open connector still holds, giving
        held connections time to pass the leak threshold (stacks)."""
        if self.connector.closed or self._findings:
            return
        stats = self.connector.stats()
        leaks = self._held_stacks()
        if stats.acquired:
            deadline = time.monotonic() + _STACK_WAIT
            while len(leaks) < stats.acquired and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
                leaks = self._held_stacks()
                stats = self.connector.stats()
        self._note(stats, leaks)

    def _note(self, stats: PoolStats, leaks: list[LeakInfo]) -> None:
        busy = {k: h for k, h in stats.hosts.items() if h.acquired or h.waiting}
        if not busy or self._findings:
            return  # nothing held, or already noted
        lines = [f"connections still in use ({self.connector!r}):"]
        for key, h in busy.items():
            lines.append(
                f"  {key}: acquired={h.acquired} waiting={h.waiting} idle={h.idle} "
                f"requests={h.requests} created={h.created} reused={h.reused}"
            )
        for leak in leaks:
            self._shown.add((leak.key, leak.stack))
            lines.append(_origin(leak.key, leak.task, leak.stack, leak.held_for))
        if stats.acquired > len(leaks):
            lines.append(
                f"  ({stats.acquired - len(leaks)} acquisition(s) without a stack: "
                "build the connector with leak_threshold= to get them)"
            )
        self._findings.append("\n".join(lines))

    def finish(self) -> str | None:
        """Stop watching; the report, or ``None`` if nothing leaked."""
        connector = self.connector
        delattr(connector, "close")  # back to the class's method
        if not connector.closed:
            connector.remove_listener(self._on_event)
        findings = list(self._findings)
        dropped = connector.stats().released["gc"] - self._gc_before
        if dropped:
            lines = [
                f"{dropped} response(s) dropped without being read, released or "
                'closed (released["gc"]):'
            ]
            # Those held past the threshold before being dropped have a stack.
            for s in self._suspected:
                if (s.key, s.stack) not in self._shown:
                    self._shown.add((s.key, s.stack))
                    lines.append(_origin(s.key, s.task, s.stack, s.held))
            findings.append("\n".join(lines))
        if not findings:
            return None
        return "aioconnpool: " + "\n".join(findings)


def _origin(key: object, task: str | None, stack: str | None, held: float) -> str:
    where = stack or "  (no stack outside aiohttp)\n"
    return (
        f"  {key} acquired by task {task} (held {held:.3g} s or more) at:\n"
        f"{where.rstrip()}"
    )


class PoolGuard:
    """What the ``pool_guard`` fixture gives: call it with a connector."""

    def __init__(self) -> None:
        self._guards: list[_Guard] = []

    def __call__(self, connector: PoolConnector) -> PoolConnector:
        """Guard ``connector`` until the test ends; returns it."""
        if not isinstance(connector, PoolConnector):
            raise TypeError(
                f"pool_guard() needs a PoolConnector, not {type(connector).__name__}"
            )
        if self._find(connector) is None:
            self._guards.append(_Guard(connector))
        return connector

    async def inspect(self, connector: PoolConnector) -> None:
        """Check ``connector`` now (as teardown will): note what it holds."""
        guard = self._find(connector)
        if guard is not None:
            await guard.inspect()

    async def finish(self) -> None:
        """Teardown: fail the test if a guarded connector still held or
        queued anything."""
        for g in self._guards:
            await g.inspect()
        reports = [r for r in (g.finish() for g in self._guards) if r is not None]
        if reports:
            # The leaked responses are garbage now: collecting them here makes
            # aiohttp's own warnings about them land on this test.
            gc.collect()
            pytest.fail("\n\n".join(reports), pytrace=False)

    def _find(self, connector: PoolConnector) -> _Guard | None:
        return next((g for g in self._guards if g.connector is connector), None)


@_async_fixture
async def pool_guard() -> AsyncIterator[PoolGuard]:
    """``pool_guard(connector)``: fail the test if it leaks connections."""
    guard = PoolGuard()
    yield guard
    await guard.finish()


@_async_fixture
async def pool_connector(
    pool_guard: PoolGuard,
) -> AsyncIterator[Callable[..., PoolConnector]]:
    """``pool_connector(**kwargs)``: a guarded ``PoolConnector``."""
    built: list[PoolConnector] = []

    def build(**kwargs: Any) -> PoolConnector:
        kwargs.setdefault("leak_threshold", DEFAULT_LEAK_THRESHOLD)
        connector = PoolConnector(**kwargs)
        built.append(connector)
        return pool_guard(connector)

    yield build
    for connector in built:
        # Note the leftovers (with their stacks) before closing.
        await pool_guard.inspect(connector)
        await connector.close()
