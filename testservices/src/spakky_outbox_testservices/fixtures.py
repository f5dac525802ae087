"""Pytest plugin of the workspace's test services: session fixtures for every real service.

Registered as a ``pytest11`` entry point, so the root tests and each package's
tests (run from its own directory) get the same fixtures, resolved once a session.
"""

import os
import re
from collections.abc import Generator, Iterator

import pytest

from spakky_outbox_testservices.redis_held import TIMEOUT_TEXT, describe_held
from spakky_outbox_testservices.redis_servers import redis_cluster
from spakky_outbox_testservices.resolve import (
    SERVICES,
    KafkaBroker,
    MongoServer,
    resolve_kafka,
    resolve_mongodb,
    resolve_service,
)


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
def redis_cluster_url() -> Iterator[str]:
    """``redis://`` URL of one node of a Redis Cluster.

    ``REDIS_CLUSTER_URL`` when set; otherwise a private 3-primary cluster
    started from the local ``redis-server`` for this session.
    """
    if url := os.environ.get("REDIS_CLUSTER_URL"):
        yield url
        return
    with redis_cluster() as nodes:
        yield nodes[0].url


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """``amqp://`` URL of a reachable RabbitMQ."""
    with resolve_service("rabbitmq") as url:
        yield url


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A Kafka broker: Apache Kafka where one is reachable (URL, port 9092, Docker), else a private Tansu."""
    with resolve_kafka() as broker:
        yield broker


@pytest.fixture(scope="session")
def mongodb_server() -> Iterator[MongoServer]:
    """A MongoDB replica set (MONGODB_URL, local, Docker) or the in-process wire server."""
    with resolve_mongodb() as server:
        yield server


@pytest.fixture(scope="session")
def mongodb_url(mongodb_server: MongoServer) -> str:
    """``mongodb://`` URL of the MongoDB the tests use (see ``mongodb_server``)."""
    return mongodb_server.url


_TIMED_OUT = re.compile(re.escape(TIMEOUT_TEXT) + r" (socket|([\w.\-]+):(\d+))")
"""redis-py's read timeouts: the asyncio client names host:port, the sync one says 'socket'."""


def _timed_out_url(text: str) -> str | None:
    """The Redis a failure's text says timed out: its host:port, else (the sync client's) the shared one."""
    found = _TIMED_OUT.search(text)
    if found is None:
        return None
    if found.group(2) is None:
        redis = SERVICES["redis"]
        return os.environ.get(redis.env, redis.default_url)
    return f"redis://{found.group(2)}:{found.group(3)}/0"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A test failing on a Redis read timeout gets a section saying what held that Redis (its SLOWLOG)."""
    report = yield
    if report.failed:
        url = _timed_out_url("\n".join((str(report.longrepr), report.capstdout, report.capstderr)))
        if url is not None:
            report.sections.append((f"Redis {url} after a read timeout", describe_held(url)))
    return report
