"""A hypothesis state machine driving the accounting core with random events.

The machine keeps its own model of every ticket and connection, checks each
decision against that model, and checks the core's invariants after every
step. Each run draws its own total limit, per-key limits (``None`` is
unlimited), keep-alive timeout, history size and idle policy (caps per key,
in total and on keys, connection age and request caps, reuse order).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Hashable
from typing import NamedTuple

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from aioconnpool._core import (
    DONE,
    GRANTED,
    QUEUED,
    REJECTED,
    Decision,
    KeyFigures,
    PoolCore,
    Ticket,
)
from aioconnpool._core.counters import CLOSE_REASONS, RELEASE_HOWS, Counters
from aioconnpool._core.records import GONE, ConnRecord, waiters_of

from .test_core import check_ready_queue

KEYS = ("a:1", "a:2", "b:1", "c:1")
# 0: a paused host, held by the glue (its queued requests wait, none granted)
KEY_LIMITS = st.sampled_from([1, 2, None, 3, 0])
INDEX = st.integers(min_value=0, max_value=63)
HOWS = st.sampled_from(RELEASE_HOWS)


def group_of(key: str) -> str:
    return key.split(":", 1)[0]


def nothing(decision: Decision | None) -> bool:
    return decision is not None and not decision.wake and not decision.close


def counts(c: Counters) -> dict[str, object]:
    """The counters the model keeps (it does not time anything)."""
    names = ("requests", "created", "reused", "connect_errors", "rejected")
    return {
        **{name: getattr(c, name) for name in (*names, "wait_timeouts")},
        "released": c.released,
        "closed": c.closed,
    }


class IdleConn(NamedTuple):
    key: str
    since: float


class Policy(NamedTuple):
    max_idle_per_key: int | None = None
    max_idle: int | None = None
    max_idle_keys: int | None = None
    max_requests: int | None = None
    max_age: float | None = None
    reuse: str = "fifo"
    max_open: int | None = None  # the socket budget (fd_budget)


POLICIES = st.one_of(
    # No cap at all (the default), a third of the runs: drawn field by field
    # it would be one run in 200, and it has its own path (a connection
    # released to a waiter of its key goes straight to it).
    st.sampled_from([Policy(), Policy(reuse="lifo")]),
    st.builds(
        Policy,
        max_idle_per_key=st.sampled_from([None, 1, 0, 2]),
        max_idle=st.sampled_from([None, 3, 1]),
        max_idle_keys=st.sampled_from([None, 1, 2]),
        max_requests=st.sampled_from([None, 2, 1]),
        max_age=st.sampled_from([None, 10.0]),
        reuse=st.sampled_from(["fifo", "lifo"]),
        max_open=st.sampled_from([None, 2, 4]),
    ),
    # The socket budget alone: it is what closes idle connections here.
    st.sampled_from([1, 2, 3, 5]).map(lambda n: Policy(max_open=n)),
)


@settings(max_examples=200, stateful_step_count=50, deadline=None)
class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.total_limit: int | None = None
        self.key_limits: dict[str, int | None] = {}
        self.keepalive: float | None = None
        self.policy = Policy()
        self.dead: set[str] = set()
        self.core = self._new_core(history=10)
        self.started = False
        # The machine's own model of the pool.
        self.queued: dict[Ticket, None] = {}  # in arrival order
        self.permits: list[Ticket] = []  # granted, conn is None
        self.grants: list[Ticket] = []  # granted an idle conn, not taken yet
        self.done: list[Ticket] = []
        self.acquired: dict[str, str] = {}  # conn -> key, taken by a request
        self.idle: dict[str, IdleConn] = {}
        self.expected = Counters()
        self.last_usage: dict[str, int] = {}
        self.conn_ids = 0
        self.served: dict[str, int] = {}  # requests each connection served
        self.born: dict[str, float] = {}  # when each connection was created
        # Each connection's record, kept as the connector's protocol keeps it.
        self.records: dict[str, ConnRecord] = {}

    def _new_core(self, history: int) -> PoolCore[str, str, str]:
        return PoolCore(
            limit=self.total_limit,
            limit_for=self.key_limits.get,
            group=group_of,
            keepalive_timeout=self.keepalive,
            is_alive=lambda conn: conn not in self.dead,
            clock=lambda: self.now,
            history=history,
            **self.policy._asdict(),
        )

    @initialize(
        total=st.sampled_from([1, 2, None, 3, 6]),
        per_key=st.lists(KEY_LIMITS, min_size=len(KEYS), max_size=len(KEYS)),
        keepalive=st.sampled_from([5.0, None, 30.0]),
        history=st.integers(min_value=0, max_value=3),
        policy=POLICIES,
    )
    def configure(
        self,
        total: int | None,
        per_key: list[int | None],
        keepalive: float | None,
        history: int,
        policy: Policy,
    ) -> None:
        self.total_limit = total
        self.key_limits = dict(zip(KEYS, per_key, strict=True))
        self.keepalive = keepalive
        self.policy = policy
        self.core = self._new_core(history)
        self.started = True

    # ------------------------------------------------------------ helpers

    def new_conn(self) -> str:
        self.conn_ids += 1
        return f"conn{self.conn_ids}"

    def total_bound(self) -> int | None:
        """What bounds acquired + connecting: the limit and the socket budget."""
        bounds = [b for b in (self.total_limit, self.policy.max_open) if b is not None]
        return min(bounds) if bounds else None

    def per_key_full(self, key: str) -> bool:
        fig = self.core.figures(key)
        return fig.limit is not None and fig.acquired + fig.connecting >= fig.limit

    def live_figures(self) -> list[KeyFigures]:
        return [f for f in self.core.all_figures() if f.key in self.core._keys]

    def make_idle(self, conn: str, key: str) -> None:
        self.idle[conn] = IdleConn(key, self.now)

    def granted(self, ticket: Ticket) -> None:
        """``ticket`` was just granted (at arrival or woken): check and record."""
        assert ticket.state == GRANTED, ticket
        assert isinstance(ticket.key, str)
        if ticket.conn is None:
            # Idle connections are reused before anything new is created.
            stale = [c for c, i in self.idle.items() if i.key == ticket.key]
            assert not stale, (ticket, stale)
            self.permits.append(ticket)
            return
        assert isinstance(ticket.conn, str)
        # The reuse order: what is left of the key's idle connections (the
        # decision closed the unusable ones) gives the oldest or the newest.
        mine = [c for c, i in self.idle.items() if i.key == ticket.key]
        assert ticket.conn == (mine[-1] if self.policy.reuse == "lifo" else mine[0])
        conn = self.idle.pop(ticket.conn)
        assert conn.key == ticket.key
        assert ticket.conn not in self.dead
        if self.keepalive is not None:
            assert self.now - conn.since <= self.keepalive
        if self.policy.max_age is not None:
            assert self.now - self.born[ticket.conn] < self.policy.max_age
        self.expected.reused += 1
        self.grants.append(ticket)

    def apply(self, decision: Decision, released: str | None = None) -> None:
        """Check a decision against the model and carry it out."""
        for closing in decision.close:
            conn, reason = closing.conn, closing.reason
            assert isinstance(conn, str)
            assert reason in CLOSE_REASONS
            self.expected.bump_closed(reason)
            if conn == released:
                continue
            # The core closes idle connections (or one just released
            # keep-alive) on its own only for these reasons.
            idle = self.idle.pop(conn)
            policy = self.policy
            if reason == "expired":
                assert self.keepalive is not None
                assert self.now - idle.since >= self.keepalive
            elif reason == "pool_full":
                assert (
                    policy.max_idle_per_key is not None or policy.max_idle is not None
                )
            elif reason == "evicted":
                assert policy.max_idle_keys is not None
            elif reason == "fd_budget":
                # The connections idle longest make room for a new socket.
                assert policy.max_open is not None
                assert all(i.since >= idle.since for i in self.idle.values())
            elif reason == "max_requests":
                assert policy.max_requests is not None
                assert self.served[conn] >= policy.max_requests
            elif reason == "max_age":
                assert policy.max_age is not None
                assert self.now - self.born[conn] >= policy.max_age
            else:
                assert reason == "server", (conn, reason)
                assert conn in self.dead
            self.dead.discard(conn)
        for ticket in decision.wake:
            assert ticket in self.queued, ticket
            first = next(t for t in self.queued if t.key == ticket.key)
            assert first is ticket, "FIFO within a key"
            del self.queued[ticket]
            self.granted(ticket)
        # FIFO across keys: an older waiter left behind a woken one is
        # blocked by its own key's limit.
        for ticket in decision.wake:
            for older in self.queued:
                if older.seq < ticket.seq and older.key != ticket.key:
                    assert isinstance(older.key, str)
                    assert self.per_key_full(older.key), (older, ticket)

    # -------------------------------------------------------------- rules

    def would_wait(self, key: str) -> bool:
        """The model's view: a request for ``key`` would have to queue."""
        if any(t.key == key for t in self.queued) or self.per_key_full(key):
            return True
        in_use = len(self.acquired) + len(self.grants) + len(self.permits)
        bound = self.total_bound()
        return bound is not None and in_use >= bound

    def arrive_one(self, key: str, block: bool = True) -> Ticket:
        waits = self.would_wait(key)
        ticket, decision = self.core.arrive(key, block=block)
        self.expected.requests += 1
        assert not decision.wake
        self.apply(decision)
        if ticket.state == REJECTED:
            assert not block
            assert waits
            assert nothing(decision)
            self.expected.rejected += 1
            return ticket
        assert waits == (ticket.state == QUEUED)
        if ticket.state == QUEUED:
            self.queued[ticket] = None
            return ticket
        # A newcomer never overtakes: nobody waits on its key, and every
        # other waiter is blocked by its own key's limit.
        assert all(t.key != key for t in self.queued)
        for waiter in self.queued:
            assert isinstance(waiter.key, str)
            assert self.per_key_full(waiter.key), (waiter, ticket)
        self.granted(ticket)
        return ticket

    def connect_ok(self, ticket: Ticket) -> str:
        self.permits.remove(ticket)
        conn = self.new_conn()
        assert nothing(self.core.connect_succeeded(ticket, conn))
        self.served[conn] = 1
        self.born[conn] = self.now
        record = self.core.record_of(conn)
        assert record is not None
        self.records[conn] = record
        self.expected.created += 1
        assert ticket.state == DONE
        assert isinstance(ticket.key, str)
        self.acquired[conn] = ticket.key
        self.done.append(ticket)
        return conn

    def take(self, ticket: Ticket) -> str:
        self.grants.remove(ticket)
        assert self.core.handed_over(ticket)
        assert ticket.state == DONE
        assert isinstance(ticket.conn, str)
        self.served[ticket.conn] += 1
        assert isinstance(ticket.key, str)
        self.acquired[ticket.conn] = ticket.key
        self.done.append(ticket)
        return ticket.conn

    def give_back(
        self, conn: str, how: str, reason: str | None, by_record: bool = False
    ) -> None:
        key = self.acquired.pop(conn)
        # by_record: as the connector's fast lane, with the record it kept.
        record = self.records[conn] if by_record else None
        decision = self.core.release(conn, how, reason, record=record)
        assert decision is not None
        self.expected.bump_released(how)
        if reason is None:
            self.make_idle(conn, key)  # before the decision: a waiter may take it
            self.apply(decision)
        else:
            assert (conn, reason) in [(c.conn, c.reason) for c in decision.close]
            self.apply(decision, released=conn)
            assert self.core.release(conn, how, None) is None
            record = self.records[conn]
            assert self.core.release(conn, how, None, record=record) is None

    @rule(key=st.sampled_from(KEYS), count=st.integers(min_value=1, max_value=3))
    def arrive(self, key: str, count: int) -> None:
        for _ in range(count):
            self.arrive_one(key)

    @rule(key=st.sampled_from(KEYS))
    def arrive_without_waiting(self, key: str) -> None:
        """``block=False``: refused exactly when it would have queued."""
        self.arrive_one(key, block=False)

    @precondition(lambda self: self.queued or self.done)
    @rule(i=INDEX)
    def wait_times_out(self, i: int) -> None:
        """``acquire_timeout`` fires: a queued request leaves the queue; one
        granted or finished meanwhile is left alone."""
        if self.queued:
            ticket = list(self.queued)[i % len(self.queued)]
            assert self.core.time_out(ticket)
            del self.queued[ticket]
            self.expected.wait_timeouts += 1
            assert ticket.state == DONE
            self.done.append(ticket)
        before = self.core.totals.copy()
        late = self.done[-1 - i % len(self.done)]
        assert not self.core.time_out(late)
        assert self.core.totals == before

    @rule(key=st.sampled_from(KEYS), how=HOWS)
    def quick_request(self, key: str, how: str) -> None:
        """A request that, if served at once, runs to the end and puts its
        connection back in the pool (if not, it waits like any other)."""
        ticket = self.arrive_one(key)
        if ticket.state == QUEUED:
            return
        conn = self.connect_ok(ticket) if ticket.conn is None else self.take(ticket)
        self.give_back(conn, how, None)

    @rule(key=st.sampled_from(KEYS), how=HOWS)
    def reuse_at_once(self, key: str, how: str) -> None:
        """The keep-alive fast path: served at once by an idle connection,
        without a ticket, or not at all -- and then nothing is counted."""
        waits = self.would_wait(key)
        conn, decision = self.core.reuse(key)
        assert not decision.wake
        self.apply(decision)  # idle connections found unusable on the way
        mine = [c for c, i in self.idle.items() if i.key == key]
        if conn is None:
            assert waits or not mine, (key, mine)
            if waits:
                assert nothing(decision)
            return
        assert not waits
        assert isinstance(conn, str)
        self.expected.requests += 1
        # As granted() checks an idle grant: the reuse order, then liveness.
        assert conn == (mine[-1] if self.policy.reuse == "lifo" else mine[0])
        idle = self.idle.pop(conn)
        assert conn not in self.dead
        if self.keepalive is not None:
            assert self.now - idle.since <= self.keepalive
        if self.policy.max_age is not None:
            assert self.now - self.born[conn] < self.policy.max_age
        self.expected.reused += 1
        self.served[conn] += 1
        self.acquired[conn] = key
        self.give_back(conn, how, None, by_record=True)  # the connector's way

    @precondition(lambda self: self.permits)
    @rule(i=INDEX, ok=st.booleans())
    def connect(self, i: int, ok: bool) -> None:
        ticket = self.permits[i % len(self.permits)]
        if ok:
            self.connect_ok(ticket)
            return
        self.permits.remove(ticket)
        decision = self.core.connect_failed(ticket)
        self.expected.connect_errors += 1
        assert ticket.state == DONE
        self.done.append(ticket)
        self.apply(decision)

    @precondition(lambda self: self.grants)
    @rule(i=INDEX)
    def hand_over(self, i: int) -> None:
        self.take(self.grants[i % len(self.grants)])

    @precondition(lambda self: self.grants)
    @rule(i=INDEX, reason=st.sampled_from(["server", "error"]), noticed=st.booleans())
    def grant_lost(self, i: int, reason: str, noticed: bool) -> None:
        """A request woken with an idle grant comes to take it a loop turn
        later and the connector finds it unusable (closed by the peer, or
        holding bytes nobody asked for): the slot is filled again."""
        ticket = self.grants[i % len(self.grants)]
        conn = ticket.conn
        assert isinstance(conn, str)
        if noticed:  # an acquired connection's loss waits for its release
            assert nothing(self.core.conn_lost(conn))
        decision = self.core.grant_lost(ticket, reason)
        assert not decision.wake
        first = decision.close[0]
        assert (first.conn, first.reason) == (conn, reason)
        self.expected.bump_released("error")
        self.grants.remove(ticket)
        self.apply(decision, released=conn)
        assert ticket.conn != conn
        self.granted(ticket)  # the same ticket, its slot filled again

    @precondition(lambda self: self.acquired)
    @rule(
        i=INDEX,
        how=HOWS,
        reason=st.one_of(st.none(), st.sampled_from(CLOSE_REASONS)),
        by_record=st.booleans(),
    )
    def release(self, i: int, how: str, reason: str | None, by_record: bool) -> None:
        conn = list(self.acquired)[i % len(self.acquired)]
        self.give_back(conn, how, reason, by_record)

    @precondition(lambda self: self.queued or self.permits or self.grants)
    @rule(i=INDEX, how=HOWS)
    def cancel(self, i: int, how: str) -> None:
        """A request gives up: queued, holding a permit or an idle grant."""
        tickets = [*self.queued, *self.permits, *self.grants]
        ticket = tickets[i % len(tickets)]
        decision = self.core.abandon(ticket, how)
        assert ticket.state == DONE
        self.done.append(ticket)
        if ticket in self.queued:
            del self.queued[ticket]
            assert nothing(decision)
            return
        if ticket in self.grants:
            self.grants.remove(ticket)
            self.expected.bump_released(how)
            assert isinstance(ticket.conn, str)
            assert isinstance(ticket.key, str)
            self.make_idle(ticket.conn, ticket.key)
        else:
            self.permits.remove(ticket)
        self.apply(decision)

    @precondition(lambda self: self.done)
    @rule(i=INDEX, how=HOWS)
    def cancel_again(self, i: int, how: str) -> None:
        ticket = self.done[-1 - i % len(self.done)]
        before = self.core.totals.copy()
        assert nothing(self.core.abandon(ticket, how))
        assert ticket.state == DONE
        assert self.core.totals == before

    @precondition(lambda self: self.idle)
    @rule(i=INDEX, noticed=st.booleans())
    def idle_lost(self, i: int, noticed: bool) -> None:
        """The peer closes an idle connection; noticed now, or only when the
        pool is about to reuse it."""
        conn = list(self.idle)[i % len(self.idle)]
        if not noticed:
            self.dead.add(conn)
            return
        del self.idle[conn]
        self.dead.discard(conn)
        decision = self.core.conn_lost(conn)
        assert [(c.conn, c.reason) for c in decision.close] == [(conn, "server")]
        assert not decision.wake
        self.expected.bump_closed("server")
        assert nothing(self.core.conn_lost(conn))

    @rule(i=INDEX)
    def stray_events(self, i: int) -> None:
        """Events about connections the core must leave alone."""
        before = self.core.totals.copy()
        assert self.core.release("stranger", "eof", None) is None
        assert nothing(self.core.conn_lost("stranger"))
        if self.acquired:
            conn = list(self.acquired)[i % len(self.acquired)]
            assert nothing(self.core.conn_lost(conn))
        if self.idle:
            conn = list(self.idle)[i % len(self.idle)]
            assert self.core.release(conn, "eof", None) is None
        assert self.core.totals == before

    @rule(
        seconds=st.sampled_from([1.0, 5.0, 0.0, 4.0, 6.0, 31.0]),
        fire=st.booleans(),
    )
    def tick(self, seconds: float, fire: bool) -> None:
        """Time passes; the expiry timer fires, or has not fired yet."""
        self.now += seconds
        if not fire:
            return
        decision = self.core.expire()
        assert not decision.wake
        assert all(c.reason == "expired" for c in decision.close)
        self.apply(decision)
        deadline = self.core.next_expiry()
        if self.keepalive is None or not self.idle:
            assert deadline is None
        else:
            oldest = min(i.since for i in self.idle.values())
            assert deadline == oldest + self.keepalive
            assert deadline > self.now  # everything due has been closed

    @precondition(lambda self: self.keepalive is not None and self.idle)
    @rule()
    def expiry_timer(self) -> None:
        """The connector's timer fires at ``next_expiry()`` (or late, if time
        already passed it): the oldest idle connection is due and must go."""
        deadline = self.core.next_expiry()
        assert deadline is not None
        self.now = max(self.now, deadline)
        oldest = min(self.idle, key=lambda c: self.idle[c].since)
        decision = self.core.expire()
        assert (oldest, "expired") in [(c.conn, c.reason) for c in decision.close]
        self.apply(decision)
        after = self.core.next_expiry()
        assert after is None or after > self.now

    @rule(key=st.sampled_from(KEYS), limit=KEY_LIMITS)
    def set_limit(self, key: str, limit: int | None) -> None:
        live = key in self.core._keys
        decision = self.core.set_limit(key, limit)
        if live:
            assert self.core.figures(key).limit == limit
        else:
            assert nothing(decision)
        self.apply(decision)

    # --------------------------------------------------------- invariants

    @invariant()
    def gauges_add_up(self) -> None:
        core = self.core
        figs = list(core.all_figures())
        assert sum(f.acquired for f in figs) == core.acquired
        assert sum(f.idle for f in figs) == core.idle
        assert sum(f.connecting for f in figs) == core.connecting
        assert sum(f.waiting for f in figs) == core.waiting
        for f in figs:
            if f.key not in core._keys:  # retired: holds nothing
                assert (f.acquired, f.idle, f.connecting, f.waiting) == (0, 0, 0, 0)
            else:  # live: holds something
                assert f.acquired or f.idle or f.connecting or f.waiting, f

    @invariant()
    def gauges_match_model(self) -> None:
        core = self.core
        assert core.waiting == len(self.queued)
        assert core.connecting == len(self.permits)
        assert core.acquired == len(self.acquired) + len(self.grants)
        assert core.idle == len(self.idle)
        assert set(core.connecting_tickets()) == set(self.permits)
        held: dict[Hashable, Hashable] = {}
        held.update(self.acquired)
        held.update({t.conn: t.key for t in self.grants if t.conn is not None})
        expected = {conn: ("acquired", key) for conn, key in held.items()}
        expected.update({c: ("idle", i.key) for c, i in self.idle.items()})
        records = {r.handle: (r.state, core.key_of(r)) for r in core.records()}
        assert records == expected
        per_key = Counter(key for _, key in expected.values())
        live = {f.key: f.acquired + f.idle for f in self.live_figures()}
        assert {k: n for k, n in live.items() if n} == dict(per_key)

    @invariant()
    def idle_ring_in_release_order(self) -> None:
        # The pool-wide ring of idle connections: in the order they went idle
        # (expiry and eviction take its oldest end), linked both ways, and
        # as long as its count says.
        store = self.core._idle
        recs = store.records()
        assert [r.handle for r in recs] == list(self.idle)
        assert store.count == len(recs) == len(self.idle)
        assert all(a.idle_since <= b.idle_since for a, b in itertools.pairwise(recs))
        for older, newer in zip(recs, recs[1:] + recs[:1], strict=True):
            assert older.pool_newer is newer
            assert newer.pool_older is older

    @invariant()
    def tickets_match_model(self) -> None:
        assert all(t.state == QUEUED for t in self.queued)
        assert all(t.state == GRANTED and t.conn is None for t in self.permits)
        assert all(t.state == GRANTED and t.conn is not None for t in self.grants)
        assert all(t.state == DONE for t in self.done)
        waiting = Counter(t.key for t in self.queued)
        live = {f.key: f.waiting for f in self.live_figures() if f.waiting}
        assert live == dict(waiting)
        connecting = Counter(t.key for t in self.permits)
        live = {f.key: f.connecting for f in self.live_figures() if f.connecting}
        assert live == dict(connecting)

    @invariant()
    def key_queues_linked_in_arrival_order(self) -> None:
        # Each key's queue is its tickets linked both ways, oldest first, as
        # long as its count says; a ticket out of every queue keeps no link
        # (no reference cycle left behind).
        for key, ks in self.core._keys.items():
            tickets = waiters_of(ks)
            assert tickets == [t for t in self.queued if t.key == key]
            assert ks.waiting == len(tickets)
            assert ks.last_waiter is (tickets[-1] if tickets else None)
            for before, after in itertools.pairwise([None, *tickets, None]):
                if before is not None:
                    assert before.next_waiter is after
                if after is not None:
                    assert after.prev_waiter is before
        for ticket in [*self.permits, *self.grants, *self.done]:
            assert ticket.next_waiter is None
            assert ticket.prev_waiter is None

    @invariant()
    def ready_queue_is_keyed_by_first_waiters(self) -> None:
        # The order of grants across keys rests on it (FIFO across keys).
        check_ready_queue(self.core)

    @invariant()
    def limits_hold(self) -> None:
        core = self.core
        bound = self.total_bound()
        if bound is not None:
            assert core.acquired + core.connecting <= bound
            room = bound - core.acquired - core.connecting
            assert core.total_room() == room
        else:
            assert core.total_room() is None
        usage: dict[str, int] = {}
        for f in self.live_figures():
            assert isinstance(f.key, str)
            used = f.acquired + f.connecting
            usage[f.key] = used
            # set_limit may lower a limit below what is in use; then the
            # key must not grow until it is back under.
            if f.limit is not None and used > f.limit:
                assert used <= self.last_usage.get(f.key, 0), f
        self.last_usage = usage

    @invariant()
    def idle_policy_holds(self) -> None:
        policy = self.policy
        per_key = Counter(i.key for i in self.idle.values())
        if policy.max_idle_per_key is not None:
            assert all(n <= policy.max_idle_per_key for n in per_key.values())
        if policy.max_idle is not None:
            assert len(self.idle) <= policy.max_idle
        if policy.max_idle_keys is not None:
            assert len(per_key) <= policy.max_idle_keys
        if policy.max_requests is not None:
            assert all(self.served[c] < policy.max_requests for c in self.idle)

    @invariant()
    def sockets_within_budget(self) -> None:
        core = self.core
        assert core.open == core.acquired + core.connecting + core.idle
        if self.policy.max_open is not None:
            assert core.open <= self.policy.max_open

    @invariant()
    def no_waiter_while_room(self) -> None:
        for f in self.core.all_figures():
            if f.waiting:
                assert f.room == 0, f

    @invariant()
    def records_are_gone_once_out_of_the_pool(self) -> None:
        # A kept record tells, alone, whether the pool still holds it: what
        # lets a release by record skip the lookup.
        for conn, record in self.records.items():
            held = self.core.record_of(conn) is record
            assert held == (record.state != GONE), (conn, record.state)

    @invariant()
    def every_acquisition_ends_once(self) -> None:
        t = self.core.totals
        assert t.created + t.reused == sum(t.released.values()) + self.core.acquired

    @invariant()
    def counters_add_up(self) -> None:
        core = self.core
        total = Counters()
        for f in core.all_figures():
            total.add(f.counters)
        n_forgotten, forgotten = core.forgotten
        total.add(forgotten)
        assert total == core.totals  # histograms included
        assert counts(core.totals) == counts(self.expected)
        totals = core.totals
        hold, lifetime, connect = (totals.histogram(i).count for i in (2, 3, 1))
        assert hold == sum(core.totals.released.values())
        assert lifetime == sum(core.totals.closed.values())
        assert connect == core.totals.created + core.totals.connect_errors
        if n_forgotten == 0:
            assert forgotten == Counters()
        keys = [f.key for f in core.all_figures()]
        assert len(keys) == len(set(keys))
        # Groups index exactly the live and remembered keys.
        for group in {group_of(k) for k in KEYS}:
            members = {k for k in keys if isinstance(k, str) and group_of(k) == group}
            assert core.keys_in_group(group) == members

    # ------------------------------------------------------------ drain

    def teardown(self) -> None:
        """Cancel every waiter, settle every permit and release everything:
        the pool is left with nothing acquired, connecting or waiting."""
        if not self.started:
            return
        core = self.core
        for ticket in list(self.queued):
            del self.queued[ticket]
            assert nothing(core.abandon(ticket))
        assert core.waiting == 0
        for ticket in list(self.grants):
            self.take(ticket)
        for n, ticket in enumerate(list(self.permits)):
            if n % 2:
                self.permits.remove(ticket)
                assert nothing(core.connect_failed(ticket))
                self.expected.connect_errors += 1
            else:
                self.connect_ok(ticket)
        for conn, key in list(self.acquired.items()):
            del self.acquired[conn]
            decision = core.release(conn, "eof", None)
            assert decision is not None
            assert not decision.wake  # nobody waits
            self.expected.bump_released("eof")
            self.make_idle(conn, key)
            self.apply(decision)  # the idle policy may close some
        assert (core.acquired, core.connecting, core.waiting) == (0, 0, 0)
        assert core.idle == len(self.idle)
        self.gauges_add_up()
        self.gauges_match_model()
        self.counters_add_up()
        self.every_acquisition_ends_once()
        # Let the idle connections go: keys that hold nothing are retired.
        for conn in self.idle:
            assert [c.conn for c in core.conn_lost(conn).close] == [conn]
            self.expected.bump_closed("server")
        self.idle.clear()
        assert core.idle == 0
        assert core._keys == {}
        assert len(core._ready) == 0
        self.gauges_add_up()
        self.counters_add_up()
        self.every_acquisition_ends_once()


TestPoolCore = PoolMachine.TestCase
