"""A pytest plugin that makes ``PoolConnector`` aiohttp's ``TCPConnector``.

Loaded with ``-p swap_plugin`` by ``peer/run.py`` for the swapped run of
aiohttp's own tests. Being a ``-p`` plugin, it is imported before aiohttp's
``conftest.py`` and test modules, so every ``from aiohttp import
TCPConnector`` in them, and ``ClientSession``'s default connector, get
:class:`PeerPoolConnector`.

It proves that the swap took effect: it counts the connectors created per
test file and writes them to the JSON file named by ``PEER_SWAP_REPORT``, and
the session fails if no ``PoolConnector`` was created at all, or if a plain
``TCPConnector`` was.

Compatibility view: aiohttp's tests read ``TCPConnector``'s private
``_conns`` (idle connections per key) and ``_acquired`` (connections in
use). ``PoolConnector`` keeps no such containers: its pool is the core's. The
view answers these reads from the pool, so that the tests' claims ("the
connection was released", "the closed connection is not reused", "the
pooled connection is this very protocol") are checked against the pool's
real state. Every read is first checked against the public API: the number
of idle and acquired connections, per host, must equal ``stats()`` and
``connections()``, so the view cannot drift from what users see.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter, defaultdict, deque
from collections.abc import Generator
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import aiohttp.client
import aiohttp.connector
import pytest

from aioconnpool import PoolConnector, PoolKey

_ORIGINAL = aiohttp.connector.TCPConnector

created: Counter[str] = Counter()
"""``PeerPoolConnector`` instances created, per test file."""
plain: Counter[str] = Counter()
"""Plain ``TCPConnector`` instances created (must stay empty), per test file."""
view_reads: Counter[str] = Counter()
"""Reads of ``_conns`` / ``_acquired`` answered from the pool, per test id."""
_current_file = "<collection>"
_current_test = "<collection>"


def _pool_key(key: Any) -> PoolKey:
    return PoolKey(str(key.host), int(key.port), bool(key.is_ssl))


class PeerPoolConnector(PoolConnector):
    """``PoolConnector``, counted, with the compatibility view."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        created[_current_file] += 1

    def _records(self) -> tuple[dict[Any, deque[tuple[Any, float]]], set[Any]]:
        core = getattr(self, "_core", None)
        idle: dict[Any, deque[tuple[Any, float]]] = defaultdict(deque)
        acquired: set[Any] = set()
        if core is None:  # TCPConnector.__init__ is still running
            return idle, acquired
        records = sorted(core.records(), key=lambda rec: rec.idle_since)
        for rec in records:
            if rec.state == "idle":
                idle[core.key_of(rec)].append((rec.handle, rec.idle_since))
            else:
                acquired.add(rec.handle)
        self._check_against_public_api(idle, acquired)
        return idle, acquired

    def _check_against_public_api(
        self, idle: dict[Any, deque[tuple[Any, float]]], acquired: set[Any]
    ) -> None:
        stats = self.stats()
        assert stats.idle == sum(len(conns) for conns in idle.values()), stats
        assert stats.acquired == len(acquired), stats
        public: Counter[tuple[PoolKey, str]] = Counter(
            (info.key, info.state) for info in self.connections()
        )
        seen: Counter[tuple[PoolKey, str]] = Counter()
        for key, conns in idle.items():
            seen[(_pool_key(key), "idle")] += len(conns)
        for (key, state), count in public.items():
            if state == "idle":
                assert seen[(key, state)] == count, (key, public, seen)

    # TCPConnector.__init__ assigns these and its close() clears them: the
    # view accepts the assignment of an empty container and nothing else.

    @property  # type: ignore[override]
    def _conns(self) -> dict[Any, deque[tuple[Any, float]]]:
        _count_read(sys._getframe(1))
        return self._records()[0]

    @_conns.setter
    def _conns(self, value: Any) -> None:
        assert not value, "the peer view of _conns is read-only"

    @property
    def _acquired(self) -> set[Any]:
        _count_read(sys._getframe(1))
        return self._records()[1]

    @_acquired.setter
    def _acquired(self, value: Any) -> None:
        assert not value, "the peer view of _acquired is read-only"


def _count_read(caller: FrameType) -> None:
    """Count a read made by a test (aiohttp's own ``close()`` reads too)."""
    module = str(caller.f_globals.get("__name__", ""))
    if not module.startswith(("aiohttp", "aioconnpool")):
        view_reads[_current_test] += 1


def _count_plain(self: Any, *args: Any, **kwargs: Any) -> None:
    if not isinstance(self, PoolConnector):
        plain[_current_file] += 1
    _original_init(self, *args, **kwargs)


_original_init = _ORIGINAL.__init__
_ORIGINAL.__init__ = _count_plain  # type: ignore[method-assign]
aiohttp.TCPConnector = PeerPoolConnector  # type: ignore[misc]
aiohttp.client.TCPConnector = PeerPoolConnector  # type: ignore[misc]
aiohttp.connector.TCPConnector = PeerPoolConnector  # type: ignore[misc]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    global _current_file, _current_test  # noqa: PLW0603
    _current_test = item.nodeid
    _current_file = item.nodeid.split("::", 1)[0]
    try:
        return (yield)
    finally:
        _current_file = _current_test = "<between tests>"


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("PEER_SWAP_REPORT")
    if target:
        report = {
            "created": dict(created),
            "plain": dict(plain),
            "view_reads": dict(view_reads),
        }
        Path(target).write_text(json.dumps(report, indent=1), encoding="utf-8")
    if session.testscollected and (not created or plain):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    total = sum(created.values())
    terminalreporter.write_line(
        f"peer swap: {total} PoolConnector created, "
        f"{sum(plain.values())} plain TCPConnector created, "
        f"{sum(view_reads.values())} reads of _conns/_acquired answered from the pool"
    )
    if not total:
        terminalreporter.write_line("peer swap: the swap did not take effect", red=True)
    for name, count in sorted(plain.items()):
        terminalreporter.write_line(
            f"peer swap: {count} plain TCPConnector created in {name}", red=True
        )
