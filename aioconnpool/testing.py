"""Helpers for testing code that uses aioconnpool against loopback servers."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = [
    "LoopbackResolver",
    "RedisClusterServers",
    "RedisServer",
    "RedisServerError",
    "free_port",
]


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

    def __init__(self, directory: Path, *, extra_args: Sequence[str] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError(f"redis-server not found on PATH: {INSTALL_HINT}")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.extra_args = list(extra_args)
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
                *self.extra_args,
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


class RedisClusterServers:
    """A real Redis Cluster on loopback, for fleet tests: ``primaries``
    ``redis-server`` nodes in cluster mode, each with ``replicas`` replicas,
    joined with ``redis-cli --cluster create``; persistence off, one
    directory per node. ``url`` names the first node (a cluster client finds
    the others from it); ``nodes`` are :class:`RedisServer` objects, so a
    test can ``kill()`` or ``pause()`` one. ``node_timeout`` (ms) is how long
    a silent primary takes to be replaced by its replica. Raises
    :class:`RedisServerError` when ``redis-server`` or ``redis-cli`` is
    missing or the cluster does not form.
    """

    def __init__(
        self,
        directory: Path,
        *,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout: int = 1000,
    ) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisServerError(f"redis-cli not found on PATH: {INSTALL_HINT}")
        self.cli = cli
        self.nodes: list[RedisServer] = []
        try:
            for i in range(primaries * (1 + replicas)):
                node_dir = directory / f"node{i}"
                node_dir.mkdir()
                self.nodes.append(
                    RedisServer(
                        node_dir,
                        extra_args=[
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            "nodes.conf",
                            "--cluster-node-timeout",
                            str(node_timeout),
                            # The bus port defaults to port + 10000, which
                            # may be taken or out of range: pick one too.
                            "--cluster-port",
                            str(free_port()),
                            # A replica syncs at once, and may take over
                            # however long its primary has been silent.
                            "--repl-diskless-sync-delay",
                            "0",
                            "--cluster-replica-validity-factor",
                            "0",
                        ],
                    )
                )
            created = subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    "--cluster-replicas",
                    str(replicas),
                    "--cluster-yes",
                ],
                capture_output=True,
                check=False,
                timeout=60,
            )
            if created.returncode != 0:
                raise RedisServerError(
                    "redis-cli --cluster create failed: "
                    f"{created.stdout.decode(errors='replace')[-500:]}"
                    f"{created.stderr.decode(errors='replace')[-500:]}"
                )
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.url = self.nodes[0].url

    def command(self, node: RedisServer, *args: str) -> str:
        """Run one Redis command on ``node`` with ``redis-cli``; its output."""
        done = subprocess.run(
            [self.cli, "-h", "127.0.0.1", "-p", str(node.port), *args],
            capture_output=True,
            check=False,
            timeout=10,
        )
        return done.stdout.decode(errors="replace")

    def live_nodes(self) -> list[RedisServer]:
        """The nodes whose process runs."""
        return [
            n for n in self.nodes if n.process is not None and n.process.poll() is None
        ]

    def _served_slots(self, asked: RedisServer) -> dict[int, list[tuple[int, int]]]:
        """Port -> slot ranges of every primary that ``asked`` sees serving
        slots, whose process runs and that nobody suspects to have failed."""
        live = {n.port for n in self.live_nodes()}
        spans: dict[int, list[tuple[int, int]]] = {}
        for line in self.command(asked, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) < 9 or "master" not in fields[2] or "fail" in fields[2]:
                continue
            port = int(fields[1].split("@", 1)[0].rsplit(":", 1)[1])
            if port not in live:
                continue
            for span in fields[8:]:
                if not span.startswith("["):  # "[slot->-node]": migrating
                    low, _, high = span.partition("-")
                    spans.setdefault(port, []).append((int(low), int(high or low)))
        return spans

    def primary_of(self, key: str) -> RedisServer:
        """The running node that is the primary of ``key``'s slot now."""
        for asked in self.live_nodes():
            slot = int(self.command(asked, "CLUSTER", "KEYSLOT", key).strip())
            for port, spans in self._served_slots(asked).items():
                if any(low <= slot <= high for low, high in spans):
                    return next(n for n in self.nodes if n.port == port)
        raise RedisServerError(f"no running primary serves the slot of {key!r}")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every running node says ``cluster_state:ok`` and sees all
        16384 slots served by running primaries (after a primary was
        killed: until its replica has taken over), and every replica is in
        sync with its primary."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(
                "cluster_state:ok" in self.command(n, "CLUSTER", "INFO")
                and "master_link_status:down"
                not in self.command(n, "INFO", "replication")
                and sum(
                    high - low + 1
                    for spans in self._served_slots(n).values()
                    for low, high in spans
                )
                == 16384
                for n in self.live_nodes()
            ):
                return
            time.sleep(0.1)
        raise RedisServerError(f"the Redis Cluster was not healthy within {timeout} s")

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()
