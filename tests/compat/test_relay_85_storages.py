"""Our relay over spakky-sqlalchemy 8.5's own outbox storage, on PostgreSQL: as 8.5.0 relays (issue 16.1).

That storage has none of our capabilities (no release, no retry scheduling):
after a refused message is abandoned, 8.5.0 publishes the next message of the
same partition key in the same cycle, whether the refusal came at ``send()``
or at ``flush()``; the next message must not wait for the claim timeout.
"""

import asyncio
import contextvars
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from spakky.core.application.application_context import ApplicationContext
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.relay.relay import AsyncOutboxRelayBackgroundService
from spakky.outbox.testing.transport import AsyncRecordingEventTransport
from spakky.plugins.sqlalchemy.common.config import SQLAlchemyConnectionConfig
from spakky.plugins.sqlalchemy.outbox.storage import AsyncSqlAlchemyOutboxStorage
from spakky.plugins.sqlalchemy.outbox.table import OutboxMessageTable
from spakky.plugins.sqlalchemy.persistency.connection_manager import (
    AsyncConnectionManager,
)
from spakky.plugins.sqlalchemy.persistency.session_manager import AsyncSessionManager
from spakky.plugins.sqlalchemy.persistency.transaction import AsyncTransaction
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL database of its own: the 8.5 table name is fixed, parallel runs must not meet."""
    name = f"spakky85_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(postgres_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_url).set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


class Outbox85:
    """spakky-sqlalchemy 8.5's storage on its own ``spakky_event_outbox`` table."""

    def __init__(self, url: str, config: OutboxConfig) -> None:
        self.connection_config = SQLAlchemyConnectionConfig.model_construct(connection_string=url)
        self.connections = AsyncConnectionManager(self.connection_config)
        self.sessions = AsyncSessionManager(self.connections)
        self.sessions.set_application_context(ApplicationContext())
        self.storage = AsyncSqlAlchemyOutboxStorage(self.sessions, self.connections, config)

    async def write(self, messages: list[OutboxMessage]) -> None:
        """Save ``messages`` in one business transaction, in a context of its own (its own session)."""

        async def transaction() -> None:
            async with AsyncTransaction(self.connection_config, self.sessions):
                for message in messages:
                    await self.storage.save(message)

        await asyncio.create_task(transaction(), context=contextvars.Context())

    async def rows(self) -> dict[str, Any]:
        """Backdoor: every row by event name."""
        async with self.connections.connection.connect() as connection:
            result = await connection.execute(select(OutboxMessageTable.__table__))
            return {row.event_name: row for row in result}


@pytest.fixture
async def outbox85(database: str) -> AsyncIterator[Outbox85]:
    """The 8.5 storage on a fresh database, its table created from 8.5's own metadata."""
    config = OutboxConfig().model_copy(update={"max_retry_count": 1})
    outbox = Outbox85(database, config)
    async with outbox.connections.connection.begin() as connection:
        await connection.run_sync(OutboxMessageTable.metadata.create_all, tables=[OutboxMessageTable.__table__])
    yield outbox
    await outbox.connections.dispose()


def order(name: str, at: datetime) -> OutboxMessage:
    """An order event of customer 1."""
    return OutboxMessage(uuid.uuid4(), name, b'{"order": "' + name.encode() + b'"}', {}, at, partition_key="customer-1")


@pytest.mark.parametrize("refused_at", ["send", "flush"])
async def test_relay_85_storage_budget_spent_refusal_expect_next_of_key_published_in_same_cycle(
    outbox85: Outbox85, refused_at: str
) -> None:
    """MAX_RETRY_COUNT=1, the first of two same-key orders refused: abandoned, the second delivered in that cycle."""
    now = datetime.now(UTC)
    await outbox85.write([order("first", now), order("second", now + timedelta(milliseconds=1))])
    transport = AsyncRecordingEventTransport()
    refuse = lambda r: r.event_name == "first"  # noqa: E731
    if refused_at == "send":
        transport.faults.refuse = refuse
    else:
        transport.faults.refuse_at_flush = refuse
    config = OutboxConfig().model_copy(update={"max_retry_count": 1})
    relay = AsyncOutboxRelayBackgroundService(outbox85.storage, transport, config)
    await relay.relay_batch()
    rows = await outbox85.rows()
    assert [d.event_name for d in transport.delivered] == ["second"]
    assert rows["first"].abandoned_at is not None and rows["first"].published_at is None
    assert rows["second"].published_at is not None
