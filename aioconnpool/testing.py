"""Helpers for testing code that uses aioconnpool against loopback servers."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = ["LoopbackResolver", "RedisServer", "RedisServerError", "free_port"]


class LoopbackResolver(AbstractResolver):
    """Resolves host names to 127.0.0.1, so one local server can play many hosts.

    Pass it as ``resolver=`` to ``PoolConnector`` (or any ``TCPConnector``).
    With ``suffix`` set (e.g. ``".test"``), other names fail to resolve, so a
    typo can never send traffic off the machine. ``delay`` makes every lookup
    take that long (to hold a request in the connecting state); ``calls``
    counts lookups.
    """

    def __init__(self, *, suffix: str | None = None, delay: float = 0.0) -> None:
        self.suffix = suffix
        self.delay = delay
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """127.0.0.1 for ``host`` (after ``delay``); ``OSError`` for a name
        outside ``suffix``."""
        self.calls += 1
        if self.suffix is not None and not host.endswith(self.suffix):
            raise OSError(
                f"LoopbackResolver only resolves *{self.suffix} names, not {host!r}"
            )
        if self.delay:
            await asyncio.sleep(self.delay)
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        """Nothing to release."""


INSTALL_HINT = (
    "RedisServer runs a real redis-server: install it (Debian: apt-get install "
    "-y redis-server; the project's .ci/run does it on CI)"
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServerError(RuntimeError):
    """``redis-server`` is missing or would not start; the message says what
    to install."""


class RedisServer:
    """A real ``redis-server`` on a free loopback port, for fleet tests.

    Started at once in ``directory`` (its log goes there) with persistence
    off; ``url`` is its address. ``kill()``, ``restart()`` (empty, same
    port), ``pause()`` / ``resume()`` (SIGSTOP / SIGCONT) play the failures a
    fleet must survive; ``stop()`` ends it. Raises :class:`RedisServerError`
    when ``redis-server`` is not installed (Debian: ``apt-get install
    redis-server``) or does not start.
    """

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError(f"redis-server not found on PATH: {INSTALL_HINT}")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (again) on the same port, empty."""
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--protected-mode",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited at start (code {self.process.returncode}); "
                    f"see {self.directory / 'redis.log'}: {INSTALL_HINT}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(
            f"redis-server did not answer PING within 10 s: {INSTALL_HINT}"
        )

    def kill(self) -> None:
        """SIGKILL: everything Redis held is gone."""
        if self.process is not None and self.process.poll() is None:
            if self.paused:
                self.resume()
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        """Kill, then start empty on the same port."""
        self.kill()
        self.start()

    paused = False

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.paused:
            self.resume()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
