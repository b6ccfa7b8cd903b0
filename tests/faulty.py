"""Loopback servers that misbehave on purpose, and the OS's view of our sockets.

``FaultServer`` is a raw asyncio server (no HTTP library: it must be able to
send what no library would) on 127.0.0.1. What it does with a request is
chosen by the request path, so one server plays every fault; what it does with
a new connection (serve, close, reset, accept late, never accept) is chosen
when it is built. ``client_sockets(port)`` counts the TCP sockets this process
really holds to a port, from /proc, for comparing with ``stats().open``.
``violations()`` lists the pool invariants a snapshot breaks; ``settle_pool``
waits for a quiet pool to match the OS. Shared by the fault tests, the soak
test and ``bench/soak.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from aioconnpool import PoolConnector, PoolStats

__all__ = [
    "FAULTS",
    "FaultServer",
    "client_sockets",
    "quiet_violations",
    "settle_pool",
    "violations",
]

OnAccept = Literal["serve", "close", "reset", "never"]

BODY = b"ok"
TRICKLE_LENGTH = 1_000_000

FAULTS: tuple[str, ...] = (
    "ok",  # a good keep-alive answer
    "reset-headers",  # half the status line, then RST
    "reset-body",  # headers and part of the body, then RST
    "close-idle",  # a good keep-alive answer, then FIN shortly after (stale idle)
    "drop-next",  # a good answer; the next request on the socket gets a FIN
    "hang",  # reads the request, never answers
    "trickle",  # headers and one body byte, then nothing
    "bad-status",  # a malformed status line
    "bad-header",  # a header line without a colon
    "short-body",  # fewer bytes than Content-Length, then FIN
    "long-body",  # more bytes than Content-Length, in the same packet
    "late-bytes",  # a good answer, then unasked-for bytes on the idle socket
    "sink",  # reads the request head, then stops reading (the client's send blocks)
)
"""Request paths the server understands (``/<fault>``)."""


def _rst_close(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _answer(body: bytes, *, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (size, body)


class FaultServer:
    """A misbehaving HTTP/1.1 server on 127.0.0.1; use ``async with``.

    ``on_accept``: ``"serve"`` answers requests by path (see ``FAULTS``);
    ``"close"`` / ``"reset"`` end each connection (FIN / RST) right after
    accepting it; ``"never"`` does not accept at all, so with ``backlog=0``
    the accept queue fills and further connects hang (a real connect timeout).
    ``accept_delay`` sleeps before each accept (a slow server).
    ``idle_close_after`` is how long ``/close-idle`` waits before its FIN and
    ``/late-bytes`` before its stray bytes; ``sink_for`` how long ``/sink``
    stops reading.
    """

    def __init__(
        self,
        *,
        on_accept: OnAccept = "serve",
        accept_delay: float = 0.0,
        backlog: int = 128,
        idle_close_after: float = 0.02,
        sink_for: float = 3600.0,
    ) -> None:
        self.on_accept = on_accept
        self.accept_delay = accept_delay
        self.idle_close_after = idle_close_after
        self.sink_for = sink_for
        self.accepted = 0
        self.requests: dict[str, int] = {}
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(backlog)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._socks: set[socket.socket] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._acceptor: asyncio.Task[None] | None = None

    def url(self, fault: str = "ok", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{fault}"

    async def __aenter__(self) -> FaultServer:
        if self.on_accept != "never":
            self._acceptor = asyncio.create_task(self._accept_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        tasks = list(self._tasks)
        if self._acceptor is not None:
            tasks.append(self._acceptor)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in list(self._socks):
            sock.close()
        self._socks.clear()
        self._listener.close()

    # ------------------------------------------------------------ internals

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.accept_delay:
                await asyncio.sleep(self.accept_delay)
            sock, _ = await loop.sock_accept(self._listener)
            self.accepted += 1
            if self.on_accept == "close":
                sock.close()
            elif self.on_accept == "reset":
                _rst_close(sock)
            else:
                sock.setblocking(False)
                self._socks.add(sock)
                self._spawn(self._serve(sock))

    async def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        buf = b""
        drop_next = False
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await loop.sock_recv(sock, 65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                fault = head.split(b" ", 2)[1].decode().lstrip("/").split("?")[0]
                self.requests[fault] = self.requests.get(fault, 0) + 1
                if drop_next:
                    return  # FIN to a request on a connection the client reused
                keep = await self._respond(fault, sock)
                if fault == "drop-next":
                    drop_next = True
                elif fault == "close-idle":
                    await asyncio.sleep(self.idle_close_after)
                    return
                if not keep:
                    return
        except OSError:
            return  # the client reset us: nothing to do but close
        finally:
            if sock in self._socks:
                self._socks.discard(sock)
                sock.close()

    async def _respond(self, fault: str, sock: socket.socket) -> bool:
        """Answer one request; return whether to keep serving the socket."""
        loop = asyncio.get_running_loop()
        send = loop.sock_sendall
        if fault in ("ok", "close-idle", "drop-next"):
            await send(sock, _answer(BODY))
            return True
        if fault == "reset-headers":
            await send(sock, b"HTTP/1.1 200 OK\r\nContent-Le")
            self._socks.discard(sock)
            _rst_close(sock)
            return False
        if fault == "reset-body":
            await send(sock, _answer(b"x" * 1000, length=100_000))
            await asyncio.sleep(0.01)  # let the headers reach the client alone
            self._socks.discard(sock)
            _rst_close(sock)
            return False
        if fault in ("hang", "sink"):
            # "hang" keeps reading (it sees the client go); "sink" first stops
            # reading, so a client streaming a body blocks on a full buffer.
            if fault == "sink":
                await asyncio.sleep(self.sink_for)
            while await loop.sock_recv(sock, 65536):
                pass
            return False
        if fault == "trickle":
            await send(sock, _answer(b"x", length=TRICKLE_LENGTH))
            while await loop.sock_recv(sock, 65536):
                pass
            return False
        if fault == "bad-status":
            await send(sock, b"HTTP/1.1 OK-ISH\r\nContent-Length: 2\r\n\r\nok")
            return True
        if fault == "bad-header":
            await send(
                sock, b"HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 2\r\n\r\nok"
            )
            return True
        if fault == "short-body":
            await send(sock, _answer(b"x" * 10, length=100))
            return False
        if fault == "late-bytes":
            await send(sock, _answer(BODY))
            await asyncio.sleep(self.idle_close_after)
            await send(sock, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            return True
        if fault == "long-body":
            await send(sock, _answer(BODY) + b"EXTRA BYTES NOBODY ASKED FOR")
            return True
        await send(sock, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        return True


# ------------------------------------------------------------- the OS's view


def _own_socket_inodes() -> set[str]:
    inodes: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed between listdir and readlink
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def client_sockets(*ports: int) -> int:
    """TCP sockets this process holds whose *remote* port is one of ``ports``.

    Read from /proc/self/fd (our socket inodes) and /proc/net/tcp{,6} (their
    addresses), so a server in the same process, whose sockets have the port
    as their local port, is not counted. Linux only.
    """
    wanted = set(ports)
    inodes = _own_socket_inodes()
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port in wanted and fields[9] in inodes:
                count += 1
    return count


# ------------------------------------------------------------ the invariants


def violations(stats: PoolStats) -> list[str]:
    """The pool invariants ``stats`` breaks (empty if none); valid at any time."""
    found: list[str] = []
    gauges = ("acquired", "idle", "connecting", "waiting")
    for name in gauges:
        if getattr(stats, name) < 0:
            found.append(f"{name} = {getattr(stats, name)} < 0")
    if stats.limit is not None and stats.acquired + stats.connecting > stats.limit:
        found.append(
            f"acquired {stats.acquired} + connecting {stats.connecting}"
            f" > limit {stats.limit}"
        )
    for key, host in stats.hosts.items():
        limit = host.limit
        if limit is not None and host.acquired + host.connecting > limit:
            found.append(f"{key}: acquired + connecting > limit {limit}")
        for name in gauges:
            if getattr(host, name) < 0:
                found.append(f"{key}: {name} < 0")
    for name in gauges:
        total = sum(getattr(h, name) for h in stats.hosts.values())
        if total != getattr(stats, name):
            found.append(f"per-host {name} adds up to {total}, total {name} differs")
    for name in ("requests", "created", "reused", "connect_errors"):
        total = sum(getattr(h, name) for h in stats.hosts.values())
        total += getattr(stats.forgotten, name)
        if total != getattr(stats, name):
            found.append(
                f"per-host {name} adds up to {total}, not {getattr(stats, name)}"
            )
    ended = sum(stats.released.values())
    if stats.created + stats.reused != ended + stats.acquired:
        found.append(
            f"created {stats.created} + reused {stats.reused} != released {ended}"
            f" + acquired {stats.acquired}"
        )
    return found


def quiet_violations(stats: PoolStats, os_sockets: int) -> list[str]:
    """What a pool with no request in flight breaks, beyond ``violations``."""
    found = violations(stats)
    for name in ("acquired", "connecting", "waiting"):
        if getattr(stats, name):
            found.append(f"{name} = {getattr(stats, name)} with nothing in flight")
    if stats.open != os_sockets:
        found.append(f"stats().open = {stats.open}, the OS holds {os_sockets} sockets")
    return found


async def settle_pool(
    connector: PoolConnector,
    ports: tuple[int, ...],
    *,
    timeout: float = 2.0,
    sockets: Callable[..., int] = client_sockets,
) -> list[str]:
    """Wait until a quiet pool matches the OS, then report what it breaks.

    Closing a socket takes a loop iteration or two (and a TLS close longer),
    so this polls until nothing is broken or ``timeout`` has passed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    rounds = 0
    while True:
        found = quiet_violations(connector.stats(), sockets(*ports))
        if not found or loop.time() >= deadline:
            return found
        rounds += 1
        await asyncio.sleep(0 if rounds < 5 else 0.01)
