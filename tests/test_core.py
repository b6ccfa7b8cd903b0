"""Unit tests of the pure accounting core (no sockets, no event loop)."""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections.abc import Callable, Hashable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioconnpool._core import (
    CLOSED,
    DONE,
    GRANTED,
    QUEUED,
    Decision,
    PoolCore,
    Ticket,
)
from aioconnpool._core.bookkeeping import bucket_by_table
from aioconnpool._core.counters import (
    CLOSE_REASONS,
    HOLD,
    LIFETIME,
    RELEASE_HOWS,
    WAIT,
    Counters,
)
from aioconnpool._core.records import GONE
from aioconnpool._histogram import (
    BOUNDS,
    BY_MS_END,
    BY_MS_LAST,
    bucket_of,
)

Core = PoolCore[str, str, str]


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def group_of(key: str) -> str:
    """``"host:1"`` and ``"host:2"`` belong to the group ``"host"``."""
    return key.split(":", 1)[0]


def make_core(
    *,
    limit: int | None = None,
    per_key: int | None = None,
    limits: dict[str, int | None] | None = None,
    keepalive: float | None = None,
    is_alive: Callable[[str], bool] = lambda conn: True,
    clock: FakeClock | None = None,
    history: int = 10_000,
    **policy: Any,
) -> Core:
    """A core with a fake clock; ``policy`` passes idle-policy options on."""
    table = limits or {}

    def limit_for(key: str) -> int | None:
        return table.get(key, per_key)

    return PoolCore(
        limit=limit,
        limit_for=limit_for,
        group=group_of,
        keepalive_timeout=keepalive,
        is_alive=is_alive,
        clock=clock or FakeClock(),
        history=history,
        **policy,
    )


def permit(core: Core, key: str) -> Ticket:
    """Arrive on ``key`` and expect a permit to connect at once."""
    ticket, decision = core.arrive(key)
    assert ticket.state == GRANTED
    assert ticket.conn is None
    assert not decision.wake
    return ticket


def connect(core: Core, key: str, conn: str) -> str:
    """Arrive on ``key``, get a permit and open ``conn`` under it."""
    ticket = permit(core, key)
    assert nothing(core.connect_succeeded(ticket, conn))
    assert ticket.state == DONE
    return conn


def make_idle(core: Core, key: str, conn: str) -> str:
    """Open ``conn`` on ``key`` and release it to the pool."""
    connect(core, key, conn)
    decision = core.release(conn, "eof", None)
    assert decision is not None
    assert not decision.close
    return conn


def queued(core: Core, key: str) -> Ticket:
    ticket, decision = core.arrive(key)
    assert ticket.state == QUEUED
    assert nothing(decision)
    return ticket


def reuse(core: Core, key: str, conn: str) -> Ticket:
    """Arrive on ``key`` and expect the idle ``conn`` at once."""
    ticket, decision = core.arrive(key)
    assert ticket.state == GRANTED
    assert ticket.conn == conn
    assert nothing(decision)
    return ticket


def conn_of(ticket: Ticket) -> Hashable | None:
    """``ticket.conn``, read afresh (an earlier assert narrowed it for mypy)."""
    return ticket.conn


def closings(decision: Decision | None) -> list[tuple[object, str]]:
    """The (connection, reason) pairs a decision closes, in order."""
    assert decision is not None
    return [(c.conn, c.reason) for c in decision.close]


def nothing(decision: Decision | None) -> bool:
    """The decision asks for nothing to be done."""
    return decision is not None and not decision.wake and not decision.close


def sum_counters(core: Core) -> Counters:
    total = Counters()
    for figures in core.all_figures():
        total.add(figures.counters)
    total.add(core.forgotten[1])
    return total


def check_consistent(core: Core) -> None:
    """The invariants of the module docstring, on a snapshot."""
    figs = list(core.all_figures())
    assert sum(f.acquired for f in figs) == core.acquired
    assert sum(f.idle for f in figs) == core.idle
    assert sum(f.connecting for f in figs) == core.connecting
    assert sum(f.waiting for f in figs) == core.waiting
    if core.limit is not None:
        assert core.acquired + core.connecting <= core.limit
    for f in figs:
        if f.waiting:
            assert f.room == 0, f
    t = core.totals
    assert t.created + t.reused == sum(t.released.values()) + core.acquired
    assert sum_counters(core) == core.totals
    check_ready_queue(core)


def check_ready_queue(core: Core) -> None:
    """Each key in the ready queue has one live entry, ordered by its first
    waiter (what makes grants across keys FIFO), and has waiters."""
    entries = core._ready.entries()
    assert all(ks.ready_token >= 0 for _seq, ks in entries)
    live = {id(ks): seq for seq, ks in entries}
    ready = [ks for ks in core._keys.values() if ks.ready_token >= 0]
    assert len(ready) == core._ready.count == len(live) == len(entries)
    moved = core._ready.moved
    if moved is not None:  # re-keyed when compared: it must be alone
        assert ready == [moved]
    for ks in ready:
        assert ks.first_waiter is not None
        if ks is not moved:
            assert live[id(ks)] == ks.first_waiter.seq


def granted_conn(ticket: Ticket) -> Hashable | None:
    return ticket.conn


# --------------------------------------------------------------------- limits


def test_limit_one_is_not_exceeded_by_reuse() -> None:
    core = make_core(limit=1)
    make_idle(core, "a", "ca")
    b = permit(core, "b")  # the idle "ca" does not count against the limit
    assert core.connecting == 1
    # "a" has an idle connection, but reusing it would make two in use.
    a = queued(core, "a")
    assert a.conn is None
    assert core.idle == 1
    assert core.acquired == 0
    check_consistent(core)

    core.connect_succeeded(b, "cb")
    assert a.state == QUEUED  # connecting -> acquired frees nothing
    decision = core.release("cb", "eof", None)
    assert decision is not None
    assert list(decision.wake) == [a]
    assert a.state == GRANTED
    assert granted_conn(a) == "ca"  # read afresh: mypy narrowed a.conn to None
    assert core.acquired == 1
    assert core.idle == 1  # "cb" went idle, "ca" is in use
    check_consistent(core)


