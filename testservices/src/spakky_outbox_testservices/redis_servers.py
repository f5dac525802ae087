"""Private ``redis-server`` processes on free ports in temp dirs: one server, or a cluster.

For tests that restart a server, read its SLOWLOG or command counters, load
it slowly, or need a Redis Cluster. The shared server of the machine is never
touched. Without a ``redis-server`` binary the tests skip (they fail under
``SPAKKY_OUTBOX_REQUIRE_SERVICES=1``, as for the shared services).
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from spakky_outbox_testservices.resolve import REQUIRE_ENV

_START_TIMEOUT_SECONDS = 20.0
_CLUSTER_BUS_OFFSET = 10_000
"""Redis Cluster nodes also listen on their port + 10000 (the cluster bus)."""


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed: private Redis servers cannot be started"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """A port nothing listens on (and its cluster bus port, with ``with_bus``)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if not with_bus or (port + _CLUSTER_BUS_OFFSET < 65536 and _port_free(port + _CLUSTER_BUS_OFFSET)):
            return port


@dataclass
class RedisServer:
    """One ``redis-server`` process owned by a test, in its own directory."""

    directory: Path
    options: Sequence[str] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://`` URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A new synchronous client of this server (close it after use)."""
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self, *, wait: bool = True, extra: Sequence[str] = ()) -> None:
        """Start the process; with ``wait``, return once it serves reads (data loaded)."""
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115 - kept open by the child
        self.process = subprocess.Popen(
            [
                _binary("redis-server"),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--daemonize", "no",
                "--protected-mode", "no",
                *self.options,
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until the server serves reads (its data loaded), or fail with its log."""
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        with self.client() as client:
            while True:
                try:
                    # PING is answered while loading; a read is not
                    client.exists("spakky:ready-probe")
                    return
                except redis.ResponseError:
                    return  # serving, e.g. CLUSTERDOWN from a cluster node without slots yet
                except redis.RedisError:
                    pass
                if self.process is not None and self.process.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        raise RuntimeError(
            f"redis-server on {self.port} did not start:\n"
            + (self.directory / "server.log").read_text(errors="replace")[-2000:]
        )

    def stop(self) -> None:
        """Stop the process gracefully (SIGTERM: Redis flushes its AOF) and wait."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(_START_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, *, wait: bool = True, extra: Sequence[str] = ()) -> None:
        """Stop and start again on the same port and directory (same data)."""
        self.stop()
        self.start(wait=wait, extra=extra)


@contextmanager
def private_redis(*options: str) -> Iterator[RedisServer]:
    """A fresh ``redis-server`` with ``options``, stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="spakky-redis-") as directory:
        server = RedisServer(Path(directory), options)
        try:
            server.start()
            yield server
        finally:
            server.stop()


@contextmanager
def redis_cluster(masters: int = 3) -> Iterator[list[RedisServer]]:
    """A Redis Cluster of ``masters`` primaries and no replicas, from the local binaries."""
    with tempfile.TemporaryDirectory(prefix="spakky-redis-cluster-") as directory, ExitStack() as stack:
        nodes: list[RedisServer] = []
        for index in range(masters):
            node_dir = Path(directory) / f"node{index}"
            node_dir.mkdir()
            node = RedisServer(
                node_dir,
                ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "5000", "--appendonly", "no"),
                port=free_port(with_bus=True),
            )
            stack.callback(node.stop)
            node.start()
            nodes.append(node)
        subprocess.run(
            [
                _binary("redis-cli"), "--cluster", "create",
                *(f"127.0.0.1:{node.port}" for node in nodes),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=_START_TIMEOUT_SECONDS,
        )
        _wait_cluster_ok(nodes)
        yield nodes


def _wait_cluster_ok(nodes: Sequence[RedisServer]) -> None:
    """Wait until every node reports the cluster up with all slots served."""
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while True:
        states: list[str] = []
        for node in nodes:
            with node.client() as client:
                info = client.execute_command("CLUSTER INFO")
                states.append(str(info.get("cluster_state") if isinstance(info, dict) else info))
        if all(state == "ok" for state in states):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis Cluster did not come up: {states}")
        time.sleep(0.05)
