"""Workspace-wide fixtures (every package's tests and tests/): real services, resolved once."""

from collections.abc import Iterator

import pytest

from tests.services.resolve import MongoServer, resolve_mongodb, resolve_service


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Plain ``postgresql://`` URL of a reachable PostgreSQL (database ``test``)."""
    with resolve_service("postgres") as url:
        yield url


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """Plain ``mysql://`` URL of a reachable MariaDB/MySQL (database ``test``)."""
    with resolve_service("mariadb") as url:
        yield url


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """Plain ``mysql://`` URL of a reachable MySQL 8 (skipped when none)."""
    with resolve_service("mysql") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://`` URL of a reachable Redis."""
    with resolve_service("redis") as url:
        yield url


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """``amqp://`` URL of a reachable RabbitMQ."""
    with resolve_service("rabbitmq") as url:
        yield url


@pytest.fixture(scope="session")
def mongodb_server() -> Iterator[MongoServer]:
    """A MongoDB replica set (MONGODB_URL, local, Docker) or the in-process wire server."""
    with resolve_mongodb() as server:
        yield server


@pytest.fixture(scope="session")
def mongodb_url(mongodb_server: MongoServer) -> str:
    """``mongodb://`` URL of the MongoDB the tests use (see ``mongodb_server``)."""
    return mongodb_server.url