def test_limit_per_host_holds() -> None:
    core = make_core(per_key=2)
    connect(core, "a", "a1")
    connect(core, "a", "a2")
    waiter = queued(core, "a")
    permit(core, "b")  # another key is not blocked by "a"'s limit
    fig = core.figures("a")
    assert (fig.acquired, fig.waiting, fig.limit, fig.room) == (2, 1, 2, 0)
    check_consistent(core)
    decision = core.release("a1", "eof", "server")
    assert decision is not None
    assert list(decision.wake) == [waiter]
    assert closings(decision) == [("a1", "server")]
    assert core.figures("a").acquired + core.figures("a").connecting == 2


def test_connecting_counts_against_both_limits() -> None:
    core = make_core(limit=3, per_key=2)
    permit(core, "a")
    permit(core, "a")
    assert core.connecting == 2
    assert core.figures("a").room == 0
    queued(core, "a")  # per-key limit
    permit(core, "b")
    assert core.total_room() == 0
    queued(core, "c")  # total limit
    assert core.figures("c").room == 0
    assert core.waiting == 2
    check_consistent(core)


def test_unlimited_never_queues() -> None:
    core = make_core()
    for i in range(100):
        permit(core, f"k{i % 3}")
    assert core.connecting == 100
    assert core.total_room() is None
    assert core.figures("k0").room is None
    check_consistent(core)


# ----------------------------------------------------------------- fairness


def test_fifo_within_a_key() -> None:
    core = make_core(per_key=1)
    first = permit(core, "a")
    waiters = [queued(core, "a") for _ in range(4)]
    core.connect_succeeded(first, "c")
    woken: list[Ticket] = []
    for _ in waiters:
        decision = core.release("c", "eof", None)
        assert decision is not None
        assert len(decision.wake) == 1
        ticket = decision.wake[0]
        assert ticket.conn == "c"
        core.handed_over(ticket)
        woken.append(ticket)
    assert woken == waiters
    assert core.totals.reused == 4


def test_fifo_across_keys_when_total_limit_blocks() -> None:
    core = make_core(limit=2)
    connect(core, "x", "x1")
    connect(core, "x", "x2")
    b1 = queued(core, "b")
    a1 = queued(core, "a")
    c1 = queued(core, "c")
    b2 = queued(core, "b")
    a2 = queued(core, "a")
    order: list[Ticket] = []
    for conn in ("x1", "x2"):
        decision = core.release(conn, "eof", "server")
        assert decision is not None
        assert len(decision.wake) == 1
        order.extend(decision.wake)
    assert order == [b1, a1]
    check_consistent(core)
    # The first two permits end; the freed slots go to c1, then b2.
    for ticket in (b1, a1):
        decision = core.connect_failed(ticket)
        order.extend(decision.wake)
    assert order == [b1, a1, c1, b2]
    assert a2.state == QUEUED
    check_consistent(core)


def test_key_blocked_by_its_own_limit_is_skipped() -> None:
    core = make_core(limit=3, limits={"a": 1})
    connect(core, "a", "a1")  # "a" is now full
    connect(core, "x", "x1")
    connect(core, "x", "x2")  # the total is full
    a = queued(core, "a")  # the oldest waiter, but "a" has no room
    b = queued(core, "b")
    decision = core.release("x1", "eof", None)
    assert decision is not None
    assert list(decision.wake) == [b]
    assert a.state == QUEUED
    check_consistent(core)
    # When "a" frees its own slot, its waiter runs.
    decision = core.release("a1", "eof", None)
    assert decision is not None
    assert list(decision.wake) == [a]
    assert a.conn == "a1"
    check_consistent(core)


def test_key_blocked_by_per_key_limit_does_not_block_others_with_no_total() -> None:
    core = make_core(limits={"a": 1})
    connect(core, "a", "a1")
    waiting = queued(core, "a")
    for _ in range(3):
        permit(core, "b")
    assert waiting.state == QUEUED
    assert core.waiting == 1
    check_consistent(core)


def test_keepalive_release_hands_idle_connection_to_first_waiter() -> None:
    core = make_core(per_key=1)
    connect(core, "a", "c")
    first = queued(core, "a")
    second = queued(core, "a")
    decision = core.release("c", "release", None)
    assert decision is not None
    assert list(decision.wake) == [first]
    assert not decision.close
    assert first.state == GRANTED
    assert first.conn == "c"
    assert second.state == QUEUED
    assert core.totals.reused == 1
    assert core.figures("a").counters.reused == 1
    assert core.totals.released["release"] == 1
    assert core.idle == 0
    assert core.acquired == 1
    core.handed_over(first)
    assert first.state == DONE
    check_consistent(core)


def test_newcomer_never_overtakes_queued_request_same_key() -> None:
    core = make_core(per_key=1)
    connect(core, "a", "a1")
    old = queued(core, "a")
    new = queued(core, "a")
    decision = core.release("a1", "eof", None)
    assert decision is not None
    assert list(decision.wake) == [old]
    assert new.state == QUEUED
    decision = core.abandon(old)  # the reuse grant goes back to the pool
    assert list(decision.wake) == [new]
    assert new.conn == "a1"
    check_consistent(core)


def test_newcomer_never_overtakes_queued_request_other_key() -> None:
    core = make_core(limit=1)
    connect(core, "x", "x1")
    old = queued(core, "a")
    newcomer = queued(core, "b")
    decision = core.release("x1", "eof", None)
    assert decision is not None
    assert list(decision.wake) == [old]
    assert newcomer.state == QUEUED
    # While "a"'s permit is out, a request on the key holding the idle
    # connection must still wait: the total has no room.
    third = queued(core, "x")
    assert third.state == QUEUED
    assert core.idle == 1
    check_consistent(core)


# ------------------------------------------------------------------- abandon


def test_abandon_queued_leaves_no_trace() -> None:
    core = make_core(limit=1)
    connect(core, "x", "x1")
    ticket = queued(core, "a")
    assert core.waiting == 1
    assert core.figures("a").waiting == 1
    assert nothing(core.abandon(ticket))
    assert ticket.state == DONE
    assert core.waiting == 0
    fig = core.figures("a")
    assert (fig.acquired, fig.idle, fig.connecting, fig.waiting) == (0, 0, 0, 0)
    assert fig.counters.requests == 1
    assert sum(fig.counters.released.values()) == 0
    assert sum(fig.counters.closed.values()) == 0
    # "a" holds nothing: it is retired, only its counters remain.
    assert "a" not in core._keys
    # A release now has nobody to wake.
    decision = core.release("x1", "eof", None)
    assert nothing(decision)
    check_consistent(core)


