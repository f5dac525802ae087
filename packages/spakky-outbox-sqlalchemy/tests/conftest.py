"""Fixtures for the SQLAlchemy outbox package tests: managers built like the plugin's."""

import asyncio
import contextvars
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from spakky.core.application.application_context import ApplicationContext
from spakky.outbox.common.config import DEFAULT_BATCH_MAX_BYTES, OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.plugins.outbox_sqlalchemy.config import SqlAlchemyOutboxConfig
from spakky.plugins.outbox_sqlalchemy.schema import (
    drop_outbox_table_async,
    outbox_table,
)
from spakky.plugins.outbox_sqlalchemy.storage import (
    AsyncSqlAlchemyOutboxStorage,
    SqlAlchemyOutboxStorage,
)
from spakky.plugins.sqlalchemy.common.config import SQLAlchemyConnectionConfig
from spakky.plugins.sqlalchemy.persistency.connection_manager import (
    AsyncConnectionManager,
    ConnectionManager,
)
from spakky.plugins.sqlalchemy.persistency.session_manager import (
    AsyncSessionManager,
    SessionManager,
)
from spakky.plugins.sqlalchemy.persistency.transaction import (
    AsyncTransaction,
    Transaction,
)
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

ASYNC_DRIVERS = ("postgresql+asyncpg", "postgresql+psycopg", "mysql+aiomysql", "sqlite+aiosqlite")
"""Every async driver the storage supports and this machine runs."""
SYNC_DRIVER = {
    "postgresql+asyncpg": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "mysql+aiomysql": "mysql+pymysql",
    "sqlite+aiosqlite": "sqlite+pysqlite",
}
"""The sync driver serving the same database as each async one."""


def message(key: str | None = None, headers: dict[str, str] | None = None) -> OutboxMessage:
    """A fresh message as the outbox bus builds it."""
    return OutboxMessage(
        id=uuid.uuid4(),
        event_name="OrderPlaced",
        payload=b"{}",
        headers=headers or {},
        created_at=datetime.now(UTC),
        partition_key=key,
    )


class _ConnectArgsManager(AsyncConnectionManager):
    """An app's own connection manager Pod: its engine connects with ``connect_args``."""

    def __init__(self, config: SQLAlchemyConnectionConfig, connect_args: dict[str, Any]) -> None:
        self._connection = create_async_engine(
            config.connection_string, pool_pre_ping=config.pool_pre_ping, connect_args=connect_args
        )


class _SyncConnectArgsManager(ConnectionManager):
    """Synchronous `_ConnectArgsManager`."""

    def __init__(self, config: SQLAlchemyConnectionConfig, connect_args: dict[str, Any]) -> None:
        self._connection = create_engine(config.connection_string, connect_args=connect_args)


def _managers(
    url: str, pool_pre_ping: bool, connect_args: dict[str, Any] | None
) -> tuple[SQLAlchemyConnectionConfig, AsyncConnectionManager, AsyncSessionManager]:
    connection_config = SQLAlchemyConnectionConfig.model_construct(
        connection_string=url, pool_pre_ping=pool_pre_ping
    )
    connections = (
        AsyncConnectionManager(connection_config)
        if connect_args is None
        else _ConnectArgsManager(connection_config, connect_args)
    )
    sessions = AsyncSessionManager(connections)
    sessions.set_application_context(ApplicationContext())
    return connection_config, connections, sessions


@dataclass
class AsyncOutbox:
    """An async engine, its session manager and storage factory for one table."""

    connection_config: SQLAlchemyConnectionConfig
    connections: AsyncConnectionManager
    sessions: AsyncSessionManager
    config: SqlAlchemyOutboxConfig
    outbox_config: OutboxConfig
    storages: list[AsyncSqlAlchemyOutboxStorage]

    @property
    def url(self) -> str:
        """The engine's URL, password included."""
        return self.connections.connection.url.render_as_string(hide_password=False)

    def storage(self) -> AsyncSqlAlchemyOutboxStorage:
        """A new storage instance (one relay process)."""
        storage = AsyncSqlAlchemyOutboxStorage(
            self.sessions, self.connections, self.outbox_config, self.config
        )
        self.storages.append(storage)
        return storage

    def transaction(self) -> AsyncTransaction:
        """A spakky-sqlalchemy transaction, as ``@Transactional()`` opens it."""
        return AsyncTransaction(self.connection_config, self.sessions)

    async def write(self, messages: Sequence[OutboxMessage]) -> None:
        """Save ``messages`` in one business transaction of their own."""

        async def transaction() -> None:
            storage = self.storage()
            async with self.transaction():
                for sent in messages:
                    await storage.save(sent)

        # A fresh context: its own scoped session, as a separate request has.
        await asyncio.create_task(transaction(), context=contextvars.Context())

    async def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        """Backdoor: run SQL on the engine in a transaction of its own."""
        async with self.connections.connection.begin() as connection:
            await connection.execute(text(sql), params or {})

    async def rows(self) -> dict[uuid.UUID, Any]:
        """Backdoor: every stored row by id, typed (``lease_until`` included)."""
        table = outbox_table(self.config.table_name)
        async with self.connections.connection.connect() as connection:
            columns = [c for c in table.c if c.name != "headers"]  # may be damaged
            result = await connection.execute(select(*columns).order_by(table.c.seq))
            return {row.id: row for row in result.mappings()}



