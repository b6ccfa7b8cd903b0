"""The pure pacer (``aioconnpool._core.pacing``): no clock, no loop, no
sockets. Unit tests, the work done with 100,000 paced hosts (counted, not
timed), and a hypothesis state machine checking the invariants after every
step."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from aioconnpool._core.pacing import CLOSED, DONE, GO, LATE, WAITING, Pacer, PaceTicket


def pacer(delay: float = 1.0, **kwargs: Any) -> Pacer[str]:
    return Pacer(
        delay_for=lambda key: 0.0 if key.startswith("free") else delay, **kwargs
    )


def ticket(p: Pacer[str], *args: Any, **kwargs: Any) -> PaceTicket:
    """``p.arrive`` for a paced host: its ticket."""
    t, _released = p.arrive(*args, **kwargs)
    assert t is not None
    return t


def test_an_unpaced_host_gets_no_ticket() -> None:
    p = pacer()
    assert p.arrive("free.test", 0.0) == (None, [])
    assert p.hosts() == 0


def test_start_times_are_decided_at_arrival_in_fifo_order() -> None:
    p = pacer(1.0)
    first = ticket(p, "a", 0.0)
    second = ticket(p, "a", 0.0)
    third = ticket(p, "a", 0.5)
    assert [first.state, second.state, third.state] == [GO, WAITING, WAITING]
    assert [first.start, second.start, third.start] == [0.0, 1.0, 2.0]
    assert p.ended(first, 0.1, sent=True) == []
    assert p.next_due() == 1.1  # one gap after the first really started
    assert p.due(1.05) == []
    assert p.due(1.1) == [second]
    assert p.next_due() is None  # the second is in flight
    assert p.ended(second, 1.1, sent=True) == []
    assert p.due(2.1) == [third]


def test_one_request_at_a_time_keeps_the_gap_after_a_late_start() -> None:
    # The second request waited 5 s in the pool for a slot: the third goes
    # a gap after the second really started, not at its planned 2.0.
    p = pacer(1.0)
    first = ticket(p, "a", 0.0)
    second = ticket(p, "a", 0.0)
    third = ticket(p, "a", 0.0)
    p.ended(first, 0.0, sent=True)
    assert p.due(1.0) == [second]
    p.ended(second, 6.0, sent=True)
    assert p.next_due() == 7.0
    assert p.due(2.0) == []
    assert p.due(7.0) == [third]


def test_an_unsent_request_counts_from_when_it_was_let_go() -> None:
    p = pacer(1.0)
    first = ticket(p, "a", 0.0)
    ticket(p, "a", 0.0)
    assert p.ended(first, 0.5, sent=False) == []  # failed to connect
    assert p.next_due() == 1.0  # a gap after it was let go, not after 0.5


def test_a_start_past_the_deadline_is_late_and_plans_nothing() -> None:
    p = pacer(1.0)
    p.arrive("a", 0.0)
    late = ticket(p, "a", 0.0, deadline=0.5)
    assert (late.state, late.start) == (LATE, 1.0)
    assert p.late == 1
    nxt = ticket(p, "a", 0.0)
    assert nxt.start == 1.0  # the late one took no place in the plan


def test_jitter_draws_gaps_within_the_range() -> None:
    rng = random.Random(7)
    p = pacer(1.0, jitter=0.5, random=rng.random)
    tickets = [p.arrive("a", 0.0)[0] for _ in range(50)]
    starts = [t.start for t in tickets if t is not None]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(0.5 <= g <= 1.5 for g in gaps)
    assert max(gaps) - min(gaps) > 0.5


def test_jitter_outside_0_1_is_refused() -> None:
    with pytest.raises(ValueError, match=r"jitter must be within \[0, 1\], got 2"):
        pacer(jitter=2)


def test_a_pause_holds_waiting_and_future_requests_and_ends() -> None:
    p = pacer(0.1)
    first = ticket(p, "a", 0.0)
    second = ticket(p, "a", 0.0, deadline=100.0)
    doomed = ticket(p, "a", 0.0, deadline=3.0)
    released, late = p.pause("a", 5.0, "429", 0.0)
    assert released == []
    assert late == [doomed]
    assert doomed.state == LATE
    figures = p.figures("a")
    assert figures is not None
    assert (figures.paused_until, figures.pause_reason, figures.waiting) == (
        5.0,
        "429",
        1,
    )
    p.ended(first, 0.0, sent=True)
    assert p.due(4.9) == []
    assert p.due(5.0) == [second]
    figures = p.figures("a")
    assert figures is not None
    assert figures.paused_until is None


def test_a_pause_of_an_unpaced_host_lets_its_queue_go_at_once_when_it_ends() -> None:
    p = pacer()
    p.pause("free.test", 2.0, "503", 0.0)
    tickets = [p.arrive("free.test", 1.0)[0] for _ in range(3)]
    assert all(t is not None and t.state == WAITING for t in tickets)
    assert p.due(2.0) == tickets  # in their order, none waiting for another
    for t in tickets:
        assert t is not None
        p.ended(t, 2.0, sent=True)
    assert p.hosts() == 0  # quiet and unpaced: forgotten


def test_resume_lets_waiting_requests_go_now_in_order_with_their_gap() -> None:
    p = pacer(1.0)
    p.pause("a", 30.0, "429", 0.0)
    first, second = ticket(p, "a", 0.0), ticket(p, "a", 0.0)
    assert first.start == 30.0  # planned to wait the pause out
    assert p.resume("a", 2.0) == [first]  # due now, not at 30
    assert p.due(2.5) == []
    p.ended(first, 2.0, sent=True)
    assert p.due(3.0) == [second]  # the gap after the first still holds
    figures = p.figures("a")
    assert figures is not None
    assert figures.paused_until is None


def test_a_retry_keeps_its_place() -> None:
    p = pacer(1.0)
    first = ticket(p, "a", 0.0)
    second = ticket(p, "a", 0.0)
    p.ended(first, 0.0, sent=True)
    p.due(1.0)
    p.ended(second, 1.0, sent=True)  # answered 429: it will be retried
    ticket(p, "a", 1.0)  # a third request, after it
    p.pause("a", 3.0, "429", 1.0)
    retry = ticket(p, "a", 1.0, seq=second.seq, retry=True)
    assert p.due(3.0) == [retry]  # before the third, which arrived after it


def test_cancelling_the_head_lets_the_next_one_take_its_time() -> None:
    p = pacer(1.0)
    first = ticket(p, "a", 0.0)
    second = ticket(p, "a", 0.0)
    third = ticket(p, "a", 0.0)
    p.ended(first, 0.0, sent=True)
    p.cancel(second, 0.5)
    assert second.state == DONE
    assert p.waiting == 1
    assert p.due(1.0) == []  # the third's own start is 2.0
    assert p.due(2.0) == [third]


def test_close_refuses_every_waiting_ticket() -> None:
    p = pacer(1.0)
    p.arrive("a", 0.0)
    waiting = ticket(p, "a", 0.0)
    assert p.close(0.0) == [waiting]
    assert waiting.state == CLOSED
    assert p.arrive("a", 1.0) == (None, [])


def test_100000_paced_hosts_cost_o_log_n_per_request(monkeypatch: Any) -> None:
    # Count heap work, not time: every heap operation's comparisons, with
    # 1,000 and then 100,000 paced hosts each holding a waiting request.
    counts: dict[str, int] = {}
    real_push, real_pop = heapq.heappush, heapq.heappop
    ops = {"n": 0}

    def push(heap: list[Any], item: Any) -> None:
        ops["n"] += 1
        real_push(heap, item)

    def pop(heap: list[Any]) -> Any:
        ops["n"] += 1
        return real_pop(heap)

    monkeypatch.setattr(heapq, "heappush", push)
    monkeypatch.setattr(heapq, "heappop", pop)
    for hosts in (1_000, 100_000):
        p = pacer(1.0)
        tickets = []
        for i in range(hosts):
            key = f"h{i}"
            first = ticket(p, key, 0.0)
            p.ended(first, 0.0, sent=True)
            tickets.append(p.arrive(key, 0.0)[0])
        ops["n"] = 0
        released = p.due(1.0)
        assert len(released) == hosts
        counts[str(hosts)] = ops["n"]
        assert p.heap_size <= 4 * hosts + 64
    # Heap operations per request do not grow with the number of hosts.
    per_request = {k: v / int(k) for k, v in counts.items()}
    assert per_request["100000"] <= per_request["1000"] * 1.01 + 1


# ----------------------------------------------------------- the machine

KEYS = ("a", "b", "free")


@settings(max_examples=150, stateful_step_count=60, deadline=None)
class PacingMachine(RuleBasedStateMachine):
    """Random arrivals, time, ends, cancels and pauses, with a model of
    every start, checked after every step."""

    @initialize(
        delay=st.sampled_from([0.5, 1.0, 2.0]),
        jitter=st.sampled_from([0.0, 0.5, 1.0]),
        seed=st.integers(0, 1000),
    )
    def setup(self, delay: float, jitter: float, seed: int) -> None:
        self.delay = delay
        self.jitter = jitter
        self.now = 0.0
        rng = random.Random(seed)
        self.p: Pacer[str] = Pacer(
            delay_for=lambda key: 0.0 if key == "free" else delay,
            jitter=jitter,
            random=rng.random,
        )
        self.waiting: list[PaceTicket] = []
        self.going: list[PaceTicket] = []
        self.starts: dict[Hashable, list[tuple[float, float]]] = {}
        self.sent: list[PaceTicket] = []

    def _went(self, tickets: list[PaceTicket]) -> None:
        for t in tickets:
            assert t.state == GO
            assert t in self.waiting
            self.waiting.remove(t)
            self.going.append(t)
            assert self.now >= t.start
            # FIFO: nobody of its host still waiting was ahead of it.
            assert all(w.seq > t.seq for w in self.waiting if w.key == t.key)

    @rule(key=st.sampled_from(KEYS), deadline=st.sampled_from([None, 1.0, 5.0]))
    def arrive(self, key: str, deadline: float | None) -> None:
        ticket, released = self.p.arrive(
            key, self.now, None if deadline is None else self.now + deadline
        )
        self._went(released)
        if ticket is None:
            return
        if ticket.state == LATE:
            assert deadline is not None
            assert ticket.start > self.now + deadline
        elif ticket.state == GO:
            self.going.append(ticket)
            assert not [w for w in self.waiting if w.key == key]
        else:
            assert ticket.state == WAITING
            self.waiting.append(ticket)

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 3.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self._went(self.p.due(self.now))

    @precondition(lambda self: self.going)
    @rule(i=st.integers(0, 100), sent=st.booleans())
    def end(self, i: int, sent: bool) -> None:
        t = self.going.pop(i % len(self.going))
        started = self.now if sent else t.released_at
        if t.gap:
            self.starts.setdefault(t.key, []).append((started, t.gap))
        if sent:
            self.sent.append(t)
        self._went(self.p.ended(t, self.now, sent=sent))

    @precondition(lambda self: self.sent)
    @rule(i=st.integers(0, 100))
    def retry(self, i: int) -> None:
        """A request that was sent comes back (a 429) at its first place."""
        old = self.sent.pop(i % len(self.sent))
        key: str = old.key  # type: ignore[assignment]  # a Pacer[str]'s key
        ticket, released = self.p.arrive(key, self.now, None, old.seq, retry=True)
        self._went(released)
        if ticket is None:
            return
        assert ticket.seq == old.seq
        if ticket.state == GO:
            self.going.append(ticket)
        else:
            assert ticket.state == WAITING
            self.waiting.append(ticket)

    @precondition(lambda self: self.waiting)
    @rule(i=st.integers(0, 100))
    def cancel(self, i: int) -> None:
        t = self.waiting.pop(i % len(self.waiting))
        self._went(self.p.cancel(t, self.now))
        assert t.state == DONE

    @rule(key=st.sampled_from(KEYS), seconds=st.sampled_from([0.5, 2.0, 10.0]))
    def pause(self, key: str, seconds: float) -> None:
        released, late = self.p.pause(key, self.now + seconds, "429", self.now)
        for t in late:
            assert t.state == LATE
            self.waiting.remove(t)
        self._went(released)

    @invariant()
    def waiting_is_counted(self) -> None:
        assert self.p.waiting == len(self.waiting)
        assert all(t.state == WAITING for t in self.waiting)
        for key in KEYS:
            hs = self.p.host_state(key)
            mine = [t for t in self.waiting if t.key == key]
            assert (hs.waiting if hs is not None else 0) == len(mine)

    @invariant()
    def nobody_waits_past_their_start(self) -> None:
        # A host with waiting tickets and nothing in flight has a timer entry
        # no later than its head's due time.
        live = {id(e[2]): e[0] for e in self.p.heap_entries()}
        for key in KEYS:
            hs = self.p.host_state(key)
            if hs is None or not hs.waiting:
                continue
            head = min(t for t in self.waiting if t.key == key)
            if head.gap and hs.in_flight:
                continue
            assert id(hs) in live
            due = max(head.start, hs.last_start + head.gap)
            if hs.paused_until is not None:
                due = max(due, hs.paused_until)
            assert live[id(hs)] <= due
            assert due > self.now  # else it would have gone already

    @invariant()
    def starts_keep_their_gaps(self) -> None:
        for starts in self.starts.values():
            ordered = sorted(starts)
            for (a, _), (b, gap) in itertools.pairwise(ordered):
                # A request unsent counts from its release: the next one
                # goes at least its gap after the one before it.
                assert b - a >= gap - 1e-9


TestPacingMachine = PacingMachine.TestCase
