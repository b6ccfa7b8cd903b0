"""The idle policy and the fail-fast paths of the accounting core.

Each test drives the core directly with fake connections and a fake clock;
the connector-level behaviour is in ``test_policies.py``.
"""

from __future__ import annotations

import pytest

from aioconnpool._core import DONE, GRANTED, QUEUED, REJECTED

from .test_core import (
    FakeClock,
    check_consistent,
    closings,
    connect,
    make_core,
    make_idle,
    nothing,
    permit,
    queued,
    reuse,
)


def release_keep(core: object, conn: str) -> list[tuple[object, str]]:
    """Release ``conn`` keep-alive; the (connection, reason) pairs closed."""
    decision = core.release(conn, "eof", None)  # type: ignore[attr-defined]
    assert decision is not None
    return closings(decision)


# ------------------------------------------------------------- idle caps


def test_max_idle_per_key_discards_the_connection_coming_back() -> None:
    core = make_core(max_idle_per_key=1)
    connect(core, "a", "a1")
    connect(core, "a", "a2")
    assert release_keep(core, "a1") == []
    assert release_keep(core, "a2") == [("a2", "pool_full")]
    fig = core.figures("a")
    assert (fig.idle, fig.counters.closed["pool_full"]) == (1, 1)
    assert fig.counters.released["eof"] == 2  # both acquisitions ended
    # Another key has its own allowance.
    make_idle(core, "b", "b1")
    assert core.idle == 2
    check_consistent(core)


def test_max_idle_per_key_zero_keeps_nothing() -> None:
    core = make_core(max_idle_per_key=0)
    connect(core, "a", "a1")
    assert release_keep(core, "a1") == [("a1", "pool_full")]
    assert core.idle == 0
    assert "a" not in core._keys  # nothing held: retired
    check_consistent(core)


def test_max_idle_closes_the_longest_idle_of_any_key() -> None:
    clock = FakeClock()
    core = make_core(max_idle=2, clock=clock)
    make_idle(core, "a", "a1")
    clock.advance(1)
    make_idle(core, "b", "b1")
    clock.advance(1)
    connect(core, "c", "c1")
    assert release_keep(core, "c1") == [("a1", "pool_full")]
    assert sorted(str(r.handle) for r in core.records()) == ["b1", "c1"]
    assert "a" not in core._keys  # its only connection went: retired
    assert core.figures("a").counters.closed["pool_full"] == 1
    check_consistent(core)


def test_max_idle_keys_evicts_the_least_recently_used_key() -> None:
    clock = FakeClock()
    core = make_core(max_idle_keys=2, clock=clock)
    connect(core, "a", "a1")
    connect(core, "a", "a2")
    assert release_keep(core, "a1") == release_keep(core, "a2") == []
    make_idle(core, "b", "b1")
    # "a" is used again: now "b" is the least recently used.
    ticket = reuse(core, "a", "a1")
    assert core.handed_over(ticket)
    assert release_keep(core, "a1") == []
    connect(core, "c", "c1")
    assert release_keep(core, "c1") == [("b1", "evicted")]
    assert core.figures("b").counters.closed["evicted"] == 1
    assert "b" not in core._keys
    assert core.figures("a").idle == 2
    # Evicting a key closes all of its idle connections.
    connect(core, "d", "d1")
    assert sorted(release_keep(core, "d1")) == [("a1", "evicted"), ("a2", "evicted")]
    check_consistent(core)


def test_max_idle_keys_ignores_keys_with_nothing_idle() -> None:
    core = make_core(max_idle_keys=1)
    connect(core, "busy", "busy1")  # acquired only: keeps nothing idle
    make_idle(core, "a", "a1")
    assert core.idle == 1
    assert core.figures("busy").acquired == 1
    check_consistent(core)


# ------------------------------------------------------------- lifetime


def test_max_requests_closes_after_that_many_requests() -> None:
    core = make_core(max_requests=2)
    connect(core, "a", "a1")  # request 1
    assert release_keep(core, "a1") == []
    ticket = reuse(core, "a", "a1")  # request 2
    assert core.handed_over(ticket)
    assert release_keep(core, "a1") == [("a1", "max_requests")]
    assert core.totals.closed["max_requests"] == 1
    check_consistent(core)


def test_a_grant_given_back_unused_does_not_count_as_a_request() -> None:
    core = make_core(max_requests=2)
    make_idle(core, "a", "a1")
    ticket = reuse(core, "a", "a1")
    assert nothing(core.abandon(ticket))  # never handed over
    ticket = reuse(core, "a", "a1")
    assert core.handed_over(ticket)
    assert release_keep(core, "a1") == [("a1", "max_requests")]