def test_abandon_middle_waiter_keeps_order() -> None:
    core = make_core(limit=1)
    connect(core, "x", "x1")
    t1 = queued(core, "a")
    t2 = queued(core, "b")
    t3 = queued(core, "a")
    core.abandon(t1)  # the head of "a", and the oldest waiter overall
    decision = core.release("x1", "eof", "server")
    assert decision is not None
    assert list(decision.wake) == [t2]
    core.abandon(t2)  # an unused permit
    assert t3.state == GRANTED
    check_consistent(core)


def test_abandon_granted_permit_frees_slot_and_wakes_next() -> None:
    core = make_core(limit=1)
    first = permit(core, "a")
    nxt = queued(core, "b")
    decision = core.abandon(first)
    assert list(decision.wake) == [nxt]
    assert first.state == DONE
    assert nxt.state == GRANTED
    assert nxt.conn is None
    assert core.connecting == 1
    assert core.figures("a").connecting == 0
    assert core.totals.connect_errors == 0
    check_consistent(core)


def test_abandon_granted_reuse_returns_connection_to_idle() -> None:
    core = make_core()
    make_idle(core, "a", "c")
    ticket = reuse(core, "a", "c")
    assert core.acquired == 1
    decision = core.abandon(ticket, "cancelled")
    assert nothing(decision)
    assert ticket.state == DONE
    assert core.acquired == 0
    assert core.idle == 1
    assert core.totals.released["cancelled"] == 1
    assert core.figures("a").counters.released["cancelled"] == 1
    assert core.totals.reused == 1
    check_consistent(core)
    # It can be reused again.
    again = reuse(core, "a", "c")
    assert again.conn == "c"


def test_abandon_granted_reuse_wakes_waiter_of_same_key() -> None:
    core = make_core(per_key=1)
    make_idle(core, "a", "c")
    ticket = reuse(core, "a", "c")
    waiter = queued(core, "a")
    decision = core.abandon(ticket, "error")
    assert list(decision.wake) == [waiter]
    assert waiter.conn == "c"
    assert core.totals.released["error"] == 1
    assert core.totals.reused == 2
    check_consistent(core)


@pytest.mark.parametrize("kind", ["queued", "permit", "reuse", "done"])
def test_abandon_is_idempotent(kind: str) -> None:
    core = make_core(limit=1)
    if kind == "queued":
        connect(core, "x", "x1")
        ticket = queued(core, "a")
    elif kind == "permit":
        ticket = permit(core, "a")
    elif kind == "reuse":
        make_idle(core, "a", "c")
        ticket = reuse(core, "a", "c")
    else:
        ticket = permit(core, "a")
        core.connect_succeeded(ticket, "c")
    core.abandon(ticket)
    before = (core.acquired, core.idle, core.connecting, core.waiting)
    totals = core.totals.copy()
    for _ in range(3):
        assert nothing(core.abandon(ticket))
    assert ticket.state == DONE
    assert (core.acquired, core.idle, core.connecting, core.waiting) == before
    assert core.totals == totals
    check_consistent(core)


def test_abandon_after_handed_over_does_nothing() -> None:
    core = make_core()
    make_idle(core, "a", "c")
    ticket = reuse(core, "a", "c")
    assert core.handed_over(ticket) is True
    assert core.handed_over(ticket) is False  # spent
    assert nothing(core.abandon(ticket))
    assert core.acquired == 1
    assert core.totals.released["cancelled"] == 0
    check_consistent(core)


# ------------------------------------------------------------------ connect


def test_connect_failed_frees_slot_and_wakes_next() -> None:
    core = make_core(limit=1)
    first = permit(core, "a")
    second = queued(core, "a")
    third = queued(core, "b")
    decision = core.connect_failed(first)
    assert list(decision.wake) == [second]
    assert first.state == DONE
    assert core.totals.connect_errors == 1
    assert core.figures("a").counters.connect_errors == 1
    assert core.connecting == 1
    decision = core.connect_failed(second)
    assert list(decision.wake) == [third]
    assert core.totals.connect_errors == 2
    assert core.totals.created == 0
    check_consistent(core)


def test_connect_outcome_needs_a_permit() -> None:
    core = make_core(limit=1)
    ticket = permit(core, "a")
    core.connect_succeeded(ticket, "c")
    with pytest.raises(RuntimeError):
        core.connect_succeeded(ticket, "c2")
    with pytest.raises(RuntimeError):
        core.connect_failed(ticket)
    check_consistent(core)


def test_connecting_tickets_and_records() -> None:
    core = make_core()
    t1 = permit(core, "a")
    t2 = permit(core, "b")
    assert set(core.connecting_tickets()) == {t1, t2}
    core.connect_succeeded(t1, "c1")
    assert list(core.connecting_tickets()) == [t2]
    assert [r.handle for r in core.records()] == ["c1"]
    (rec,) = core.records()
    assert core.key_of(rec) == "a"
    assert rec.served == 1


# ------------------------------------------------------------------- expiry


def test_expire_closes_only_expired_idle_oldest_first() -> None:
    clock = FakeClock()
    core = make_core(keepalive=10.0, clock=clock)
    assert core.next_expiry() is None
    start = clock.now
    for key, conn in [("b", "b1"), ("b", "b2"), ("a", "a1"), ("a", "a2")]:
        connect(core, key, conn)
    core.release("b1", "eof", None)
    clock.advance(1)
    core.release("a1", "eof", None)
    clock.advance(1)
    core.release("b2", "eof", None)
    clock.advance(1)
    connect(core, "c", "c1")  # acquired: never expires
    core.release("a2", "eof", None)
    assert core.next_expiry() == start + 10.0

    clock.now = start + 9.5
    assert nothing(core.expire())
    assert core.idle == 4

    clock.now = start + 11.5
    decision = core.expire()
    assert closings(decision) == [("b1", "expired"), ("a1", "expired")]
    assert not decision.wake
    assert core.idle == 2
    assert core.next_expiry() == start + 12.0
    assert core.totals.closed["expired"] == 2
    assert core.figures("a").counters.closed["expired"] == 1

    clock.now = start + 100
    decision = core.expire()
    assert closings(decision) == [("b2", "expired"), ("a2", "expired")]
    assert core.next_expiry() is None
    assert core.idle == 0
    assert core.acquired == 1
    assert core.totals.closed["expired"] == 4
    check_consistent(core)


