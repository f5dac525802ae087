"""Workspace-wide fixtures (every package's tests and tests/): real services, resolved once."""

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.services.redis_servers import redis_cluster
from tests.services.resolve import (
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


_DRILL_LINES: list[str] = []
"""Fault-drill summary lines gathered from test reports (from pytest-xdist workers too)."""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Gather the fault drills' lines (tests/faults) from teardown reports."""
    if report.when == "teardown":
        _DRILL_LINES.extend(str(value) for name, value in report.user_properties if name == "fault_drill")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what each fault drill counted, and why tests were skipped (one line per reason)."""
    if _DRILL_LINES:
        terminalreporter.section("outbox fault injection")
        for line in sorted(_DRILL_LINES):
            terminalreporter.write_line(line)
    reasons = Counter(_skip_reason(report) for report in terminalreporter.stats.get("skipped", []))
    if reasons:
        terminalreporter.section("skip reasons")
        for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0])):
            terminalreporter.write_line(f"{count:5d}  {reason}")


def _skip_reason(report: pytest.TestReport) -> str:
    """The reason a skipped test gave (``Skipped: `` removed)."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")
