"""Drill targets (PostgreSQL, MariaDB, SQLite, Redis, MongoDB), brokers and the fault report.

Network targets put a `FaultProxy` between the relay processes and the
server, so a drill can cut the database away without touching the shared
server. Every target gets its own table or key prefix and removes it after.
Brokers too: a queue of its own on the machine's RabbitMQ or a private
Tansu behind a proxy, a private RabbitMQ node for a restart.
"""

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.testing.waiting import until
from spakky_outbox_testservices.private import free_port, running_private_postgres
from spakky_outbox_testservices.rabbitmq_servers import (
    PrivateRabbitMQ,
    running_private_rabbitmq,
)
from spakky_outbox_testservices.redis_servers import private_redis
from spakky_outbox_testservices.resolve import SERVICES, port_open
from spakky_outbox_testservices.tansu import running_tansu
from sqlalchemy.engine import make_url

from tests.faults.brokers import KafkaSink, ProxiedBroker, RabbitMQSink
from tests.faults.drill import RELAY_SETTINGS, REPORTS, Target
from tests.faults.proxy import FaultProxy, fault_proxy
from tests.faults.targets import WIRE_RELAY_SETTINGS, WIRE_TARGET, sql_target
from tests.faults.targets import mongodb_target as build_mongodb_target
from tests.faults.targets import redis_target as build_redis_target


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder carries the ``faults`` marker (select or skip them with -m)."""
    for item in items:
        if "tests/faults/" in str(item.path):
            item.add_marker(pytest.mark.faults)


_PROPERTY = "fault_drill"
"""Report property carrying a drill's summary line; the root conftest prints them."""


@pytest.fixture(autouse=True)
def _attach_drill_reports(request: pytest.FixtureRequest) -> Iterator[None]:
    """Put the lines of this test's drills on its report, so the session can print them."""
    first = len(REPORTS)
    yield
    for report in REPORTS[first:]:
        request.node.user_properties.append((_PROPERTY, report.line()))


def _outbox_config() -> OutboxConfig:
    return OutboxConfig().model_copy(
        update={
            "claim_lease_seconds": float(RELAY_SETTINGS["SPAKKY_OUTBOX__CLAIM_LEASE_SECONDS"]),
            "claim_timeout_seconds": float(RELAY_SETTINGS["SPAKKY_OUTBOX__CLAIM_TIMEOUT_SECONDS"]),
        }
    )


def _via(proxy: FaultProxy, url: str) -> str:
    parsed = make_url(url)
    return parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


@pytest.fixture
def proxy_for() -> Iterator[dict[str, FaultProxy]]:
    """The fault proxies the target fixture opened, by target name."""
    proxies: dict[str, FaultProxy] = {}
    yield proxies


@asynccontextmanager
async def _proxied_sql_target(
    name: str, server_url: str, driver: str, port: int, proxy_for: dict[str, FaultProxy]
) -> AsyncIterator[Target]:
    """A SQL target on ``server_url`` through ``driver``; the relays go through a fault proxy."""
    direct = make_url(server_url).set(drivername=driver)
    url = direct.render_as_string(hide_password=False)
    with fault_proxy(direct.host or "127.0.0.1", direct.port or port) as proxy:
        proxy_for[name] = proxy
        async with sql_target(name, url, _via(proxy, url), _outbox_config()) as target:
            yield target


@pytest.fixture
async def postgres_target(postgres_url: str, proxy_for: dict[str, FaultProxy]) -> AsyncIterator[Target]:
    """PostgreSQL through asyncpg; the relays go through a fault proxy."""
    async with _proxied_sql_target("postgres", postgres_url, "postgresql+asyncpg", 5432, proxy_for) as target:
        yield target


@pytest.fixture
async def mariadb_target(mariadb_url: str, proxy_for: dict[str, FaultProxy]) -> AsyncIterator[Target]:
    """MariaDB through aiomysql; the relays go through a fault proxy."""
    async with _proxied_sql_target("mariadb", mariadb_url, "mysql+aiomysql", 3306, proxy_for) as target:
        yield target