def test_expire_at_exactly_next_expiry_closes_the_oldest() -> None:
    """A timer set for ``next_expiry()`` must find that connection due."""
    clock = FakeClock()
    core = make_core(keepalive=5.0, clock=clock)
    make_idle(core, "a", "a1")
    clock.advance(1)
    make_idle(core, "b", "b1")
    deadline = core.next_expiry()
    assert deadline is not None
    clock.now = deadline
    decision = core.expire()
    assert closings(decision) == [("a1", "expired")]
    assert core.next_expiry() == deadline + 1
    check_consistent(core)


def test_expire_without_keepalive_does_nothing() -> None:
    clock = FakeClock()
    core = make_core(keepalive=None, clock=clock)
    make_idle(core, "a", "c")
    clock.advance(1e9)
    assert nothing(core.expire())
    assert core.next_expiry() is None
    reuse(core, "a", "c")


def test_next_expiry_follows_release_order() -> None:
    clock = FakeClock()
    core = make_core(keepalive=5.0, clock=clock)
    connect(core, "a", "a1")
    connect(core, "a", "a2")
    clock.advance(2)
    core.release("a2", "eof", None)
    released_at = clock.now
    clock.advance(2)
    core.release("a1", "eof", None)
    assert core.next_expiry() == released_at + 5.0


def test_expired_idle_is_closed_on_reuse_and_a_permit_granted() -> None:
    clock = FakeClock()
    core = make_core(keepalive=10.0, clock=clock)
    make_idle(core, "a", "old")
    clock.advance(11)
    ticket, decision = core.arrive("a")
    assert ticket.state == GRANTED
    assert ticket.conn is None
    assert closings(decision) == [("old", "expired")]
    assert core.connecting == 1
    assert core.idle == 0
    assert core.totals.closed["expired"] == 1
    assert core.totals.reused == 0
    check_consistent(core)


def test_expired_idle_skipped_for_fresh_one() -> None:
    clock = FakeClock()
    core = make_core(keepalive=10.0, clock=clock)
    connect(core, "a", "old")
    connect(core, "a", "new")
    core.release("old", "eof", None)
    clock.advance(5)
    core.release("new", "eof", None)
    clock.advance(6)
    ticket, decision = core.arrive("a")
    assert ticket.conn == "new"
    assert closings(decision) == [("old", "expired")]
    assert core.totals.reused == 1
    check_consistent(core)


def test_dead_idle_connection_is_closed_as_server_instead_of_reused() -> None:
    dead = {"c1"}
    core = make_core(is_alive=lambda conn: conn not in dead)
    make_idle(core, "a", "c1")
    ticket, decision = core.arrive("a")
    assert ticket.conn is None
    assert closings(decision) == [("c1", "server")]
    assert core.totals.closed["server"] == 1
    assert core.totals.reused == 0
    check_consistent(core)


def test_keep_alive_release_goes_straight_to_a_waiter_of_its_key() -> None:
    core = make_core(limit=1)
    connect(core, "a", "c1")
    waiter = queued(core, "a")
    decision = core.release("c1", "eof", None)
    assert decision is not None
    assert list(decision.wake) == [waiter]
    assert not decision.close
    assert (waiter.state, waiter.conn) == (GRANTED, "c1")
    assert (core.idle, core.acquired, core.waiting) == (0, 1, 0)
    assert core.totals.reused == 1
    assert core.handed_over(waiter)
    check_consistent(core)


def test_released_connection_kept_idle_when_an_older_waiter_wins_the_slot() -> None:
    # The slot goes to b's older waiter (a new connection: b has none idle);
    # a's connection, released keep-alive, must stay idle, not vanish.
    core = make_core(limit=1)
    connect(core, "a", "c1")
    older = queued(core, "b")
    newer = queued(core, "a")
    decision = core.release("c1", "eof", None)
    assert decision is not None
    assert list(decision.wake) == [older]
    assert (older.state, older.conn) == (GRANTED, None)
    assert newer.state == QUEUED
    assert (core.idle, core.connecting, core.waiting) == (1, 1, 1)
    assert core.is_idle("c1")
    check_consistent(core)


def test_released_connection_kept_idle_when_its_key_lost_its_room() -> None:
    # The key's limit went down while a request waited: the connection just
    # released may not go to that waiter, and must stay idle, not vanish.
    core = make_core(per_key=1)
    connect(core, "a", "c1")
    waiter = queued(core, "a")
    assert nothing(core.set_limit("a", 0))
    decision = core.release("c1", "eof", None)
    assert nothing(decision)
    assert waiter.state == QUEUED
    assert (core.idle, core.acquired, core.waiting) == (1, 0, 1)
    assert core.is_idle("c1")
    check_consistent(core)


def test_dead_idle_connection_closed_when_waking_waiter() -> None:
    dead: set[str] = set()
    core = make_core(per_key=1, is_alive=lambda conn: conn not in dead)
    connect(core, "a", "c1")
    waiter = queued(core, "a")
    dead.add("c1")
    decision = core.release("c1", "eof", None)
    assert decision is not None
    assert list(decision.wake) == [waiter]
    assert closings(decision) == [("c1", "server")]
    assert waiter.conn is None
    assert core.connecting == 1
    check_consistent(core)


def test_lost_grant_is_traded_for_another_idle_connection() -> None:
    """The request woken with an idle grant runs a loop turn later; if the
    connector then finds the connection closed by the peer, the request gets
    the key's next live idle one, in the same slot: nobody else moves."""
    dead: set[str] = set()
    core = make_core(limit=3, is_alive=lambda conn: conn not in dead)
    for conn in ("c1", "c2", "c3"):
        connect(core, "a", conn)
    for conn in ("c1", "c2", "c3"):
        assert nothing(core.release(conn, "eof", None))
    for conn in ("held", "held2", "held3"):
        connect(core, "b", conn)
    waiter = queued(core, "a")
    other = queued(core, "b")
    decision = core.release("held", "eof", "error")
    assert decision is not None
    assert list(decision.wake) == [waiter]
    assert waiter.conn == "c1"
    dead.update({"c1", "c2"})
    assert nothing(core.conn_lost("c1"))  # granted: left for the connector
    decision = core.grant_lost(waiter, "server")
    # c2 died too: found dead on the way to c3.
    assert closings(decision) == [("c1", "server"), ("c2", "server")]
    assert not decision.wake
    assert (waiter.state, conn_of(waiter)) == (GRANTED, "c3")
    assert other.state == QUEUED
    a = core.figures("a").counters
    assert (a.reused, a.released["error"], a.closed["server"]) == (2, 1, 2)
    assert core.acquired == 3
    assert core.idle == 0
    assert core.handed_over(waiter)
    check_consistent(core)


