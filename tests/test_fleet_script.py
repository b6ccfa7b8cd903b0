"""The fleet's Lua script against a real Redis: random acquires, releases,
cancels and crashes of several sessions, with the invariants checked after
every step.

The driver plays several processes. It only knows what a process would know
(the replies, and grants stored for it), and checks that Redis agrees:

* no host has more slots held than its limit, and only live sessions hold;
* each session holds exactly the grants it was told of (or that are stored
  for it) and has not given back;
* grants follow the FIFO order of the queue, skipping the cancelled and the
  dead;
* no slot stays free while a live waiter is queued (work conserving).

A crash is a session whose lease is set in the past: what the lease running
out does, without waiting for it.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pytest
import redis

from aioconnpool.fleet._redis import SCRIPT
from aioconnpool.testing import RedisServer

NAME = "script-test"
PREFIX = f"aioconnpool:{{{NAME}}}:"
EPOCH_KEY = f"{PREFIX}epoch"
HOSTS = ("http://a.test:80", "http://b.test:80", "https://c.test:443")
LIMITS = {"http://a.test:80": 1, "http://b.test:80": 2, "https://c.test:443": 3}


@dataclass
class Session:
    name: str
    epoch: str = ""
    next_ticket: int = 1
    waiting: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    held: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # Held tickets whose grant was stored: taking one is announced (K), as
    # the client does; a direct grant's is not.
    stored: set[tuple[str, str]] = field(default_factory=set)
    alive: bool = True

    def takes(self, host: str, tickets: list[str]) -> list[str]:
        """The K words for ``tickets`` of ``host`` (those announced)."""
        words: list[str] = []
        for ticket in tickets:
            if (host, ticket) in self.stored:
                self.stored.discard((host, ticket))
                words += ("K", ticket)
        return words


class Driver:
    def __init__(self, client: redis.Redis, rng: random.Random) -> None:
        self.client = client
        self.rng = rng
        self.script = client.register_script(SCRIPT)
        self.sessions = [Session(f"s{i}") for i in range(4)]
        # The model's FIFO queue per host: (session, ticket) in arrival order.
        self.queue: dict[str, list[tuple[str, str]]] = defaultdict(list)

    def call(self, s: Session, groups: list[tuple[str, list[str]]]) -> list[object]:
        known = "1" if s.epoch else "0"  # answered before: must still exist
        args: list[str] = [PREFIX, s.name, "60000", s.epoch, "", "", known]
        args.append(str(len(groups)))
        for host, ops in groups:
            args += (host, str(LIMITS[host]), str(len(ops) // 2), *ops)
        reply = self.script(keys=[EPOCH_KEY], args=args)
        assert reply[0] == "OK", reply
        s.epoch = reply[1].split("|", 1)[0]
        entries = reply[3]
        for entry in entries:
            host = entry[0]
            direct = int(entry[5])
            for i, ticket in enumerate(entry[6:]):
                self.granted(s, host, ticket, stored=i >= direct)
        return list(entries)

    def granted(self, s: Session, host: str, ticket: str, *, stored: bool) -> None:
        if ticket in s.held[host]:
            assert stored, f"{ticket} granted directly twice"
            return
        assert ticket in s.waiting[host], f"{s.name} granted unknown {ticket}"
        s.waiting[host].remove(ticket)
        s.held[host].append(ticket)
        if stored:
            s.stored.add((host, ticket))
        self.check_fifo(host, (s.name, ticket))

    def check_fifo(self, host: str, entry: tuple[str, str]) -> None:
        live = {x.name for x in self.sessions if x.alive}
        queue = [e for e in self.queue[host] if e[0] in live]
        if entry in queue:
            # Granted from the queue: it must have been the first live one.
            assert queue[0] == entry, f"{entry} granted before {queue[0]} ({host})"
            self.queue[host].remove(entry)

    def step(self) -> None:
        live = [s for s in self.sessions if s.alive]
        s = self.rng.choice(live)
        host = self.rng.choice(HOSTS)
        action = self.rng.choices(
            ["acquire", "release", "cancel", "crash", "renew"], [5, 4, 2, 0.3, 1]
        )[0]
        if action == "acquire":
            ticket = str(s.next_ticket)
            s.next_ticket += 1
            s.waiting[host].append(ticket)
            entries = self.call(s, [(host, ["A", ticket])])
            if ticket in s.waiting[host]:  # not granted at once: queued
                self.queue[host].append((s.name, ticket))
            assert entries
        elif action == "release" and s.held[host]:
            ticket = self.rng.choice(s.held[host])
            s.held[host].remove(ticket)
            self.call(s, [(host, [*s.takes(host, [ticket]), "R", "1"])])
        elif action == "cancel" and s.waiting[host]:
            ticket = self.rng.choice(s.waiting[host])
            s.waiting[host].remove(ticket)
            if (s.name, ticket) in self.queue[host]:
                self.queue[host].remove((s.name, ticket))
            self.call(s, [(host, ["C", ticket])])
        elif action == "crash" and len(live) > 1:
            s.alive = False
            self.client.zadd(f"{PREFIX}sessions", {s.name: 0})
            self.queue = defaultdict(
                list,
                {h: [e for e in q if e[0] != s.name] for h, q in self.queue.items()},
            )
            # Anyone's next call collects it.
            other = self.rng.choice([x for x in live if x is not s])
            self.call(other, [])
            # The crashed session's slots went to the queue's heads: those
            # processes learn of it on their next call (the stored grants).
            for x in self.sessions:
                if x.alive:
                    self.call(x, [(h, []) for h in HOSTS])
        else:
            self.call(s, [(host, [])])

    def check(self) -> None:
        live = {s.name: s for s in self.sessions if s.alive}
        for host in HOSTS:
            holders = {
                k: int(v)
                for k, v in self.client.hgetall(f"{PREFIX}h:{host}:holders").items()
            }
            stored = {
                k: v.split()
                for k, v in self.client.hgetall(f"{PREFIX}h:{host}:granted").items()
            }
            assert set(holders) <= set(live), f"dead sessions hold {host}: {holders}"
            # Grants stored for sessions that have not called since: they
            # left the queue from its head, in order.
            unseen_grants = {
                (name, t)
                for name, tickets in stored.items()
                for t in tickets
                if name in live and t not in live[name].held[host]
            }
            queue = [e for e in self.queue[host] if e[0] in live]
            while queue and queue[0] in unseen_grants:
                self.queue[host].remove(queue.pop(0))
            assert not unseen_grants & set(queue), (
                f"{host}: granted out of FIFO order: {unseen_grants & set(queue)} "
                f"before {queue[0]}"
            )
            used = sum(holders.values())
            assert used <= LIMITS[host], f"{host}: {used} held > {LIMITS[host]}"
            for name, s in live.items():
                unseen = [t for t in stored.get(name, []) if t not in s.held[host]]
                expected = len(s.held[host]) + len(unseen)
                assert holders.get(name, 0) == expected, (
                    f"{name} holds {holders.get(name, 0)} of {host}, "
                    f"knows {s.held[host]}, unseen grants {unseen}"
                )
            queued: list[str] = list(
                self.client.zrange(f"{PREFIX}h:{host}:queue", 0, -1)  # type: ignore[arg-type]
            )
            live_queued = [q for q in queued if q.split()[0] in live]
            if live_queued:
                assert used == LIMITS[host], (
                    f"{host}: {used} of {LIMITS[host]} held while {live_queued} wait"
                )
            model = [f"{n} {t}" for n, t in self.queue[host] if n in live]
            assert live_queued == model, f"{host}: queue {live_queued} != {model}"
            # Each session's count of queue entries, and the hosts it is
            # known to use (what collecting it when it dies goes through).
            counted = {
                k: int(v)
                for k, v in self.client.hgetall(f"{PREFIX}h:{host}:queued").items()
            }
            assert counted == dict(Counter(q.split()[0] for q in live_queued))
            users = {str(u) for u in (*holders, *counted, *stored)}
            for user in users:
                assert self.client.sismember(f"{PREFIX}shosts:{user}", host)


@pytest.mark.parametrize("seed", range(6))
def test_random_steps_keep_the_invariants(redis_server: RedisServer, seed: int) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        driver = Driver(client, random.Random(seed))
        for _ in range(250):
            driver.step()
            driver.check()
        # Everyone gives everything back: nothing is left held or queued.
        for s in driver.sessions:
            if not s.alive:
                continue
            ops: list[tuple[str, list[str]]] = []
            for host in HOSTS:
                words: list[str] = []
                for ticket in s.waiting[host]:
                    words += ("C", ticket)
                words += s.takes(host, s.held[host])  # stored grants go
                if s.held[host]:
                    words += ("R", str(len(s.held[host])))
                ops.append((host, words))
            s.waiting.clear()
            s.held.clear()
            driver.queue.clear()
            driver.call(s, ops)
        for s in driver.sessions:  # grants made by the last releases
            if s.alive and any(s.held.values()):
                driver.call(
                    s,
                    [
                        (
                            h,
                            [
                                *s.takes(h, s.held[h]),
                                "R",
                                str(len(s.held[h])),
                            ],
                        )
                        for h in HOSTS
                        if s.held[h]
                    ],
                )
                s.held.clear()
        for host in HOSTS:
            assert client.hgetall(f"{PREFIX}h:{host}:holders") == {}
            assert client.zcard(f"{PREFIX}h:{host}:queue") == 0
            assert client.hgetall(f"{PREFIX}h:{host}:queued") == {}
        # Sessions that hold nothing anywhere list no host.
        for s in driver.sessions:
            if s.alive:
                assert client.smembers(f"{PREFIX}shosts:{s.name}") == set()
    finally:
        client.close()


def test_a_stale_epoch_applies_nothing(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        script = client.register_script(SCRIPT)
        host = HOSTS[0]

        def call(epoch: str, ops: list[str]) -> list[object]:
            args = [PREFIX, "s1", "60000", epoch, "", "", "0", "1", host, "1"]
            args += (str(len(ops) // 2), *ops)
            return list(script(keys=[EPOCH_KEY], args=args))

        first = call("", ["A", "1"])
        assert first[0] == "OK"
        assert first[2] == 0
        epoch = str(first[1]).split("|")[0]
        client.flushall()  # Redis forgot everything (a restart, empty)
        stale = call(epoch, ["A", "2"])
        assert stale[0] == "EPOCH"
        assert client.hgetall(f"{PREFIX}h:{host}:holders") == {}
        new_epoch = str(stale[1]).split("|")[0]
        assert new_epoch != epoch
        # Within the grace period: registrations count, nobody is granted.
        again = call(new_epoch, ["S", "1", "A", "3"])
        assert again[0] == "OK"
        assert int(str(again[2])) > 0
        entry = again[3][0]  # type: ignore[index]
        assert entry[1] == 1
        assert entry[2] == 1
        assert entry[5] == 0
    finally:
        client.close()


def test_writes_lost_in_a_failover_are_noticed_by_their_owner(
    redis_server: RedisServer,
) -> None:
    """A replica that took over without some writes counts fewer slots of a
    session than it holds: the session's own release, or its take of a grant
    Redis no longer has, answers BEHIND (applied all the same), so that the
    process registers anew."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        script = client.register_script(SCRIPT)
        host = HOSTS[0]  # limit 1

        def call(session: str, ops: list[str]) -> list[object]:
            args = [PREFIX, session, "60000", "", "", "", "0", "1", host, "1"]
            args += (str(len(ops) // 2), *ops)
            return list(script(keys=[EPOCH_KEY], args=args))

        holders = f"{PREFIX}h:{host}:holders"
        granted = f"{PREFIX}h:{host}:granted"
        # s1 holds the slot, s2 waits. The write of s1's grant is lost.
        assert call("s1", ["A", "1"])[0] == "OK"
        assert call("s2", ["A", "1"])[0] == "OK"
        client.hdel(holders, "s1")
        # The lost grant let s3 in: nothing any process can see yet. When s1
        # gives its slot back, the script sees the count go below zero.
        assert call("s1", ["R", "1"])[0] == "BEHIND"
        # Applied all the same: the free slot went to s2, stored for it.
        assert client.hget(granted, "s2") == "1"
        assert client.hget(holders, "s2") == "1"
        # The stored grant's write is lost in turn: s2 takes it (woken by the
        # old primary's PUBLISH, say) and the script does not have it.
        client.hdel(granted, "s2")
        assert call("s2", ["K", "1"])[0] == "BEHIND"
        # A take of a grant Redis has is fine.
        assert call("s2", ["R", "1"])[0] == "OK"
        assert call("s4", ["A", "1"])[0] == "OK"
        assert call("s5", ["A", "1"])[0] == "OK"
        assert call("s4", ["R", "1"])[0] == "OK"
        assert client.hget(granted, "s5") == "1"
        assert call("s5", ["K", "1"])[0] == "OK"
    finally:
        client.close()


def test_waiters_of_collected_sessions_are_not_counted(
    redis_server: RedisServer,
) -> None:
    """A dead session's queue entries stay in the queue until they reach its
    head, but the fleet's waiting count (in replies: what keeps a process
    from keeping a slot; in ``fleet status``) leaves them out at once."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        script = client.register_script(SCRIPT)
        host = HOSTS[0]  # limit 1

        def call(session: str, ops: list[str]) -> list[object]:
            args = [PREFIX, session, "60000", "", "", "", "0", "1", host, "1"]
            args += (str(len(ops) // 2), *ops)
            return list(script(keys=[EPOCH_KEY], args=args))

        def waiting(reply: list[object]) -> int:
            entries: list[list[object]] = reply[3]  # type: ignore[assignment]
            (entry,) = entries
            return int(str(entry[2]))

        call("s1", ["A", "1"])
        assert waiting(call("s2", ["A", "1", "A", "2"])) == 2
        assert waiting(call("s3", ["A", "1"])) == 3
        client.zadd(f"{PREFIX}sessions", {"s2": 0})  # s2 crashed
        reply = call("s1", [])  # collects s2
        assert waiting(reply) == 1  # s3's only
        assert client.zcard(f"{PREFIX}h:{host}:queue") == 3  # still queued
        # When s1 gives its slot back, s2's entries are skipped: s3 gets it.
        call("s1", ["R", "1"])
        assert client.hget(f"{PREFIX}h:{host}:granted", "s3") == "1"
        assert client.zcard(f"{PREFIX}h:{host}:queue") == 0
    finally:
        client.close()
