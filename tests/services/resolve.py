"""Resolve a test service: env URL, local default, testcontainers, or a clear skip/fail.

Order: the service's environment variable when set; otherwise the local
default when its port answers; otherwise a testcontainers container when a
Docker engine runs. With ``SPAKKY_OUTBOX_REQUIRE_SERVICES=1`` (what ``.ci/run``
sets) a required service that cannot be had fails the run instead of skipping.
MongoDB, MySQL 8 and Kafka are not required then: no such server exists on the
project's machines (MariaDB stands for the MySQL family there). A comma-separated
list of names instead (``postgres,kafka``, as GitHub CI sets) requires exactly
those services.
"""

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

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
    from testcontainers.mongodb import MongoDbContainer

    with MongoDbContainer("mongo:7", command="--replSet rs0") as m:
        yield m.get_connection_url()


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
        "kafka", "KAFKA_URL", "kafka://127.0.0.1:9092", False, lambda: _kafka_container
    ),
}


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