def test_lost_grant_gives_a_permit_when_no_live_idle_connection_is_left() -> None:
    clock = FakeClock()
    core = make_core(per_key=1, clock=clock)
    connect(core, "a", "c1")
    waiter = queued(core, "a")
    decision = core.release("c1", "eof", None)  # straight to the waiter
    assert decision is not None
    assert list(decision.wake) == [waiter]
    assert waiter.conn == "c1"
    clock.advance(2.0)
    # Bytes nobody asked for arrived on it meanwhile.
    assert closings(core.grant_lost(waiter, "error")) == [("c1", "error")]
    assert (waiter.state, conn_of(waiter)) == (GRANTED, None)
    assert (core.acquired, core.connecting) == (0, 1)
    assert waiter.granted_at == clock.now  # its connect time starts now
    assert nothing(core.connect_succeeded(waiter, "c2"))
    a = core.figures("a").counters
    assert (a.created, a.reused, a.released["error"]) == (2, 1, 1)
    assert a.closed["error"] == 1
    assert a.histogram(0).count == 2  # waited once each: no second wait
    check_consistent(core)


def test_lost_grant_of_a_pool_closed_meanwhile_changes_nothing() -> None:
    core = make_core(per_key=1)
    connect(core, "a", "c1")
    waiter = queued(core, "a")
    assert core.release("c1", "eof", None) is not None
    core.close()
    assert nothing(core.grant_lost(waiter))
    assert not core.handed_over(waiter)
    assert nothing(core.grant_lost(waiter))  # spent
    check_consistent(core)


# --------------------------------------------------------- lost and release


def test_conn_lost_on_idle_removes_it() -> None:
    core = make_core()
    make_idle(core, "a", "c")
    assert closings(core.conn_lost("c")) == [("c", "server")]
    assert core.idle == 0
    assert core.totals.closed["server"] == 1
    assert core.figures("a").counters.closed["server"] == 1
    assert list(core.records()) == []
    assert "a" not in core._keys  # retired
    assert core.release("c", "eof", None) is None
    check_consistent(core)


def test_conn_lost_on_acquired_does_nothing() -> None:
    core = make_core()
    connect(core, "a", "c")
    assert nothing(core.conn_lost("c"))
    assert core.acquired == 1
    assert core.totals.closed["server"] == 0
    decision = core.release("c", "error", "error")
    assert decision is not None
    assert closings(decision) == [("c", "error")]
    assert core.totals.closed["error"] == 1
    assert core.totals.released["error"] == 1
    check_consistent(core)


def test_conn_lost_unknown_does_nothing() -> None:
    core = make_core()
    assert nothing(core.conn_lost("nope"))
    assert core.totals == Counters()


def test_release_with_close_reason_closes_and_counts() -> None:
    core = make_core()
    connect(core, "a", "c")
    decision = core.release("c", "release", "unread")
    assert decision is not None
    assert closings(decision) == [("c", "unread")]
    assert core.totals.closed["unread"] == 1
    assert core.totals.released["release"] == 1
    assert core.figures("a").counters.closed["unread"] == 1
    assert core.idle == 0
    assert core.acquired == 0
    check_consistent(core)


def test_release_of_unknown_or_idle_conn_returns_none() -> None:
    core = make_core()
    assert core.release("nope", "eof", None) is None
    make_idle(core, "a", "c")
    assert core.release("c", "eof", None) is None  # already idle
    assert core.totals.released["eof"] == 1
    check_consistent(core)


def test_counter_keys_are_always_present() -> None:
    core = make_core()
    assert set(core.totals.released) == set(RELEASE_HOWS)
    assert set(core.totals.closed) == set(CLOSE_REASONS)
    assert set(core.figures("never").counters.closed) == set(CLOSE_REASONS)


# --------------------------------------------------------------------- close


def test_close_closes_everything_and_refuses_waiters() -> None:
    core = make_core(limit=3)
    connect(core, "a", "busy1")
    make_idle(core, "a", "idle1")
    connect(core, "b", "busy2")
    pending = permit(core, "c")
    w1 = queued(core, "a")
    w2 = queued(core, "d")
    decision = core.close()
    assert core.closed
    assert set(decision.wake) == {w1, w2}
    assert w1.state == CLOSED
    assert w2.state == CLOSED
    assert sorted(closings(decision)) == sorted(
        [
            ("idle1", "connector_closed"),
            ("busy1", "connector_closed"),
            ("busy2", "connector_closed"),
        ]
    )
    assert core.totals.closed["connector_closed"] == 3
    assert core.totals.released["connector_closed"] == 2
    assert (core.acquired, core.idle, core.waiting) == (0, 0, 0)
    assert core.connecting == 1
    check_consistent(core)

    # The connection still being opened is closed when it arrives.
    decision = core.connect_succeeded(pending, "late")
    assert pending.state == CLOSED
    assert closings(decision) == [("late", "connector_closed")]
    assert core.connecting == 0
    assert core.totals.created == 4
    assert core.totals.closed["connector_closed"] == 4
    assert core.totals.released["connector_closed"] == 3
    assert list(core.records()) == []
    check_consistent(core)

    # Releasing a connection closed with the pool: the caller just closes it.
    assert core.release("busy1", "eof", None) is None
    # New requests are refused, a second close is a no-op.
    late, decision = core.arrive("a")
    assert late.state == CLOSED
    assert nothing(decision)
    assert nothing(core.close())
    assert nothing(core.abandon(w1))
    assert w1.state == CLOSED
    check_consistent(core)


def test_connect_failed_after_close() -> None:
    core = make_core(limit=1)
    ticket = permit(core, "a")
    core.close()
    assert nothing(core.connect_failed(ticket))
    assert core.connecting == 0
    assert core.totals.connect_errors == 1
    check_consistent(core)