@dataclass
class SyncOutbox:
    """The sync twin of `AsyncOutbox` on the same database and table."""

    connection_config: SQLAlchemyConnectionConfig
    connections: ConnectionManager
    sessions: SessionManager
    config: SqlAlchemyOutboxConfig
    outbox_config: OutboxConfig
    storages: list[SqlAlchemyOutboxStorage]

    def storage(self) -> SqlAlchemyOutboxStorage:
        """A new sync storage instance (one relay process)."""
        storage = SqlAlchemyOutboxStorage(
            self.sessions, self.connections, self.outbox_config, self.config
        )
        self.storages.append(storage)
        return storage

    def transaction(self) -> Transaction:
        """A spakky-sqlalchemy sync transaction."""
        return Transaction(self.connection_config, self.sessions)

    def close(self) -> None:
        """Stop listeners and dispose the engine."""
        for storage in self.storages:
            storage.close_wake_up()
        self.connections.dispose()


async def open_outbox(
    url: str,
    *,
    table_name: str | None = None,
    claim_timeout_seconds: float = 1.0,
    claim_lease_seconds: float = 1.0,
    batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES,
    pool_pre_ping: bool = False,
    connect_args: dict[str, Any] | None = None,
    **settings: Any,
) -> AsyncOutbox:
    """Build the managers for ``url`` and a table (fresh name unless given).

    ``settings`` override `SqlAlchemyOutboxConfig` fields; ``pool_pre_ping``
    is spakky-sqlalchemy's engine setting; ``connect_args`` go to the engine of
    an app's own connection manager.
    """
    connection_config, connections, sessions = _managers(url, pool_pre_ping, connect_args)
    name = table_name or f"pkg_{uuid.uuid4().hex[:16]}"
    return AsyncOutbox(
        connection_config=connection_config,
        connections=connections,
        sessions=sessions,
        config=SqlAlchemyOutboxConfig().model_copy(update={"table_name": name, **settings}),
        outbox_config=OutboxConfig().model_copy(
            update={
                "claim_timeout_seconds": claim_timeout_seconds,
                "claim_lease_seconds": claim_lease_seconds,
                "batch_max_bytes": batch_max_bytes,
            }
        ),
        storages=[],
    )


def sync_twin(
    outbox: AsyncOutbox, driver: str, connect_args: dict[str, Any] | None = None
) -> SyncOutbox:
    """A sync outbox on the same database and table as ``outbox``."""
    url = make_url(outbox.url).set(drivername=driver).render_as_string(hide_password=False)
    connection_config = SQLAlchemyConnectionConfig.model_construct(connection_string=url)
    connections = (
        ConnectionManager(connection_config)
        if connect_args is None
        else _SyncConnectArgsManager(connection_config, connect_args)
    )
    sessions = SessionManager(connections)
    sessions.set_application_context(ApplicationContext())
    return SyncOutbox(
        connection_config=connection_config,
        connections=connections,
        sessions=sessions,
        config=outbox.config,
        outbox_config=outbox.outbox_config,
        storages=[],
    )


async def close_outbox(outbox: AsyncOutbox, *, drop: bool = True) -> None:
    """Stop listeners, drop the table and dispose the engine."""
    for storage in outbox.storages:
        await storage.close_wake_up()
    if drop:
        await drop_outbox_table_async(
            outbox.connections.connection, outbox.config.table_name
        )
    await outbox.connections.dispose()


def driver_url(request: pytest.FixtureRequest, driver: str, tmp_path: Path) -> str:
    """URL of the shared test database for ``driver`` (a fresh file for SQLite)."""
    if driver.startswith("sqlite"):
        return f"{driver}:///{tmp_path}/outbox.db"
    service = "postgres" if driver.startswith("postgresql") else "mariadb"
    base: str = request.getfixturevalue(f"{service}_url")
    return make_url(base).set(drivername=driver).render_as_string(hide_password=False)


@pytest.fixture
async def sqlite_outbox(tmp_path: object) -> AsyncIterator[AsyncOutbox]:
    """An outbox on a SQLite file; the table is created on first use."""
    outbox = await open_outbox(f"sqlite+aiosqlite:///{tmp_path}/outbox.db")
    yield outbox
    await close_outbox(outbox)


@pytest.fixture(params=ASYNC_DRIVERS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The async URL of each supported database (tests pick their own table)."""
    return driver_url(request, request.param, tmp_path)


@pytest.fixture(params=ASYNC_DRIVERS)
async def any_outbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncOutbox]:
    """An outbox (lease 1 s, claim timeout 3 s) on every supported database."""
    outbox = await open_outbox(
        driver_url(request, request.param, tmp_path),
        claim_timeout_seconds=3.0,
        claim_lease_seconds=1.0,
    )
    yield outbox
    await close_outbox(outbox)


@pytest.fixture(params=ASYNC_DRIVERS)
def scratch_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A whole database of its own (async URL), for fixed table names like ``order``.

    Shared servers get a uniquely named database, dropped afterwards, so
    parallel runs never meet on a fixed table name.
    """
    driver: str = request.param
    if driver.startswith("sqlite"):
        yield driver_url(request, driver, tmp_path)
        return
    shared = make_url(driver_url(request, driver, tmp_path))
    name = f"spakky_{uuid.uuid4().hex[:12]}"
    admin_driver = "postgresql+psycopg" if driver.startswith("postgresql") else "mysql+pymysql"
    admin = create_engine(shared.set(drivername=admin_driver), isolation_level="AUTOCOMMIT")
    quote = '"' if driver.startswith("postgresql") else "`"
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {quote}{name}{quote}"))
    try:
        yield shared.set(database=name).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if driver.startswith("postgresql") else ""
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {quote}{name}{quote}{force}"))
        admin.dispose()