def test_max_age_closes_on_release_and_before_reuse() -> None:
    clock = FakeClock()
    core = make_core(max_age=10.0, clock=clock)
    connect(core, "a", "old")
    clock.advance(10.0)
    assert release_keep(core, "old") == [("old", "max_age")]
    make_idle(core, "a", "young")
    clock.advance(10.0)  # too old while idle: closed instead of reused
    ticket, decision = core.arrive("a")
    assert ticket.state == GRANTED
    assert ticket.conn is None
    assert closings(decision) == [("young", "max_age")]
    assert core.totals.closed["max_age"] == 2
    check_consistent(core)


@pytest.mark.parametrize(("reuse_order", "first"), [("fifo", "a1"), ("lifo", "a3")])
def test_reuse_order(reuse_order: str, first: str) -> None:
    clock = FakeClock()
    core = make_core(reuse=reuse_order, clock=clock)
    for conn in ("a1", "a2", "a3"):
        connect(core, "a", conn)
    for conn in ("a1", "a2", "a3"):
        clock.advance(1)
        assert release_keep(core, conn) == []
    reuse(core, "a", first)


def test_lifo_lets_surplus_connections_expire() -> None:
    clock = FakeClock()
    core = make_core(reuse="lifo", keepalive=5.0, clock=clock)
    connect(core, "a", "a1")
    connect(core, "a", "a2")
    assert release_keep(core, "a1") == []
    assert release_keep(core, "a2") == []
    for _ in range(3):  # one request at a time keeps reusing the newest
        clock.advance(2)
        ticket = reuse(core, "a", "a2")
        assert core.handed_over(ticket)
        assert release_keep(core, "a2") == []
    decision = core.expire()
    assert closings(decision) == [("a1", "expired")]


def test_unknown_reuse_order_is_refused() -> None:
    with pytest.raises(ValueError, match="'newest'"):
        make_core(reuse="newest")


# ---------------------------------------------------- fail fast, time out


def test_block_false_rejects_exactly_when_it_would_wait() -> None:
    core = make_core(limit=3, per_key=1)
    permit(core, "a")
    ticket, decision = core.arrive("a", block=False)
    assert ticket.state == REJECTED
    assert nothing(decision)
    # "b" has room: served.
    ticket, _ = core.arrive("b", block=False)
    assert ticket.state == GRANTED
    fig = core.figures("a")
    assert (fig.waiting, fig.counters.rejected, fig.counters.requests) == (0, 1, 2)
    assert core.totals.rejected == 1
    check_consistent(core)


def test_block_false_behind_a_waiter_is_rejected_even_with_room() -> None:
    core = make_core(per_key=1)
    connect(core, "a", "a1")
    waiter = queued(core, "a")
    core.set_limit("a", 5)  # room now, and the waiter was granted first
    assert waiter.state == GRANTED
    ticket, _ = core.arrive("a", block=False)
    assert ticket.state == GRANTED


def test_a_rejected_request_leaves_no_key_behind() -> None:
    core = make_core(limit=1)
    permit(core, "a")
    ticket, _ = core.arrive("b", block=False)
    assert ticket.state == REJECTED
    assert "b" not in core._keys
    assert core.figures("b").counters.rejected == 1  # remembered in history
    check_consistent(core)


def test_time_out_removes_a_queued_ticket_and_counts_it() -> None:
    core = make_core(limit=1, per_key=1)
    connect(core, "a", "a1")
    first = queued(core, "b")
    second = queued(core, "c")
    assert core.time_out(first)
    assert first.state == DONE
    assert core.figures("b").counters.wait_timeouts == 1
    assert "b" not in core._keys
    # The freed slot goes to the next in line, not to the timed-out one.
    decision = core.release("a1", "eof", "server")
    assert decision is not None
    assert list(decision.wake) == [second]
    assert not core.time_out(second)  # granted meanwhile: left alone
    assert second.state == GRANTED
    assert core.totals.wait_timeouts == 1
    check_consistent(core)


def test_time_out_of_a_head_waiter_keeps_the_ready_queue_right() -> None:
    core = make_core(limit=2, per_key=1)
    connect(core, "x", "x1")
    connect(core, "y", "y1")
    a1 = queued(core, "a")  # ready: "a" has per-key room, total is full
    a2 = queued(core, "a")
    assert core.time_out(a1)
    decision = core.release("x1", "eof", "server")
    assert decision is not None
    assert list(decision.wake) == [a2]
    assert a2.state == GRANTED
    assert core.waiting == 0
    assert len(core._ready) == 0


# ------------------------------------------------------------ limits


def test_refresh_limits_applies_a_raised_limit_at_once() -> None:
    table: dict[str, int | None] = {"a": 1}
    core = make_core(limits=table)
    connect(core, "a", "a1")
    w1, w2 = queued(core, "a"), queued(core, "a")
    table["a"] = 3
    decision = core.refresh_limits(lambda key: key == "a")
    assert list(decision.wake) == [w1, w2]
    assert core.figures("a").limit == 3
    table["a"] = 1
    decision = core.refresh_limits(lambda key: key == "a")
    assert nothing(decision)
    assert core.figures("a").limit == 1
    assert queued(core, "a").state == QUEUED
    check_consistent(core)