def test_abandon_permit_after_close() -> None:
    core = make_core(limit=1)
    ticket = permit(core, "a")
    core.close()
    assert nothing(core.abandon(ticket))
    assert core.connecting == 0
    check_consistent(core)


def test_abandon_granted_reuse_after_close_when_key_still_live() -> None:
    """A reuse grant not yet taken when the pool closes, then abandoned.

    ``close()`` already closed and counted the handed-over idle connection;
    the key stays live because another permit of it is still connecting.
    Abandoning the grant must be a no-op, not a ``KeyError``.
    """
    core = make_core()
    make_idle(core, "a", "c1")
    granted = reuse(core, "a", "c1")
    pending = permit(core, "a")  # keeps key "a" live through close()
    core.close()
    assert nothing(core.abandon(granted))
    assert core.totals.released["connector_closed"] == 1
    assert core.totals.released["cancelled"] == 0
    assert nothing(core.connect_failed(pending))
    check_consistent(core)


def test_abandon_granted_reuse_after_close_when_key_retired() -> None:
    core = make_core()
    make_idle(core, "a", "c1")
    granted = reuse(core, "a", "c1")
    core.close()
    assert nothing(core.abandon(granted))
    assert core.totals.released["connector_closed"] == 1
    check_consistent(core)


# ----------------------------------------------------------------- set_limit


def test_set_limit_raising_wakes_waiters_at_once() -> None:
    core = make_core(per_key=1)
    connect(core, "a", "c")
    w1 = queued(core, "a")
    w2 = queued(core, "a")
    w3 = queued(core, "a")
    decision = core.set_limit("a", 3)
    assert list(decision.wake) == [w1, w2]
    assert w3.state == QUEUED
    assert core.figures("a").limit == 3
    check_consistent(core)
    decision = core.set_limit("a", None)
    assert list(decision.wake) == [w3]
    assert core.waiting == 0
    check_consistent(core)


def test_set_limit_raising_respects_total_limit() -> None:
    core = make_core(limit=2, per_key=1)
    connect(core, "a", "c")
    w1 = queued(core, "a")
    w2 = queued(core, "a")
    decision = core.set_limit("a", 5)
    assert list(decision.wake) == [w1]
    assert w2.state == QUEUED
    check_consistent(core)


def test_set_limit_lowering_stops_new_grants() -> None:
    core = make_core(per_key=3)
    connect(core, "a", "c1")
    connect(core, "a", "c2")
    assert nothing(core.set_limit("a", 1))
    w = queued(core, "a")
    assert core.figures("a").room == 0
    decision = core.release("c1", "eof", "server")
    assert decision is not None
    assert not decision.wake
    assert closings(decision) == [("c1", "server")]
    assert w.state == QUEUED  # one still acquired: the limit is reached
    decision = core.release("c2", "eof", None)
    assert decision is not None
    assert list(decision.wake) == [w]
    check_consistent(core)


def test_set_limit_lowering_unreadies_a_ready_key() -> None:
    core = make_core(limit=1, per_key=2)
    connect(core, "a", "c1")
    w_a = queued(core, "a")  # ready: "a" has per-key room, total has none
    w_b = queued(core, "b")
    core.set_limit("a", 1)
    decision = core.release("c1", "eof", None)
    assert decision is not None
    # "a" now has room again (c1 freed its slot); it is the oldest waiter.
    assert list(decision.wake) == [w_a]
    assert w_b.state == QUEUED
    check_consistent(core)


def test_set_limit_lowering_skips_key_for_younger_waiter() -> None:
    core = make_core(limit=2, per_key=2)
    connect(core, "a", "a1")
    connect(core, "x", "x1")
    w_a = queued(core, "a")
    w_b = queued(core, "b")
    core.set_limit("a", 1)  # "a" is full now
    decision = core.release("x1", "eof", None)
    assert decision is not None
    assert list(decision.wake) == [w_b]
    assert w_a.state == QUEUED
    check_consistent(core)


def test_set_limit_unknown_key_does_nothing() -> None:
    core = make_core(per_key=1)
    assert nothing(core.set_limit("nope", 5))
    assert core.figures("nope").limit == 1


# ------------------------------------------------------------ history, keys


def test_empty_keys_are_retired_and_counters_kept_in_history() -> None:
    core = make_core()
    connect(core, "a:1", "c")
    core.release("c", "eof", "server")
    assert "a:1" not in core._keys
    fig = core.figures("a:1")
    assert (fig.acquired, fig.idle, fig.connecting, fig.waiting) == (0, 0, 0, 0)
    assert fig.counters.requests == 1
    assert fig.counters.created == 1
    assert fig.counters.released["eof"] == 1
    assert fig.counters.closed["server"] == 1
    assert "a:1" in {f.key for f in core.all_figures()}
    assert core.keys_in_group("a") == {"a:1"}
    # Coming back resumes the same counters.
    connect(core, "a:1", "c2")
    assert core.figures("a:1").counters.requests == 2
    assert core.figures("a:1").counters.created == 2
    check_consistent(core)


def test_figures_is_a_snapshot() -> None:
    core = make_core()
    connect(core, "a", "c")
    fig = core.figures("a")
    fig.counters.requests = 99
    assert core.figures("a").counters.requests == 1


def test_a_live_keys_counters_are_built_when_read_from_a_copy() -> None:
    # stats() copies every live key's counts (an array and fields) and
    # builds the flat list only for the hosts it reads.
    clock = FakeClock()
    core = make_core(clock=clock)
    make_idle(core, "a", "ca")
    conn, ticket, _ = core.acquire("a", True, True)  # the keep-alive hot path
    assert (conn, ticket) == ("ca", None)
    counters = core.figures("a").counters
    with pytest.raises(AttributeError):
        object.__getattribute__(counters, "n")  # not built yet
    assert core.figures("a").requests == 2
    clock.advance(0.25)
    core.release("ca", "eof", None)  # after the snapshot: not in it
    assert counters.requests == 2
    assert counters.reused == 1
    assert counters.released["eof"] == 1  # the first request's
    assert counters.histogram(WAIT).count == 2
    later = core.figures("a").counters
    assert later.released["eof"] == 2
    assert later.histogram(HOLD).count == 2
    assert later.histogram(HOLD).sum == pytest.approx(0.25)
    assert sum_counters(core) == core.totals
    # Drained into the history and back: the same counts, fields included.
    reuse(core, "a", "ca")
    clock.advance(0.5)
    core.release("ca", "eof", "server")
    assert "a" not in core._keys
    frozen = core.figures("a").counters
    connect(core, "a", "cb")
    assert core.figures("a").requests == 4
    revived = core.figures("a").counters
    assert revived.requests == frozen.requests + 1 == 4
    assert revived.reused == frozen.reused == 2
    assert revived.released == frozen.released
    assert revived.released["eof"] == 3
    assert revived.histogram(HOLD).sum == pytest.approx(0.75)
    assert revived.histogram(LIFETIME).count == 1
    check_consistent(core)


