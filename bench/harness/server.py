"""A minimal, fast HTTP/1.1 keep-alive server for the socket benchmarks.

It answers every request with the same small ``200 OK`` body, from its own
process, so that the client under test has a core of its own and the server
is never what is measured. It is a plain ``asyncio.Protocol`` (no aiohttp,
no parsing beyond finding the end of the head and an optional
``Content-Length``): several times cheaper per request than ``aiohttp.web``.

* keep-alive by default; a request with ``Connection: close`` is answered
  with ``Connection: close`` and the socket is closed after the answer;
* no pipelining guarantees beyond answering complete requests in order;
* ``GET /__server`` answers a JSON body with the server's CPU seconds and open
  connection count, so a benchmark can tell whether the server was busy;
* idle keep-alive connections are closed after ``--idle-timeout`` seconds
  (default 2), as real servers do: a crawl over 20,000 host names leaves one
  idle connection per host in the client, and both processes are capped at
  the file descriptor limit.

Run on its own (prints ``PORT <n>`` once listening, stops when stdin closes)::

    .venv/bin/python bench/harness/server.py [--port 0] [--idle-timeout 2]

or from a benchmark: ``with ServerProcess() as server: ... server.port``
(which starts this file as a script: it imports nothing but the standard
library).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = [
    "HOST",
    "IDLE_TIMEOUT",
    "ServerProcess",
    "raise_fd_limit",
    "server_info",
]

HOST = "127.0.0.1"
IDLE_TIMEOUT = 2.0  # seconds a keep-alive connection may stay idle
BODY = b"ok"
INFO_PATH = "/__server"
_HEAD_END = b"\r\n\r\n"
_OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
_OK_CLOSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)
_BAD = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return it."""
    if sys.platform == "win32":
        return 0
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


class _Server:
    """The state shared by all connections: open ones and their last activity."""

    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self.open: set[_HttpProtocol] = set()
        self.requests = 0

    def info(self) -> bytes:
        times = os.times()
        return json.dumps(
            {
                "cpu_s": times.user + times.system,
                "open": len(self.open),
                "requests": self.requests,
            }
        ).encode()

    async def sweep_idle(self) -> None:
        # One pass over all connections every half timeout: cheaper than a
        # timer per request, and the timeout only needs to be coarse.
        while True:
            await asyncio.sleep(self.idle_timeout / 2)
            deadline = time.monotonic() - self.idle_timeout
            stale = [p for p in self.open if not p.buf and p.last < deadline]
            for proto in stale:
                proto.close()


class _HttpProtocol(asyncio.Protocol):
    __slots__ = ("buf", "last", "server", "transport")

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open.discard(self)
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        buf = self.buf + data if self.buf else data
        start = 0
        while True:
            end = buf.find(_HEAD_END, start)
            if end < 0:
                break
            head = buf[start:end].lower()
            after = end + len(_HEAD_END)
            length = _content_length(head)
            if length is None:
                transport.write(_BAD)
                transport.close()
                return
            if len(buf) - after < length:
                break  # the body is not all here yet
            start = after + length
            self.server.requests += 1
            if head.startswith(b"get " + INFO_PATH.encode() + b" "):
                info = self.server.info()
                transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(info)).encode() + b"\r\n\r\n" + info
                )
            elif b"\r\nconnection: close" in head:
                transport.write(_OK_CLOSE)
                transport.close()
                return
            else:
                transport.write(_OK)
        self.buf = buf[start:]
        self.last = time.monotonic()

    def eof_received(self) -> bool | None:
        return None  # close our side too


def _content_length(head: bytes) -> int | None:
    """The request's body length from a lower-cased head; ``None`` if invalid."""
    pos = head.find(b"\r\ncontent-length:")
    if pos < 0:
        return 0
    value = head[pos + len(b"\r\ncontent-length:") :].split(b"\r\n", 1)[0].strip()
    return int(value) if value.isdigit() else None


async def serve(port: int, idle_timeout: float, ready: bool = True) -> None:
    """Serve until stdin is closed (the parent went away or asked us to stop)."""
    loop = asyncio.get_running_loop()
    state = _Server(idle_timeout)
    server = await loop.create_server(
        lambda: _HttpProtocol(state), HOST, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()

    def wait_for_stdin_eof() -> None:
        # A thread, not add_reader: works for any stdin on any platform.
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_stdin_eof, daemon=True).start()
    sweeper = asyncio.create_task(state.sweep_idle())
    if ready:
        bound = server.sockets[0].getsockname()[1]
        print(f"PORT {bound}", flush=True)
    try:
        await stop.wait()
    finally:
        sweeper.cancel()
        server.close()
        for proto in list(state.open):
            proto.close()
        await server.wait_closed()


class ServerProcess:
    """Run the loopback server in a child process; ``port`` once started."""

    def __init__(
        self, *, idle_timeout: float = IDLE_TIMEOUT, start_timeout: float = 30.0
    ):
        self.idle_timeout = idle_timeout
        self.start_timeout = start_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self._proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--idle-timeout",
                str(self.idle_timeout),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        line = _readline_within(self._proc.stdout, self.start_timeout)
        if not line.startswith(b"PORT "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"loopback server did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.close()  # the server's signal to stop
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0


def _readline_within(stream: IO[bytes], timeout: float) -> bytes:
    """The first line of ``stream``, or ``b""`` if none came within ``timeout``."""
    result: list[bytes] = []
    reader = threading.Thread(
        target=lambda: result.append(stream.readline()),
        daemon=True,
    )
    reader.start()
    reader.join(timeout)
    return result[0] if result else b""


async def server_info(port: int) -> dict[str, float]:
    """The server's CPU seconds, open connections and requests so far."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(
            f"GET {INFO_PATH} HTTP/1.1\r\nHost: {HOST}\r\n"
            "Connection: keep-alive\r\n\r\n".encode()
        )
        head = await reader.readuntil(_HEAD_END)
        length = _content_length(head.lower())
        body = await reader.readexactly(length or 0)
    finally:
        writer.close()
        await writer.wait_closed()
    data: dict[str, float] = json.loads(body)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A fast HTTP/1.1 keep-alive loopback server for benchmarks."
    )
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=IDLE_TIMEOUT,
        help="close keep-alive connections idle this long (seconds, default 2)",
    )
    args = parser.parse_args(argv)
    raise_fd_limit()
    asyncio.run(serve(args.port, args.idle_timeout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
