"""A script call that reaches Redis after its session was collected.

That happens whenever Redis stalls (SIGSTOP, a long fork, a slow network):
calls sent before the stall run after it, in any order across processes,
once every lease has run out. The first one collects every session; the
others then come from sessions that Redis already forgot. Whatever they do,
no slot may stay held by a session that is gone.

This drives the script directly (its arguments are described at the top of
``aioconnpool/fleet/_script.lua``), as ``tests/test_fleet_script.py`` does.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from aioconnpool.fleet._redis import SCRIPT
from aioconnpool.testing import RedisServer

NAME = "late-calls"
P = f"aioconnpool:{{{NAME}}}:"
HOST = "http://h.test:80"


class Caller:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.script = client.register_script(SCRIPT)
        self.epoch = ""
        self.answered: set[str] = set()  # sessions Redis has answered
        self.status = ""

    def call(
        self,
        session: str,
        ops: list[str] | None,
        *,
        ttl_ms: int = 60_000,
        drop: str = "",
    ) -> list[Any]:
        """One call of ``session``: ``ops`` on HOST (limit 1), or no group.
        A session Redis has answered before says so (it must still exist)."""
        known = "1" if session in self.answered else "0"
        args = [P, session, str(ttl_ms), self.epoch, drop, "", known, "0"]
        if ops is not None:
            args[-1] = "1"
            args += [HOST, "1", str(len(ops) // 2), *ops]
        reply = self.script(keys=[P + "epoch"], args=args)
        self.status = reply[0]
        self.epoch = reply[1].split("|", 1)[0]
        if reply[0] == "LOST":
            return []
        assert reply[0] == "OK", reply
        self.answered.add(session)
        return list(reply[3])


def test_a_collected_sessions_late_call_leaks_no_slot(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        c = Caller(client)
        c.call("X", ["A", "x1"])  # X holds the only slot
        c.call("S1", ["A", "t1"], ttl_ms=200)  # S1 queues behind it
        time.sleep(0.3)  # S1's lease runs out (a stall)
        c.call("X", [])  # any call collects S1
        assert client.zscore(P + "sessions", "S1") is None
        c.call("S1", None)  # a heartbeat of S1 sent before the stall
        # Redis forgot S1: it is told so, and S1 is not brought back empty.
        assert c.status == "LOST"
        assert client.zscore(P + "sessions", "S1") is None
        c.call("X", ["R", "1"])  # X gives its slot back
        c.call("S1", None, drop="S1")  # S1 is gone for good
        holders = client.hgetall(f"{P}h:{HOST}:holders")
        sessions = set(client.zrange(P + "sessions", 0, -1))
        # Only sessions Redis knows hold slots, so the next acquire is served.
        assert set(holders) <= sessions, holders
        (entry,) = c.call("X", ["A", "x2"])
        assert entry[5] == 1, f"X's acquire was not granted: {entry}, {holders}"
    finally:
        client.close()