def test_history_overflow_folds_into_forgotten() -> None:
    core = make_core(history=2)
    for i, key in enumerate(["h1:a", "h2:a", "h2:b"]):
        for j in range(i + 1):
            connect(core, key, f"{key}-{j}")
        for j in range(i + 1):
            core.release(f"{key}-{j}", "eof", "server")
        check_consistent(core)
    n, counters = core.forgotten
    assert n == 1
    assert counters.requests == 1
    assert counters.created == 1
    assert counters.closed["server"] == 1
    # The forgotten key reads as zeros; its group is gone.
    assert core.figures("h1:a").counters == Counters()
    assert core.keys_in_group("h1") == frozenset()
    assert core.keys_in_group("h2") == {"h2:a", "h2:b"}
    assert [f.key for f in core.all_figures()] == ["h2:a", "h2:b"]
    assert sum_counters(core) == core.totals
    assert core.totals.requests == 6

    # One more retirement: "h2:a" goes too.
    connect(core, "h3:a", "x")
    core.release("x", "eof", None)
    core.conn_lost("x")
    n, counters = core.forgotten
    assert n == 2
    assert counters.requests == 3
    assert core.keys_in_group("h2") == {"h2:b"}
    check_consistent(core)

    # A forgotten key that comes back starts from zero and joins its group.
    connect(core, "h1:a", "y")
    assert core.figures("h1:a").counters.requests == 1
    assert core.keys_in_group("h1") == {"h1:a"}
    check_consistent(core)


def test_history_zero_forgets_at_once() -> None:
    core = make_core(history=0)
    connect(core, "a", "c")
    core.release("c", "eof", "server")
    assert core.forgotten[0] == 1
    assert list(core.all_figures()) == []
    assert sum_counters(core) == core.totals


# ------------------------------------------------------------ flat cost


N_KEYS = 50_000


class CountingHeap:
    """Counts the heap operations the core performs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pops = 0
        self.pushes = 0
        real_pop = heapq.heappop
        real_push = heapq.heappush

        def heappop(heap: list[Any]) -> Any:
            self.pops += 1
            return real_pop(heap)

        def heappush(heap: list[Any], item: Any) -> None:
            self.pushes += 1
            real_push(heap, item)

        monkeypatch.setattr(heapq, "heappop", heappop)
        monkeypatch.setattr(heapq, "heappush", heappush)


def crowd(n: int = N_KEYS) -> tuple[Core, list[Ticket]]:
    """One held connection fills ``limit=1``; ``n`` keys wait behind it."""
    core = make_core(limit=1)
    connect(core, "held", "held")
    tickets = [queued(core, f"k{i}") for i in range(n)]
    assert core.waiting == n
    return core, tickets


def heap_is_compact(core: Core) -> bool:
    return core._ready.heap_size <= 4 * len(core._ready) + 64


def test_release_among_many_waiting_keys_is_flat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core, tickets = crowd()
    assert len(core._ready) == N_KEYS
    assert heap_is_compact(core)
    heap = CountingHeap(monkeypatch)
    decision = core.release("held", "eof", "server")
    assert decision is not None
    assert list(decision.wake) == [tickets[0]]
    assert heap.pops == 1
    assert heap.pushes == 0
    # The permit fails: again exactly one entry is popped.
    decision = core.connect_failed(tickets[0])
    assert list(decision.wake) == [tickets[1]]
    assert heap.pops == 2
    assert heap.pushes == 0
    assert len(core._ready) == N_KEYS - 2
    assert heap_is_compact(core)


def test_ready_heap_compacted_when_heads_with_followers_cancel() -> None:
    core = make_core(limit=1)
    connect(core, "held", "held")
    n_keys, depth = 1000, 10
    per_key: list[list[Ticket]] = [[] for _ in range(n_keys)]
    for _ in range(depth):
        for i in range(n_keys):
            per_key[i].append(queued(core, f"k{i}"))
    # Cancelling a head re-pushes its key: stale entries would pile up.
    for round_ in range(depth - 1):
        for i in range(n_keys):
            core.abandon(per_key[i][round_])
            assert heap_is_compact(core)
    assert len(core._ready) == n_keys
    assert core.waiting == n_keys
    decision = core.release("held", "eof", None)
    assert decision is not None
    assert list(decision.wake) == [per_key[0][-1]]


def test_ready_heap_compacted_when_sole_waiters_cancel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stale entries must not pile up when whole keys stop waiting.

    Cancelling a key's only waiter takes the key out of the ready queue
    without pushing anything: the dead entries (each holding a retired key
    state) must still be compacted away, and the next release must not wade
    through one stale entry per cancelled key.
    """
    core, tickets = crowd()
    for ticket in tickets[: N_KEYS - 100]:
        core.abandon(ticket)
        assert heap_is_compact(core)
    assert len(core._ready) == 100
    assert core.waiting == 100
    heap = CountingHeap(monkeypatch)
    decision = core.release("held", "eof", None)
    assert decision is not None
    assert list(decision.wake) == [tickets[N_KEYS - 100]]
    assert heap.pops <= 4 * 100 + 64 + 1  # bounded by live keys, not by N_KEYS
    check_consistent(core)


def test_many_waiters_one_key_release_is_flat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core = make_core(limit=1)
    connect(core, "a", "c")
    tickets = [queued(core, "a") for _ in range(N_KEYS)]
    assert len(core._ready) == 1  # one entry for the key, not per waiter
    assert core._ready.heap_size == 1
    heap = CountingHeap(monkeypatch)
    decision = core.release("c", "eof", None)
    assert decision is not None
    assert list(decision.wake) == [tickets[0]]
    # The only ready key's own waiter takes the slot: no heap operation, and
    # the key's one entry now stands for its next waiter.
    assert heap.pops == 0
    assert heap.pushes == 0
    assert core._ready.heap_size == 1
    assert core._ready.moved is not None  # re-keyed only when compared
    other = queued(core, "b")  # another key, ready: now it matters
    assert core._ready._heap[0][0] == tickets[1].seq
    assert other.seq > tickets[1].seq


