"""``RedisFleet``: per-host limits shared by every process of a fleet.

How one process takes part (the data and the script are described in
``_script.lua``):

* **One session per process**, a lease in Redis renewed by every call and by
  a heartbeat every third of ``lease_ttl``. A process that dies stops
  renewing; the next call of anyone in the fleet gives its slots back.
* **Batched calls.** An acquire, a release or a cancel is an operation
  queued in memory; the operations of one loop turn, for every host, go to
  Redis in one script call, and a new call starts when the previous one
  returns. So there is never more than one round trip in flight per process,
  and never more than one per acquisition and one per release.
* **Kept slots.** A release waits in memory for the next call; an acquire
  for the same host that comes first takes that slot over, with no round
  trip, when nobody in the fleet was waiting for the host at the last reply
  (so nobody is passed over). The slot stays held the whole time: the fleet's
  count never moves.
* **Fair and woken.** A request that finds no free slot is queued in Redis,
  FIFO per host across the fleet. The release that frees a slot grants it to
  the queue's head inside the same script and publishes the grant on that
  session's wake channel; grants stay stored until taken, so a missed
  message costs at most one heartbeat, never a lost slot.
* **Failures.** When Redis cannot be reached, ``on_unavailable`` decides;
  when it is back, the process starts a new session and re-registers the
  slots it holds in the same script that drops the old session, so nothing
  is counted twice or lost. A lease that lapsed (the process was paused
  longer than ``lease_ttl``) is handled the same way, and no request starts
  on a grant that came in while the lease was in doubt.

Where the parts live: this module holds ``RedisFleet`` (the connector's
calls, the batched script calls and their replies, outages and resyncs);
``_hosts`` what the process knows of each host and what a call carries for
it; ``_heartbeat`` the task that renews the lease and recovers after an
outage; ``_listener`` the subscription to wake-ups and pauses; ``_pacing``
fleet-wide pacing; ``_connect`` how Redis is reached.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import os
import socket
import time
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any

from aioconnpool import (
    FleetHostStats,
    FleetStats,
    Histogram,
    PoolClosedError,
    PoolKey,
)

from ._config import FleetConfig, validate_config
from ._connect import (
    CALL_FAILED,
    check_cluster_support,
    open_client,
)
from ._errors import FleetTimeoutError, FleetUnavailableError
from ._heartbeat import beat
from ._hosts import CANCELLED, UNSENT, Host, Ticket, ops_for
from ._listener import listen
from ._pacing import PACE_SCRIPT, FleetPacing, OnPause, OnResume

try:
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - the [redis] extra is missing
    raise ImportError(
        "aioconnpool.fleet needs redis-py: pip install 'aioconnpool[redis]'"
    ) from exc

__all__ = ["RedisFleet"]

log = logging.getLogger("aioconnpool.fleet")

_BOUNDS = Histogram().bounds

SCRIPT = resources.files(__package__).joinpath("_script.lua").read_text("utf-8")


class RedisFleet:
    """Fleet-wide per-host limits on Redis (see the module docstring).

    ``url`` is the Redis URL (``redis://``, ``rediss://`` or ``unix://``);
    every process that passes the same Redis and ``name`` shares the limits:
    ``limit_per_host``, overridden per host by ``host_limits`` (the patterns
    of ``PoolConnector(host_limits=...)``; ``None`` for no fleet limit on a
    host). ``lease_ttl`` (seconds) is how long a silent process keeps its
    slots. ``on_unavailable`` says what a request does when Redis cannot be
    reached: ``"local"`` (go ahead on the local limits, counted in
    ``local_grants``), ``"wait"`` (wait for Redis, up to ``acquire_timeout``
    and the request's connect timeout) or ``"raise"``
    (:class:`FleetUnavailableError`). ``acquire_timeout`` bounds any wait for
    a fleet slot (:class:`FleetTimeoutError`); ``redis_timeout`` each Redis
    command. ``cluster=True`` talks to a Redis Cluster (``url`` names any of
    its nodes): the fleet's keys share one hash tag, so they live on one
    shard, and the client follows that shard through failovers.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        limit_per_host: int,
        host_limits: Mapping[str, int | None] | None = None,
        lease_ttl: float = 10.0,
        on_unavailable: str = "local",
        acquire_timeout: float | None = None,
        redis_timeout: float = 2.0,
        cluster: bool = False,
    ) -> None:
        self._config: FleetConfig = validate_config(
            url,
            name=name,
            limit_per_host=limit_per_host,
            host_limits=host_limits,
            lease_ttl=lease_ttl,
            on_unavailable=on_unavailable,
            acquire_timeout=acquire_timeout,
            redis_timeout=redis_timeout,
            cluster=cluster,
        )
        if cluster:
            check_cluster_support()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._redis: Any = None
        self._script: Any = None
        self._hosts: dict[PoolKey, Host] = {}
        self._by_name: dict[str, Host] = {}
        self._ticket_ids = itertools.count(1)
        self._session = self._new_session_id()
        # Earlier sessions of this process, dropped by the next calls.
        self._drops: list[str] = []
        # Whether Redis has answered a call of the current session: from
        # then on the session must still be there (else it was lost).
        self._confirmed = False
        # How recent the fleet's figures for a host must be for take_now to
        # keep a slot without asking: bounds how long a process can pass
        # over another's waiters.
        self._fresh = min(0.1, self._config.lease_ttl / 10)
        self._renew = False  # the next call goes even with nothing to carry
        self._epoch = ""
        self._state = "connected"
        self._closed = False
        self._lease_until = 0.0  # loop time until which our lease surely holds
        self._info = ""
        self._caller: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._grace_timer: asyncio.TimerHandle | None = None
        self._outages = 0
        self._lapses = 0
        self._local_grants = 0
        self._round_trips = 0
        self._rtt_counts = [0] * len(_BOUNDS)
        self._rtt_sum = 0.0
        # Fleet-wide pacing (its own script and calls, see _pacing).
        self._pacing = FleetPacing(self, origin=self._new_session_id())

    def __repr__(self) -> str:
        c = self._config
        return (
            f"<RedisFleet {c.name!r} at {c.address}"
            f"{' (cluster)' if c.cluster else ''} limit_per_host="
            f"{c.limit_per_host} state={self._state}>"
        )

    # ------------------------------------------------ the connector's calls

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called by the ``PoolConnector`` that owns this fleet, once."""
        if self._loop is not None:
            raise RuntimeError(
                f"{self!r} already belongs to a connector: give each "
                "PoolConnector a RedisFleet of its own"
            )
        self._loop = loop

    def take_now(self, key: PoolKey) -> bool:
        """A fleet slot of ``key`` without waiting, if one can be had here:
        the host has no fleet limit, or a slot this process is giving back
        has not left yet (releases go with the next call), nobody in this
        process waits for the host, and nobody in the fleet waited for it at
        a reply at most ``min(0.1, lease_ttl / 10)`` seconds old: so nobody
        is passed over for longer than that. That slot stays held
        throughout: the fleet's count never moves, and the keep-alive hot
        path needs a round trip only every so often."""
        host = self._hosts.get(key)
        if host is None:
            return self._config.limit_of(key) is None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        if (
            host.releases
            and not host.tickets  # nobody here was first (local FIFO)
            and not host.fleet_waiting
            and now - host.reply_at <= self._fresh  # nobody there, lately
            and self._state == "connected"
            and now <= self._lease_until
        ):
            host.releases -= 1
            host.held += 1
            return True
        return False

    def lease_ok(self, key: PoolKey) -> bool:
        """Whether this process's slot of ``key`` is surely still its own:
        False when its lease may have run out (a pause longer than
        ``lease_ttl``) and Redis has not confirmed it since. The connector
        asks before a request that waited starts (see ``fleet_gate``)."""
        if key not in self._hosts or self._state != "connected" or self._closed:
            return True  # no fleet limit, local limits, or closing
        loop = self._loop
        assert loop is not None
        return loop.time() <= self._lease_until

    def pacing_listen(self, on_pause: OnPause, on_resume: OnResume) -> None:
        """Called by the connector: pauses and resumes announced by other
        processes of the fleet are passed to these callbacks."""
        self._pacing.listen(on_pause, on_resume)

    async def reserve_start(
        self, key: PoolKey, gap: float, deadline: float | None
    ) -> tuple[float, bool]:
        """A fleet-wide start for the next request to ``key``, ``gap``
        seconds after the previous one anywhere in the fleet, and no sooner
        than the host's pause ends: ``(seconds to wait, True)``, or
        ``(seconds it would wait, False)`` when that passes ``deadline``
        (loop time): nothing is then reserved."""
        return await self._pacing.reserve(key, gap, deadline)

    async def confirm_start(
        self, key: PoolKey, gap: float, deadline: float | None
    ) -> tuple[float, bool]:
        """Confirm, right before it is sent, the start of a request to
        ``key`` that reserved one: ``(0, True)`` when no start anywhere in
        the fleet came less than its gap ago (``gap`` then counts from now),
        ``(seconds to wait, True)`` to wait and confirm again, ``(seconds,
        False)`` when that passes ``deadline``."""
        return await self._pacing.reserve(key, gap, deadline, kind="C")

    def share_pause(self, key: PoolKey, seconds: float, reason: str) -> None:
        """Pause ``key`` fleet-wide for ``seconds`` (sent with the next call)."""
        self._pacing.pause(key, seconds, reason)

    def share_resume(self, key: PoolKey) -> None:
        """End ``key``'s pause fleet-wide."""
        self._pacing.resume(key)

    async def acquire(self, key: PoolKey) -> None:
        """Wait for one fleet slot of ``key`` (after :meth:`take_now` said no)."""
        if self._closed:
            raise PoolClosedError("Connector is closed.")
        host = self._hosts.get(key)
        if host is None:
            limit = self._config.limit_of(key)
            if limit is None:
                return  # no fleet limit for this host
            host = self._host(key, limit)
        if self._redis is None:
            self._start()
        if self._state == "unavailable":
            mode = self._config.on_unavailable
            if mode == "local":
                host.held += 1
                self._local_grants += 1
                return
            if mode == "raise":
                raise self._unavailable_error(host, None)
        loop = self._loop
        assert loop is not None
        ticket = Ticket(str(next(self._ticket_ids)), loop.create_future())
        host.tickets[ticket.id] = ticket
        if self._state == "connected":
            host.acquires.append(ticket.id)
            self._call_soon()
        timer = None
        limit_s = self._config.acquire_timeout
        if limit_s is not None:
            timer = loop.call_later(limit_s, self._timed_out, host, ticket, limit_s)
        try:
            await ticket.future
        except BaseException:
            self._give_up(host, ticket)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def release(self, key: PoolKey) -> None:
        """Give one slot of ``key`` back."""
        host = self._hosts.get(key)
        if host is None or not host.limit or host.held <= 0:
            return
        host.held -= 1
        if self._state == "connected" and not self._closed and not host.register:
            # (A pending re-registration sends the count itself.)
            host.releases += 1
            self._call_soon()

    def snapshot(self) -> FleetStats:
        """The figures behind ``PoolStats.fleet``."""
        c = self._config
        hosts = {
            key: FleetHostStats(
                limit=h.limit,
                acquired=h.fleet_acquired,
                waiting=h.fleet_waiting,
                mine=h.held,
                waiting_here=sum(1 for t in h.tickets.values() if t.state != CANCELLED),
            )
            for key, h in self._hosts.items()
            if h.limit
        }
        return FleetStats(
            name=c.name,
            address=c.address,
            state="closed" if self._closed else self._state,
            session=self._session,
            on_unavailable=c.on_unavailable,
            lease_ttl=c.lease_ttl,
            outages=self._outages,
            lapses=self._lapses,
            local_grants=self._local_grants,
            round_trips=self._round_trips,
            pace_calls=self._pacing.calls,
            reservations=self._pacing.reservations,
            local_paces=self._pacing.local_paces,
            pauses_sent=self._pacing.pauses_sent,
            pauses_received=self._pacing.pauses_received,
            paused=MappingProxyType(self._pacing.paused()),
            round_trip=Histogram(
                counts=tuple(self._rtt_counts),
                count=self._round_trips,
                sum=self._rtt_sum,
            ),
            hosts=MappingProxyType(hosts),
        )

    async def close(self) -> None:
        """Leave the fleet: every slot and queue entry of this process goes
        back at once (without waiting for the lease), then disconnect."""
        if self._closed:
            return
        self._closed = True
        for host in self._hosts.values():
            for ticket in list(host.tickets.values()):
                if not ticket.future.done():
                    ticket.future.set_exception(PoolClosedError("Connector is closed."))
            host.tickets.clear()
        pacing = self._pacing.close()  # awaited, not cancelled
        tasks = [
            t for t in (self._caller, self._heartbeat, self._listener) if t is not None
        ]
        for task in tasks:
            task.cancel()
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        if tasks or pacing:
            await asyncio.gather(*tasks, *pacing, return_exceptions=True)
        if self._redis is None:
            return
        try:
            if self._state == "connected":
                for session in [*self._drops, self._session]:
                    await self._run_script(session, drop=session, groups=[])
        except CALL_FAILED as exc:
            log.warning(
                "Fleet %r: could not leave cleanly (%s); this process's slots "
                "return when its lease runs out",
                self._config.name,
                type(exc).__name__,
            )
        finally:
            await self._redis.aclose()

    # ---------------------------------------------------------- internals

    @staticmethod
    def _new_session_id() -> str:
        return f"{socket.gethostname()[:40]}-{os.getpid()}-{os.urandom(4).hex()}"

    def _host(self, key: PoolKey, limit: int) -> Host:
        host = Host(key=key, name=str(key), limit=limit)
        self._hosts[key] = host
        self._by_name[host.name] = host
        return host

    def _start(self) -> None:
        c = self._config
        self._use(open_client(c, timeout=c.redis_timeout))
        self._info = (
            f"{os.getpid()} {socket.gethostname()[:60].replace(' ', '_')} "
            f"{int(c.lease_ttl * 1000)} {int(time.time() * 1000)}"
        )
        loop = self._loop
        assert loop is not None
        self._heartbeat = loop.create_task(beat(self))
        self._listener = loop.create_task(listen(self))

    def _use(self, client: Any) -> None:
        """Talk to Redis through ``client`` from now on (at the start, and
        the fresh cluster client after an outage)."""
        self._redis = client
        self._script = client.register_script(SCRIPT)
        self._pacing.script = client.register_script(PACE_SCRIPT)

    def _ensure_started(self) -> None:
        if self._redis is None:
            self._start()

    def _forget_unused_hosts(self) -> None:
        """A crawl visits hosts once: keep only those this process holds,
        waits on or still has something to tell Redis about."""
        for key, host in list(self._hosts.items()):
            if not (host.held or host.tickets or host.takes or host.has_news()):
                del self._hosts[key]
                del self._by_name[host.name]

    def _call_soon(self) -> None:
        """Make sure a call to Redis carries what was just queued."""
        if self._caller is None and not self._closed:
            loop = self._loop
            assert loop is not None
            self._caller = loop.create_task(self._calls())

    async def _calls(self) -> None:
        """Calls to Redis, one at a time, while operations are waiting."""
        try:
            while self._state == "connected" and not self._closed:
                hosts = [h for h in self._hosts.values() if h.has_news()]
                if not hosts and not self._drops and not self._renew:
                    return
                self._renew = False
                await self._call(hosts)
        finally:
            self._caller = None

    def _groups(self, hosts: list[Host]) -> list[tuple[Host, list[str]]]:
        return [(host, ops_for(host)) for host in hosts]

    async def _call(self, hosts: list[Host]) -> None:
        """One script call carrying ``hosts``' operations; its reply applied."""
        groups = self._groups(hosts)
        drop = self._drops.pop(0) if self._drops else ""
        session = self._session
        loop = self._loop
        assert loop is not None
        sent_at = loop.time()
        try:
            reply = await self._run_script(session, drop=drop, groups=groups)
        except CALL_FAILED as exc:
            if drop:  # maybe not dropped: try again
                self._drops.insert(0, drop)
            if session != self._session:
                # This process already started over meanwhile (a lapse the
                # heartbeat noticed): the next call tells whether Redis
                # answers.
                return
            self._call_failed(exc)
            return
        self._applied(reply, session, sent_at)

    def _call_failed(self, exc: BaseException) -> None:
        """A call to Redis failed (a limits call, or a pacing call that
        requests wait on): an outage, or first a lapse."""
        loop = self._loop
        assert loop is not None
        if (
            isinstance(exc, (asyncio.TimeoutError, RedisTimeoutError))
            and self._confirmed
            and loop.time() > self._lease_until
        ):
            # A timeout that outlived the lease: maybe Redis hung, maybe
            # this process stalled (a SIGSTOP, a frozen VM) and Redis is
            # fine. The lease is in doubt either way: register anew at
            # once. Only if that fails too is it an outage, which
            # on_unavailable="local" would answer by letting every
            # waiting request through.
            self._lapsed()
            return
        self._became_unavailable(exc)

    async def _run_script(
        self, session: str, *, drop: str, groups: list[tuple[Host, list[str]]]
    ) -> Any:
        c = self._config
        args: list[str] = [
            c.prefix,
            session,
            str(int(c.lease_ttl * 1000)),
            self._epoch,
            drop,
            self._info,
            "1" if self._confirmed and session == self._session else "0",
            str(len(groups)),
        ]
        for host, ops in groups:
            args += (host.name, str(host.limit), str(len(ops) // 2))
            args += ops
        return await self._timed_call(
            self._script, keys=[f"{c.prefix}epoch"], args=args
        )

    async def _timed_call(
        self, script: Any, *, keys: list[str], args: list[str]
    ) -> Any:
        """One script call, bounded and timed (both scripts' calls count in
        ``round_trips``)."""
        started = time.perf_counter()
        try:
            # redis_timeout bounds each socket operation; this bounds the
            # whole call (a reconnection included).
            return await asyncio.wait_for(
                script(keys=keys, args=args), self._config.redis_timeout * 2
            )
        finally:
            elapsed = time.perf_counter() - started
            self._round_trips += 1
            self._rtt_sum += elapsed
            self._rtt_counts[bisect.bisect_left(_BOUNDS, elapsed)] += 1

    def _applied(self, reply: Any, session: str, sent_at: float) -> None:
        status, epoch = reply[0], reply[1]
        epoch_id = epoch.split("|", 1)[0]
        if status == "LOST":
            if session == self._session:
                # Our slots went back while we were silent (or Redis lost
                # them): register what this process really holds, anew.
                self._lapsed()
            return
        if status == "BEHIND":
            if session == self._session:
                # Redis lost some of our writes (a failover to a replica
                # that had not received them): its count of our slots is
                # short, so the fleet could over-admit. Register anew.
                self._lapses += 1
                log.warning(
                    "Fleet %r: Redis at %s counted fewer of this process's "
                    "slots than it holds (writes lost in a failover?); "
                    "re-registering them",
                    self._config.name,
                    self._config.address,
                )
                self._resync()
            return
        if status == "EPOCH":
            # Redis forgot the fleet (restarted empty) and someone re-created
            # it: nothing of that call was applied. Start over from what this
            # process knows, inside the grace period.
            log.warning(
                "Fleet %r: Redis at %s lost the fleet's state; re-registering "
                "this process's slots",
                self._config.name,
                self._config.address,
            )
            self._epoch = epoch_id
            self._resync()
            return
        self._epoch = epoch_id
        grace_ms = int(reply[2])
        loop = self._loop
        assert loop is not None
        if session == self._session:
            self._confirmed = True
            self._lease_until = sent_at + self._config.lease_ttl * 0.9
        now = loop.time()
        for entry in reply[3]:
            host = self._by_name.get(entry[0])
            if host is None:
                continue
            host.fleet_acquired = int(entry[1])
            host.fleet_waiting = int(entry[2])
            if session != self._session:
                # A reply to a session this process has left (before the
                # reply came, or while applying it: a grant below found the
                # lease run out): its grants go back with that session
                # (dropped), and the requests they were for are queued again
                # under the new one. None of them is the new session's to
                # give back or take.
                continue
            host.reply_at = now
            direct = int(entry[5])
            for i, ticket_id in enumerate(entry[6:]):
                if session != self._session:
                    break
                self._granted(host, ticket_id, stored=i >= direct)
        if grace_ms > 0 and self._grace_timer is None:
            loop = self._loop
            assert loop is not None
            self._grace_timer = loop.call_later(
                grace_ms / 1000 + 0.005, self._grace_over
            )

    def _grace_over(self) -> None:
        self._grace_timer = None
        self._poll_waiting()

    def _poll_waiting(self) -> None:
        for host in self._hosts.values():
            if host.tickets:
                host.poll = True
        self._call_soon()

    def _granted(self, host: Host, ticket_id: str, *, stored: bool) -> None:
        """Redis granted ``ticket_id`` a slot of ``host``."""
        ticket = host.tickets.get(ticket_id)
        if ticket is not None and ticket.state == UNSENT:
            return  # a grant to our previous session: dropping it gives it back
        if ticket is not None and ticket.future.done():
            # Its task was cancelled and has not yet run its give-up.
            if stored:
                return  # the give-up's cancel gives the slot back
            ticket.state = CANCELLED
        if ticket is None or ticket.state == CANCELLED:
            if not stored:
                # Granted in the very call that the ticket's cancel missed:
                # the cancel would find nothing, so the slot goes back.
                if ticket is not None:
                    del host.tickets[ticket_id]
                    if ticket_id in host.cancels:
                        host.cancels.remove(ticket_id)
                host.releases += 1
                self._call_soon()
            # A stored grant of a cancelled ticket: its cancel gives it back.
            return
        if not self._confirmed:
            # Announced to a new session before Redis answered its first
            # call: that answer lists the grant again.
            return
        loop = self._loop
        assert loop is not None
        if loop.time() > self._lease_until:
            # The lease may have run out while this grant travelled (a pause
            # longer than lease_ttl): the slot may be someone else's by now.
            self._lapsed()
            return
        del host.tickets[ticket_id]
        host.held += 1
        if stored:
            host.takes.append(ticket_id)  # sent with the next call, not alone
        ticket.future.set_result(None)

    def _give_up(self, host: Host, ticket: Ticket) -> None:
        """``ticket``'s request stopped waiting (cancelled, timed out)."""
        if host.tickets.get(ticket.id) is not ticket:
            # Granted: the slot was counted; give it back.
            future = ticket.future
            if future.done() and not future.cancelled() and not future.exception():
                self.release(host.key)
            return
        if ticket.state == UNSENT:
            del host.tickets[ticket.id]
            if ticket.id in host.acquires:
                host.acquires.remove(ticket.id)
        elif self._state == "connected":
            ticket.state = CANCELLED
            host.cancels.append(ticket.id)
            self._call_soon()
        else:
            # Redis is unreachable: the resync drops the old session, and its
            # queue entries with it.
            del host.tickets[ticket.id]

    def _timed_out(self, host: Host, ticket: Ticket, limit: float) -> None:
        if ticket.future.done():
            return
        ticket.future.set_exception(
            FleetTimeoutError(
                f"Timed out after {limit:g} s (acquire_timeout) waiting for a "
                f"fleet slot of {host.key} in fleet {self._config.name!r}: "
                f"fleet limit {host.limit}, {host.fleet_acquired} held and "
                f"{host.fleet_waiting} waiting across the fleet as last seen",
                host.key,
                limit,
            )
        )

    def _unavailable_error(
        self, host: Host, cause: BaseException | None
    ) -> FleetUnavailableError:
        why = "" if cause is None else f" ({type(cause).__name__}: {cause})"
        return FleetUnavailableError(
            f"Fleet {self._config.name!r}: Redis at {self._config.address} cannot "
            f"be reached{why}; no fleet slot for {host.key} "
            "(on_unavailable='raise')",
            host=host.key,
            address=self._config.address,
        )

    def _became_unavailable(self, exc: BaseException) -> None:
        if self._state == "connected":
            self._outages += 1
            log.warning(
                "Fleet %r: Redis at %s cannot be reached (%s: %s); "
                "on_unavailable=%r until it is back",
                self._config.name,
                self._config.address,
                type(exc).__name__,
                exc,
                self._config.on_unavailable,
            )
        self._state = "unavailable"
        mode = self._config.on_unavailable
        for host in self._hosts.values():
            host.acquires.clear()
            host.cancels.clear()
            host.takes.clear()
            host.releases = 0
            host.poll = False
            for ticket in list(host.tickets.values()):
                if ticket.state == CANCELLED or ticket.future.done():
                    del host.tickets[ticket.id]
                elif mode == "local":
                    del host.tickets[ticket.id]
                    host.held += 1
                    self._local_grants += 1
                    ticket.future.set_result(None)
                elif mode == "raise":
                    del host.tickets[ticket.id]
                    ticket.future.set_exception(self._unavailable_error(host, exc))
                else:  # "wait": sent again after the resync
                    ticket.state = UNSENT
        self._pacing.unavailable()

    def _lapsed(self) -> None:
        """Our lease may have run out: the slots Redis knew as ours may be
        someone else's. Start a new session that registers what this process
        really holds and drops the old one."""
        self._lapses += 1
        log.warning(
            "Fleet %r: this process was silent longer than its lease "
            "(lease_ttl=%g s), or Redis lost its session; starting a new one",
            self._config.name,
            self._config.lease_ttl,
        )
        self._resync()

    def _resync(self) -> None:
        """A new session: re-register the slots held, queue again the
        requests still waiting (at the end of the queue), drop the old one."""
        self._drops.append(self._session)
        self._session = self._new_session_id()
        self._confirmed = False
        self._lease_until = 0.0
        for host in self._hosts.values():
            host.cancels.clear()
            host.takes.clear()
            host.releases = 0
            host.acquires.clear()
            host.register = host.held > 0
            for ticket in list(host.tickets.values()):
                if ticket.state == CANCELLED or ticket.future.done():
                    del host.tickets[ticket.id]
                else:
                    ticket.state = UNSENT
                    host.acquires.append(ticket.id)
        self._call_soon()
