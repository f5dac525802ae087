"""Fixtures for the SQLAlchemy outbox package tests: managers built like the plugin's."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from spakky.core.application.application_context import ApplicationContext
from spakky.outbox.common.config import OutboxConfig
from spakky.plugins.outbox_sqlalchemy.config import SqlAlchemyOutboxConfig
from spakky.plugins.outbox_sqlalchemy.storage import AsyncSqlAlchemyOutboxStorage
from spakky.plugins.sqlalchemy.common.config import SQLAlchemyConnectionConfig
from spakky.plugins.sqlalchemy.persistency.connection_manager import (
    AsyncConnectionManager,
)
from spakky.plugins.sqlalchemy.persistency.session_manager import AsyncSessionManager
from spakky.plugins.sqlalchemy.persistency.transaction import AsyncTransaction


@dataclass
class AsyncOutbox:
    """An async engine, its session manager and storage factory for one table."""

    connection_config: SQLAlchemyConnectionConfig
    connections: AsyncConnectionManager
    sessions: AsyncSessionManager
    config: SqlAlchemyOutboxConfig
    outbox_config: OutboxConfig
    storages: list[AsyncSqlAlchemyOutboxStorage]

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


async def open_outbox(url: str) -> AsyncOutbox:
    """Build the managers for ``url`` and a fresh table name."""
    connection_config = SQLAlchemyConnectionConfig.model_construct(
        connection_string=url
    )
    connections = AsyncConnectionManager(connection_config)
    sessions = AsyncSessionManager(connections)
    sessions.set_application_context(ApplicationContext())
    return AsyncOutbox(
        connection_config=connection_config,
        connections=connections,
        sessions=sessions,
        config=SqlAlchemyOutboxConfig().model_copy(
            update={"table_name": f"pkg_{uuid.uuid4().hex[:16]}"}
        ),
        outbox_config=OutboxConfig().model_copy(update={"claim_timeout_seconds": 1.0}),
        storages=[],
    )


async def close_outbox(outbox: AsyncOutbox, *, drop: bool = True) -> None:
    """Stop listeners, drop the table and dispose the engine."""
    from spakky.plugins.outbox_sqlalchemy.schema import drop_outbox_table_async

    for storage in outbox.storages:
        await storage.close_wake_up()
    if drop:
        await drop_outbox_table_async(
            outbox.connections.connection, outbox.config.table_name
        )
    await outbox.connections.dispose()


@pytest.fixture
async def sqlite_outbox(tmp_path: object) -> AsyncIterator[AsyncOutbox]:
    """An outbox on a SQLite file; the table is created on first use."""
    outbox = await open_outbox(f"sqlite+aiosqlite:///{tmp_path}/outbox.db")
    yield outbox
    await close_outbox(outbox)