def test_waiters_retired_keys_leave_no_state() -> None:
    core, tickets = crowd(1000)
    for ticket in tickets:
        core.abandon(ticket)
    assert core.waiting == 0
    assert set(core._keys) == {"held"}
    check_consistent(core)


def hashable_conns(core: Core) -> set[Hashable]:
    return {rec.handle for rec in core.records()}


def test_records_track_idle_and_acquired() -> None:
    core = make_core()
    make_idle(core, "a", "i1")
    connect(core, "b", "b1")
    assert hashable_conns(core) == {"i1", "b1"}
    reuse(core, "a", "i1")
    assert hashable_conns(core) == {"i1", "b1"}
    assert core.acquired == 2
    assert core.idle == 0


def test_reuse_and_expiry_agree_at_the_deadline() -> None:
    """At exactly idle_since + keepalive the connection is expired for both
    the expiry timer and a request that would reuse it."""
    clock = FakeClock()
    core = make_core(clock=clock, keepalive=10.0)
    make_idle(core, "a", "c1")
    deadline = core.next_expiry()
    assert deadline is not None
    clock.now = deadline
    ticket, decision = core.arrive("a")
    assert ticket.conn is None  # a permit to connect, not the expired socket
    assert closings(decision) == [("c1", "expired")]


def test_hand_over_refused_when_the_pool_closed_first() -> None:
    """A reuse grant whose connection the pool closed cannot be handed over."""
    core = make_core()
    make_idle(core, "a", "c1")
    granted = reuse(core, "a", "c1")
    core.close()
    assert core.handed_over(granted) is False
    assert granted.state == DONE
    assert nothing(core.abandon(granted))
    assert core.totals.released["connector_closed"] == 1
    check_consistent(core)


_BOUNDARY_DURATIONS = sorted(
    {0.0, 1e-9, 1e6}
    | set(BOUNDS[:-1])
    | {math.nextafter(b, 0.0) for b in BOUNDS[:-1]}
    | {math.nextafter(b, math.inf) for b in BOUNDS[:-1]}
)


@pytest.mark.parametrize("seconds", [*_BOUNDARY_DURATIONS, -1.0, math.inf, math.nan])
def test_bucket_of_is_bisect_left(seconds: float) -> None:
    assert bucket_of(seconds) == bisect_left(BOUNDS, seconds)


def test_the_bucket_table_rests_on_whole_milliseconds() -> None:
    # Its premise: every finite bound is a whole number of milliseconds, and
    # multiplying it by 1000.0 gives exactly that number (so no duration
    # above a bound can fall in the millisecond below it).
    for bound in BOUNDS[:-1]:
        assert bound * 1000.0 == round(bound * 1000.0), bound
    # Durations from BY_MS_END ms on scan from BY_MS_LAST, whose bound it is.
    assert BOUNDS[BY_MS_LAST] * 1000.0 == BY_MS_END


@pytest.mark.parametrize("seconds", [*_BOUNDARY_DURATIONS, -1.0, -1e-4, 9.9995, 10.0])
def test_the_bucket_table_agrees_with_bisect_left(seconds: float) -> None:
    assert bucket_by_table(seconds) == bisect_left(BOUNDS, seconds)


def test_the_bucket_table_agrees_with_bisect_left_at_every_millisecond() -> None:
    for ms in range(BY_MS_END + 2):
        s = ms / 1000
        for seconds in (math.nextafter(s, 0.0), s, math.nextafter(s, math.inf)):
            assert bucket_by_table(seconds) == bisect_left(BOUNDS, seconds), seconds


@given(st.floats(min_value=-1.0, max_value=4000.0))
def test_the_bucket_table_agrees_with_bisect_left_anywhere(seconds: float) -> None:
    assert bucket_by_table(seconds) == bisect_left(BOUNDS, seconds)


@pytest.mark.parametrize("seconds", _BOUNDARY_DURATIONS)
def test_every_duration_lands_in_its_bisect_bucket(seconds: float) -> None:
    # The core finds buckets by an inlined scan (no call per request): each
    # timed duration must land where bisect puts it, bounds included.
    clock = FakeClock(0.0)
    core = make_core(per_key=1, clock=clock)
    ticket = permit(core, "a")
    clock.advance(seconds)
    assert nothing(core.connect_succeeded(ticket, "c1"))  # connect: seconds
    born = clock.now
    waiter = queued(core, "a")
    clock.advance(seconds)
    decision = core.release("c1", "eof", None)  # held and waited: seconds
    assert decision is not None
    assert list(decision.wake) == [waiter]
    assert core.handed_over(waiter)
    handed = clock.now
    clock.advance(seconds)
    assert core.release("c1", "eof", "error") is not None  # closed
    a = core.figures("a").counters
    for which, observed in (
        (0, [0.0, seconds]),  # the first request was served at once
        (1, [seconds]),
        (2, [handed - born, clock.now - handed]),
        (3, [clock.now - born]),
    ):
        expected = [0] * len(BOUNDS)
        for value in observed:
            expected[bisect_left(BOUNDS, value)] += 1
        assert list(a.histogram(which).counts) == expected, which
        assert core.totals.histogram(which) == a.histogram(which)
    check_consistent(core)


def test_a_record_that_left_the_pool_is_gone_and_releases_nothing() -> None:
    # The connector's fast lane releases by the record its protocol kept:
    # the record alone must tell that the pool let the connection go.
    core = make_core(per_key=2)
    connect(core, "a", "c1")
    connect(core, "a", "c2")
    r1, r2 = core.record_of("c1"), core.record_of("c2")
    assert r1 is not None
    assert r2 is not None
    decision = core.release("c1", "eof", "error", record=r1)  # closed
    assert decision is not None
    assert r1.state == GONE
    assert core.release("c1", "eof", None, record=r1) is None  # only once
    core.close()  # counts c2 released and closed with the pool
    assert r2.state == GONE
    released = core.totals.released["connector_closed"]
    assert core.release("c2", "eof", None, record=r2) is None
    assert core.totals.released["connector_closed"] == released == 1
    check_consistent(core)
