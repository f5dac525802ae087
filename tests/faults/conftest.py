"""Drill targets (PostgreSQL, MariaDB, SQLite, Redis) and the fault report.

Network targets put a `FaultProxy` between the relay processes and the
server, so a drill can cut the database away without touching the shared
server. Every target gets its own table or key prefix and removes it after.
"""

import contextvars
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from spakky.core.application.application_context import ApplicationContext
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.storage import AsyncRedisOutboxStorage
from spakky.plugins.outbox_redis.transaction import AsyncRedisTransaction
from spakky.plugins.outbox_sqlalchemy.config import SqlAlchemyOutboxConfig
from spakky.plugins.outbox_sqlalchemy.schema import (
    create_outbox_table_async,
    drop_outbox_table_async,
)
from spakky.plugins.outbox_sqlalchemy.storage import AsyncSqlAlchemyOutboxStorage
from spakky.plugins.sqlalchemy.common.config import SQLAlchemyConnectionConfig
from spakky.plugins.sqlalchemy.persistency.connection_manager import (
    AsyncConnectionManager,
)
from spakky.plugins.sqlalchemy.persistency.session_manager import AsyncSessionManager
from spakky.plugins.sqlalchemy.persistency.transaction import AsyncTransaction
from sqlalchemy.engine import make_url

from tests.faults.drill import RELAY_SETTINGS, REPORTS, Target
from tests.faults.proxy import FaultProxy, fault_proxy
from tests.services.private import running_private_postgres
from tests.services.redis_servers import private_redis


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


async def _sql_target(name: str, direct_url: str, relay_url: str, env: dict[str, str]) -> AsyncIterator[Target]:
    table = f"fault_{uuid.uuid4().hex[:16]}"
    connection_config = SQLAlchemyConnectionConfig.model_construct(connection_string=direct_url)
    connections = AsyncConnectionManager(connection_config)
    sessions = AsyncSessionManager(connections)
    sessions.set_application_context(ApplicationContext())
    storage = AsyncSqlAlchemyOutboxStorage(
        sessions,
        connections,
        _outbox_config(),
        SqlAlchemyOutboxConfig().model_copy(update={"table_name": table}),
    )
    await create_outbox_table_async(connections.connection, table)

    async def write(messages: list[OutboxMessage]) -> None:
        async def transaction() -> None:
            async with AsyncTransaction(connection_config, sessions):
                for message in messages:
                    await storage.save(message)

        await _in_fresh_context(transaction())

    try:
        yield Target(
            name=name,
            backend="sqlalchemy",
            env={
                **env,
                "SPAKKY_OUTBOX__STORAGE": "sqlalchemy",
                "SPAKKY_SQLALCHEMY__CONNECTION_STRING": relay_url,
                "SPAKKY_OUTBOX_SQLALCHEMY__TABLE_NAME": table,
            },
            storage=storage,
            write=write,
        )
    finally:
        await storage.close_wake_up()
        await drop_outbox_table_async(connections.connection, table)
        await connections.dispose()


async def _in_fresh_context(coroutine: Any) -> None:
    import asyncio

    await asyncio.create_task(coroutine, context=contextvars.Context())


def _via(proxy: FaultProxy, url: str) -> str:
    parsed = make_url(url)
    return parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


@pytest.fixture
def proxy_for() -> Iterator[dict[str, FaultProxy]]:
    """The fault proxies the target fixture opened, by target name."""
    proxies: dict[str, FaultProxy] = {}
    yield proxies


@pytest.fixture
async def postgres_target(postgres_url: str, proxy_for: dict[str, FaultProxy]) -> AsyncIterator[Target]:
    """PostgreSQL through asyncpg; the relays go through a fault proxy."""
    direct = make_url(postgres_url).set(drivername="postgresql+asyncpg")
    url = direct.render_as_string(hide_password=False)
    with fault_proxy(direct.host or "127.0.0.1", direct.port or 5432) as proxy:
        proxy_for["postgres"] = proxy
        async for target in _sql_target("postgres", url, _via(proxy, url), {}):
            yield target


@pytest.fixture
async def mariadb_target(mariadb_url: str, proxy_for: dict[str, FaultProxy]) -> AsyncIterator[Target]:
    """MariaDB through aiomysql; the relays go through a fault proxy."""
    direct = make_url(mariadb_url).set(drivername="mysql+aiomysql")
    url = direct.render_as_string(hide_password=False)
    with fault_proxy(direct.host or "127.0.0.1", direct.port or 3306) as proxy:
        proxy_for["mariadb"] = proxy
        async for target in _sql_target("mariadb", url, _via(proxy, url), {}):
            yield target


@pytest.fixture
async def sqlite_target(tmp_path: Path) -> AsyncIterator[Target]:
    """A SQLite file shared by the test and one relay process."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"
    async for target in _sql_target("sqlite", url, url, {}):
        yield target


async def _redis_target(name: str, direct_url: str, relay_url: str) -> AsyncIterator[Target]:
    prefix = f"{{fault-{uuid.uuid4().hex[:12]}}}"
    config = RedisOutboxConfig().model_copy(update={"url": direct_url, "key_prefix": prefix})
    connections = RedisOutboxConnectionManager(config)
    storage = AsyncRedisOutboxStorage(connections, config, _outbox_config())
    transaction = AsyncRedisTransaction(config, connections)

    async def write(messages: list[OutboxMessage]) -> None:
        async def commit() -> None:
            await transaction.initialize()
            try:
                for message in messages:
                    await storage.save(message)
                await transaction.commit()
            finally:
                await transaction.dispose()

        await _in_fresh_context(commit())

    try:
        yield Target(
            name=name,
            backend="redis",
            env={
                "SPAKKY_OUTBOX__STORAGE": "redis",
                "SPAKKY_OUTBOX_REDIS__URL": relay_url,
                "SPAKKY_OUTBOX_REDIS__KEY_PREFIX": prefix,
            },
            storage=storage,
            write=write,
        )
    finally:
        await connections.aclose()
        client = redis.Redis.from_url(direct_url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=5_000))
            for start in range(0, len(keys), 5_000):
                client.delete(*keys[start : start + 5_000])
        except redis.RedisError:
            pass  # a private server already gone takes its keys with it
        finally:
            client.close()


@pytest.fixture
async def redis_target(redis_url: str, proxy_for: dict[str, FaultProxy]) -> AsyncIterator[Target]:
    """Redis under a fresh hash-tagged prefix; the relays go through a fault proxy."""
    host, port = redis_url.split("//", 1)[1].split("/", 1)[0].split(":")
    with fault_proxy(host, int(port)) as proxy:
        proxy_for["redis"] = proxy
        async for target in _redis_target("redis", redis_url, f"redis://127.0.0.1:{proxy.port}/0"):
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
        async for target in _sql_target("private-postgres", url, url, {}):
            yield target


@pytest.fixture
async def private_redis_target(restartable: dict[str, Callable[[], None]]) -> AsyncIterator[Target]:
    """A private redis-server with AOF on, which the drill may restart (data kept)."""
    with private_redis("--appendonly", "yes", "--appendfsync", "always") as server:
        restartable["private-redis"] = server.restart
        async for target in _redis_target("private-redis", server.url, server.url):
            yield target


@pytest.fixture
def control(tmp_path: Path) -> Path:
    """Directory for the relays' sink files, control files and logs."""
    directory = tmp_path / "drill"
    directory.mkdir()
    return directory
