"""Fixtures for the SQLAlchemy outbox package tests: managers built like the plugin's."""

import asyncio
import contextlib
import contextvars
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
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
    """spakky-sqlalchemy's connection manager, or with ``connect_args`` an app's own Pod whose engine connects with them."""

    def __init__(self, config: SQLAlchemyConnectionConfig, connect_args: dict[str, Any] | None) -> None:
        if connect_args is None:
            super().__init__(config)
            return
        self._connection = create_async_engine(
            config.connection_string, pool_pre_ping=config.pool_pre_ping, connect_args=connect_args
        )


class _SyncConnectArgsManager(ConnectionManager):
    """Synchronous `_ConnectArgsManager`."""

    def __init__(self, config: SQLAlchemyConnectionConfig, connect_args: dict[str, Any] | None) -> None:
        if connect_args is None:
            super().__init__(config)
            return
        self._connection = create_engine(config.connection_string, connect_args=connect_args)


def async_managers(
    url: str,
    *,
    pool_pre_ping: bool = False,
    connect_args: dict[str, Any] | None = None,
    context: ApplicationContext | None = None,
) -> tuple[SQLAlchemyConnectionConfig, AsyncConnectionManager, AsyncSessionManager]:
    """Connection settings, connection and session managers for ``url``, as spakky-sqlalchemy builds them.

    ``connect_args`` go to the engine of an app's own connection manager; the
    session manager scopes its sessions in ``context`` (a fresh one by default).
    """
    connection_config = SQLAlchemyConnectionConfig.model_construct(
        connection_string=url, pool_pre_ping=pool_pre_ping
    )
    connections = _ConnectArgsManager(connection_config, connect_args)
    sessions = AsyncSessionManager(connections)
    sessions.set_application_context(context or ApplicationContext())
    return connection_config, connections, sessions


def sync_managers(
    url: str, *, connect_args: dict[str, Any] | None = None, context: ApplicationContext | None = None
) -> tuple[SQLAlchemyConnectionConfig, ConnectionManager, SessionManager]:
    """The synchronous `async_managers`."""
    connection_config = SQLAlchemyConnectionConfig.model_construct(connection_string=url)
    connections = _SyncConnectArgsManager(connection_config, connect_args)
    sessions = SessionManager(connections)
    sessions.set_application_context(context or ApplicationContext())
    return connection_config, connections, sessions


@dataclass
class _Outbox[Connections, Sessions, Storage, Tx]:
    """An engine's connection and session managers, and storages and transactions on them for one table."""

    connection_config: SQLAlchemyConnectionConfig
    connections: Connections
    sessions: Sessions
    config: SqlAlchemyOutboxConfig
    outbox_config: OutboxConfig
    storage_type: Callable[[Sessions, Connections, OutboxConfig, SqlAlchemyOutboxConfig], Storage]
    transaction_type: Callable[[SQLAlchemyConnectionConfig, Sessions], Tx]
    storages: list[Storage] = field(default_factory=list[Storage])

    def storage(self) -> Storage:
        """A new storage instance (one relay process)."""
        storage = self.storage_type(self.sessions, self.connections, self.outbox_config, self.config)
        self.storages.append(storage)
        return storage

    def transaction(self) -> Tx:
        """A spakky-sqlalchemy transaction, as ``@Transactional()`` opens it."""
        return self.transaction_type(self.connection_config, self.sessions)


@dataclass
class AsyncOutbox(_Outbox[AsyncConnectionManager, AsyncSessionManager, AsyncSqlAlchemyOutboxStorage, AsyncTransaction]):
    """An async engine, its session manager and storage factory for one table."""

    @property
    def url(self) -> str:
        """The engine's URL, password included."""
        return self.connections.connection.url.render_as_string(hide_password=False)

    twins: list["SyncOutbox"] = field(default_factory=list["SyncOutbox"])
    """The sync twins `sync` opened, closed with this outbox."""

    def sync(self, connect_args: dict[str, Any] | None = None) -> "SyncOutbox":
        """A sync twin on the same database and table, through the sync driver `SYNC_DRIVER` pairs with this one's."""
        twin = sync_twin(self, SYNC_DRIVER[self.connections.connection.url.drivername], connect_args)
        self.twins.append(twin)
        return twin

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
class SyncOutbox(_Outbox[ConnectionManager, SessionManager, SqlAlchemyOutboxStorage, Transaction]):
    """The sync twin of `AsyncOutbox` on the same database and table."""

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
    connection_config, connections, sessions = async_managers(
        url, pool_pre_ping=pool_pre_ping, connect_args=connect_args
    )
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
        storage_type=AsyncSqlAlchemyOutboxStorage,
        transaction_type=AsyncTransaction,
    )


def sync_twin(
    outbox: AsyncOutbox, driver: str, connect_args: dict[str, Any] | None = None
) -> SyncOutbox:
    """A sync outbox on the same database and table as ``outbox``."""
    url = make_url(outbox.url).set(drivername=driver).render_as_string(hide_password=False)
    connection_config, connections, sessions = sync_managers(url, connect_args=connect_args)
    return SyncOutbox(
        connection_config=connection_config,
        connections=connections,
        sessions=sessions,
        config=outbox.config,
        outbox_config=outbox.outbox_config,
        storage_type=SqlAlchemyOutboxStorage,
        transaction_type=Transaction,
    )


async def close_outbox(outbox: AsyncOutbox, *, drop: bool = True) -> None:
    """Close the sync twins, stop listeners, drop the table and dispose the engine."""
    for twin in outbox.twins:
        await asyncio.to_thread(twin.close)
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


@contextlib.asynccontextmanager
async def opened_outbox(url: str, **settings: Any) -> AsyncIterator[AsyncOutbox]:
    """An outbox on ``url`` (`open_outbox`'s settings) for the block; closed, its table dropped, afterwards."""
    outbox = await open_outbox(url, **settings)
    try:
        yield outbox
    finally:
        await close_outbox(outbox)


@pytest.fixture
async def sqlite_outbox(tmp_path: object) -> AsyncIterator[AsyncOutbox]:
    """An outbox on a SQLite file; the table is created on first use."""
    async with opened_outbox(f"sqlite+aiosqlite:///{tmp_path}/outbox.db") as outbox:
        yield outbox


@pytest.fixture(params=ASYNC_DRIVERS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The async URL of each supported database (tests pick their own table)."""
    return driver_url(request, request.param, tmp_path)


type OpenOutbox = Callable[..., Awaitable[AsyncOutbox]]
"""Opens an outbox on the test's database with `open_outbox`'s settings."""


@pytest.fixture
async def outboxes(database_url: str) -> AsyncIterator[OpenOutbox]:
    """Open outboxes (chosen settings) on each database; close them, and their sync twins, after."""
    opened: list[AsyncOutbox] = []

    async def open_one(**settings: Any) -> AsyncOutbox:
        outbox = await open_outbox(database_url, **settings)
        opened.append(outbox)
        return outbox

    yield open_one
    for outbox in opened:
        await close_outbox(outbox)


@pytest.fixture(params=ASYNC_DRIVERS)
async def any_outbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncOutbox]:
    """An outbox (lease 1 s, claim timeout 3 s) on every supported database."""
    url = driver_url(request, request.param, tmp_path)
    async with opened_outbox(url, claim_timeout_seconds=3.0, claim_lease_seconds=1.0) as outbox:
        yield outbox


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