@pytest.fixture
async def sqlite_target(tmp_path: Path) -> AsyncIterator[Target]:
    """A SQLite file shared by the test and one relay process."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"
    async with sql_target("sqlite", url, url, _outbox_config()) as target:
        yield target


@pytest.fixture
async def redis_target(redis_url: str, proxy_for: dict[str, FaultProxy]) -> AsyncIterator[Target]:
    """Redis under a fresh hash-tagged prefix; the relays go through a fault proxy."""
    host, port = redis_url.split("//", 1)[1].split("/", 1)[0].split(":")
    with fault_proxy(host, int(port)) as proxy:
        proxy_for["redis"] = proxy
        relay_url = f"redis://127.0.0.1:{proxy.port}/0"
        async with build_redis_target("redis", redis_url, relay_url, _outbox_config()) as target:
            yield target


MONGO_WIRE = Path(__file__).with_name("mongo_wire.py")


@asynccontextmanager
async def _wire_server_process() -> AsyncIterator[str]:
    """The mongoeco wire server in a process of its own (``mongo_wire.py``), its URL while it runs."""
    port = free_port()
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    server = subprocess.Popen([sys.executable, str(MONGO_WIRE), str(port)])

    async def up() -> bool:
        return port_open(url) or server.poll() is not None

    try:
        await until(up, bool, timeout=30)
        if server.poll() is not None:
            raise RuntimeError(f"the mongoeco wire server process exited with {server.returncode}")
        yield url
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
async def mongodb_target() -> AsyncIterator[Target]:
    """MongoDB: the replica set of MONGODB_URL when set, else the wire server in its own process."""
    real = os.environ.get(SERVICES["mongodb"].env)
    async with contextlib.nullcontext(real) if real else _wire_server_process() as url:
        # The wire server answers in Python, one request at a time: a claim for
        # three relays takes seconds there, past the drills' 2 s lease.
        settings = {} if real else WIRE_RELAY_SETTINGS
        name = "mongodb" if real else WIRE_TARGET
        async with build_mongodb_target(name, url, _outbox_config(), settings) as target:
            yield target


@pytest.fixture
def restartable() -> dict[str, Callable[[], None]]:
    """How to restart the private server of the target fixture that registered one."""
    return {}


@pytest.fixture
async def private_postgres_target(restartable: dict[str, Callable[[], None]]) -> AsyncIterator[Target]:
    """A private PostgreSQL cluster the drill may restart (``pg_ctl restart -m fast``)."""
    with running_private_postgres() as server:
        restartable["private-postgres"] = server.restart
        url = make_url(server.url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        async with sql_target("private-postgres", url, url, _outbox_config()) as target:
            yield target


@pytest.fixture
async def private_redis_target(restartable: dict[str, Callable[[], None]]) -> AsyncIterator[Target]:
    """A private redis-server with AOF on, which the drill may restart (data kept)."""
    with private_redis("--appendonly", "yes", "--appendfsync", "always") as server:
        restartable["private-redis"] = server.restart
        async with build_redis_target("private-redis", server.url, server.url, _outbox_config()) as target:
            yield target


@pytest.fixture
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """A private RabbitMQ node (never the machine's shared one) the drill may restart."""
    with running_private_rabbitmq() as server:
        yield server


@pytest.fixture
def rabbitmq_behind_proxy(rabbitmq_url: str) -> Iterator[ProxiedBroker]:
    """A fresh durable queue on the machine's RabbitMQ; the relays connect through a fault proxy."""
    direct = urlsplit(rabbitmq_url)
    with fault_proxy(direct.hostname or "127.0.0.1", direct.port or 5672) as proxy:
        credentials = direct.netloc.rpartition("@")[0]
        relay_url = direct._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}").geturl()
        sink = RabbitMQSink(rabbitmq_url, f"FaultDrill{uuid.uuid4().hex[:10]}", relay_url=relay_url)
        sink.create()
        try:
            yield ProxiedBroker(sink, proxy)
        finally:
            sink.delete()


@pytest.fixture
def tansu_behind_proxy() -> Iterator[ProxiedBroker]:
    """A private Tansu advertising a fault proxy's port, so every client (relays, reader) goes through the proxy."""
    port = free_port()
    with fault_proxy("127.0.0.1", port) as proxy, running_tansu(port=port, advertised_port=proxy.port):
        sink = KafkaSink(f"127.0.0.1:{proxy.port}", f"FaultDrill{uuid.uuid4().hex[:10]}")
        sink.create()
        yield ProxiedBroker(sink, proxy)


@pytest.fixture
def control(tmp_path: Path) -> Path:
    """Directory for the relays' sink files, control files and logs."""
    directory = tmp_path / "drill"
    directory.mkdir()
    return directory
