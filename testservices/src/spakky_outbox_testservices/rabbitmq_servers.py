"""A private RabbitMQ node for the broker fault drills: own node name, ports, data and logs; restartable.

The machine's RabbitMQ (``rabbit@localhost`` on 5672, its config pinning that
port) must never be stopped; a drill that restarts the broker starts one of
these instead. The node runs the installed ``rabbitmq-server`` as the
``rabbitmq`` user (it shares that user's Erlang cookie and the machine's epmd)
with a config file of its own (``listeners.tcp.default`` on a free loopback
port), its own ``RABBITMQ_NODENAME``, distribution port, Mnesia and log
directories in a temporary directory, and an empty enabled-plugins file. It
boots in about 5 s here and stops in about 3 s on SIGTERM; durable queues and
persistent messages survive `PrivateRabbitMQ.restart`.
"""

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from spakky_outbox_testservices.private import START_TIMEOUT, free_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
"""The server script itself (``/usr/sbin/rabbitmq-server`` is a wrapper that logs to /var/log)."""
USER = "rabbitmq"
STOP_TIMEOUT = 60.0
"""Seconds a node may take to stop on SIGTERM before it is killed (about 3 s here)."""


def _runs_as(user: str, argv: list[str]) -> list[str]:
    """Run ``argv`` as ``user`` when we are root (a node's files belong to its user)."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", user, "--", *argv]


@dataclass
class PrivateRabbitMQ:
    """One RabbitMQ node of our own on ``127.0.0.1:port`` (guest/guest, vhost ``/``)."""

    directory: Path
    port: int
    dist_port: int
    node: str = field(default_factory=lambda: f"drill{uuid.uuid4().hex[:8]}@localhost")
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``amqp://`` URL of the node."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def init(self) -> None:
        """Write the node's config and empty plugins file, owned by the ``rabbitmq`` user."""
        (self.directory / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        (self.directory / "enabled_plugins").write_text("")
        if os.geteuid() == 0:
            entry = pwd.getpwnam(USER)
            for path in (self.directory, self.directory / "rabbitmq.conf", self.directory / "enabled_plugins"):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _env(self) -> dict[str, str]:
        home = pwd.getpwnam(USER).pw_dir if os.geteuid() == 0 else os.environ.get("HOME", "")
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.directory / "node.pid"),
        }

    def start(self) -> None:
        """Start the node and wait until it accepts AMQP connections."""
        with (self.directory / "server.out").open("ab") as out:
            self.process = subprocess.Popen(
                _runs_as(USER, ["env", *(f"{k}={v}" for k, v in self._env().items()), str(SERVER)]),
                cwd=self.directory,
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None:
                log = (self.directory / "server.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"rabbitmq-server exited with {self.process.returncode}: {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"RabbitMQ node {self.node} did not accept connections within {START_TIMEOUT} s")
            time.sleep(0.1)

    def _answers(self) -> bool:
        """Whether an AMQP client can open a connection (the listener opens when the boot is done)."""
        import pika

        parameters = pika.URLParameters(self.url)
        parameters.socket_timeout = 2
        parameters.connection_attempts = 1
        try:
            pika.BlockingConnection(parameters).close()
        except pika.exceptions.AMQPError:
            return False
        return True

    def stop(self) -> None:
        """Stop the node (SIGTERM to the Erlang VM, as a service manager does) and wait for it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        pid_file = self.directory / "node.pid"
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def restart(self) -> None:
        """Stop and start on the same port and data: every connection is closed, queued messages kept."""
        self.stop()
        self.start()


@contextmanager
def running_private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """Start a private RabbitMQ node; stop it and delete its files on exit (skip without the server)."""
    if not SERVER.is_file():
        pytest.skip(f"no {SERVER}: RabbitMQ's server is not installed")
    directory = Path(tempfile.mkdtemp(prefix="spakky-rabbitmq-"))
    server = PrivateRabbitMQ(directory, free_port(), free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
