"""A connection granted to a waiting request, then closed or written to by the
server before that request runs.

A request woken from the queue runs one loop turn after the pool granted it an
idle connection. If the server's FIN for that connection is read in between,
the request would get a closing transport and fail with
``ClientConnectionResetError`` ("Cannot write to closing transport"), which
aiohttp does not retry; if bytes nobody asked for are read in between (a
``408`` some servers send before closing an idle connection), the request
would read them as its own response. aiohttp's own connector re-checks
``is_connected()`` after waking; we also check that nothing arrived: either
way the request takes another connection instead.

The server runs in a thread of its own, so the test can hold the client's
event loop still while the server answers one request and closes another
connection, and so choose the order in which the loop sees both.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import aiohttp
import pytest

from aioconnpool import PoolConnector
from tests.faulty import violations

Build = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class ThreadedServer:
    """HTTP/1.1 keep-alive on 127.0.0.1, one thread per connection.

    ``/hold`` is answered only once ``release`` is set; every other path at
    once. ``first_paths`` records each connection's socket under the path of
    its first request, so a test can close one from the server's side."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.release = threading.Event()
        self.holding = threading.Event()
        self.first_paths: list[tuple[str, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        buf = b""
        first = True
        with sock:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        chunk = sock.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                if first:
                    self.first_paths.append((path, sock))
                    first = False
                if path == "/hold":
                    self.holding.set()
                    self.release.wait(10)
                try:
                    sock.sendall(ANSWER)
                except OSError:
                    return

    def first(self, path: str) -> socket.socket:
        """The server's socket of the connection whose first request was
        ``path``."""
        [sock] = [s for p, s in self.first_paths if p == path]
        return sock

    def close(self) -> None:
        self.release.set()
        self.listener.close()
        for _, sock in self.first_paths:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def threaded_server() -> Iterator[ThreadedServer]:
    server = ThreadedServer()
    try:
        yield server
    finally:
        server.close()


def _hold_the_loop(seconds: float) -> None:
    """Block the event loop on purpose: what the server sends meanwhile is
    all waiting in the client's socket buffers at the loop's next poll."""
    time.sleep(seconds)


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never met")


STRAY = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 5\r\n\r\nstray"


def _fin(sock: socket.socket) -> None:
    sock.shutdown(socket.SHUT_RDWR)


def _stray(sock: socket.socket) -> None:
    sock.sendall(STRAY)


def _stray_then_fin(sock: socket.socket) -> None:
    sock.sendall(STRAY)
    sock.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [(_fin, "server"), (_stray, "error"), (_stray_then_fin, "error")],
    ids=["fin", "stray-bytes", "stray-bytes-then-fin"],
)
async def test_connection_spoiled_between_grant_and_pickup_is_replaced(
    threaded_server: ThreadedServer,
    make_session: Build,
    fault: Callable[[socket.socket], None],
    reason: str,
) -> None:
    srv = threaded_server
    session, conn = make_session(limit=1)
    base = f"http://{{}}.test:{srv.port}"
    # k.test keeps one idle connection (C).
    async with session.get(base.format("k") + "/stale") as resp:
        assert await resp.read() == b"ok"
    # A holds the only slot on j.test while B queues for k.test.
    a = asyncio.ensure_future(session.get(base.format("j") + "/hold"))
    await _until(srv.holding.is_set)

    async def fetch_b() -> tuple[int, bytes]:
        async with session.get(base.format("k") + "/again") as resp:
            return resp.status, await resp.read()

    b = asyncio.ensure_future(fetch_b())
    await _until(lambda: conn.stats().waiting == 1)
    assert conn.stats(base.format("k")).idle == 1

    loop = asyncio.get_running_loop()

    def spoil_c_while_loop_is_held() -> None:
        # Runs in the loop turn that reads A's answer, before that read: what
        # the server does to C is then ready at the next poll, behind A's
        # wake-up, which grants C to B; B itself runs a turn later.
        fault(srv.first("/stale"))
        _hold_the_loop(0.1)

    srv.release.set()
    _hold_the_loop(0.1)  # A's answer reaches the client's socket buffer
    loop.call_soon(spoil_c_while_loop_is_held)
    resp_a = await a
    assert await resp_a.read() == b"ok"
    resp_a.release()
    assert await b == (200, b"ok")  # on a new connection, not C

    stats = conn.stats()
    k = stats.hosts[next(key for key in stats.hosts if key.host == "k.test")]
    assert (k.created, k.requests, k.reused) == (2, 2, 1)
    # The grant of C ended unused: released "error", closed for the reason.
    assert k.released["error"] == 1
    assert k.released["eof"] == 2
    assert k.closed[reason] == 1
    assert sum(k.closed.values()) == 1
    assert violations(stats) == []
    assert stats.acquired == stats.waiting == stats.connecting == 0
