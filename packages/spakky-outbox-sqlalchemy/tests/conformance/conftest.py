"""The SQLAlchemy storage under the conformance suite, on every supported dialect.

PostgreSQL through asyncpg and through psycopg 3, MariaDB through
aiomysql/pymysql, and a SQLite file through aiosqlite/pysqlite. Each harness
gets its own outbox table (and business table) and drops them afterwards.
"""

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Generator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, override

import pytest
from spakky.core.application.application_context import ApplicationContext
from spakky.outbox.common.figures import RelayFigures
from spakky.outbox.testing.harness import (
    AbstractOutboxHarness,
    Capability,
    RawOutboxRecord,
)
from spakky.plugins.outbox_sqlalchemy.config import SqlAlchemyOutboxConfig
from spakky.plugins.outbox_sqlalchemy.figures import figures_row
from spakky.plugins.outbox_sqlalchemy.schema import (
    create_outbox_table_async,
    drop_outbox_table_async,
    figures_table,
    outbox_table,
)
from spakky.plugins.outbox_sqlalchemy.storage import (
    AsyncSqlAlchemyOutboxStorage,
    SqlAlchemyOutboxStorage,
    mark_table_created,
)
from spakky.plugins.sqlalchemy.persistency.transaction import (
    AsyncTransaction,
    Transaction,
)
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url

from ..conftest import async_managers, sync_managers


@dataclass(frozen=True)
class Backend:
    """One dialect/driver combination the suite runs against."""

    id: str
    service: str
    async_driver: str
    sync_driver: str
    sync_shared_with: str | None = None
    """The backend whose sync flavour is this one's too (the same sync driver and server)."""


BACKENDS = (
    Backend(
        "postgresql-asyncpg", "postgres", "postgresql+asyncpg", "postgresql+psycopg",
        sync_shared_with="postgresql-psycopg",
    ),
    Backend(
        "postgresql-psycopg", "postgres", "postgresql+psycopg", "postgresql+psycopg"
    ),
    Backend("mariadb", "mariadb", "mysql+aiomysql", "mysql+pymysql"),
    Backend("mysql8", "mysql", "mysql+aiomysql", "mysql+pymysql"),
    Backend("sqlite", "sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"),
)


class SqlAlchemyOutboxHarness(AbstractOutboxHarness):
    """One outbox table (plus a business table) on a real database."""

    capabilities = frozenset(Capability)
    claim_timeout_seconds = 3.0
    claim_lease_seconds = 1.0

    def __init__(self, name: str, async_url: str, sync_url: str) -> None:
        """Prepare engines and managers the way spakky-sqlalchemy builds them."""
        self.name = f"sqlalchemy-{name}"
        self.table_name = f"outbox_{uuid.uuid4().hex[:16]}"
        self.table = outbox_table(self.table_name)
        self.business = Table(
            f"{self.table_name}_biz",
            MetaData(),
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("business_key", String(100), nullable=False),
        )
        context = ApplicationContext()
        self.async_connection_config, self.async_connections, self.async_sessions = async_managers(
            async_url, context=context
        )
        self.sync_connection_config, self.sync_connections, self.sync_sessions = sync_managers(
            sync_url, context=context
        )
        self.config = SqlAlchemyOutboxConfig().model_copy(
            update={"table_name": self.table_name}
        )
        self.storages: list[AsyncSqlAlchemyOutboxStorage] = []
        self.sync_storages: list[SqlAlchemyOutboxStorage] = []

    async def setup(self) -> None:
        """Create the outbox and business tables."""
        engine = self.async_connections.connection
        await create_outbox_table_async(engine, self.table_name)
        async with engine.begin() as connection:
            await connection.run_sync(self.business.create)
        mark_table_created(engine.sync_engine, self.table_name)
        mark_table_created(self.sync_connections.connection, self.table_name)

    @override
    async def drop(self) -> None:
        """Close listeners, drop both tables and dispose the engines."""
        for storage in self.storages:
            await storage.close_wake_up()
        for sync_storage in self.sync_storages:
            await asyncio.to_thread(sync_storage.close_wake_up)
        engine = self.async_connections.connection
        await drop_outbox_table_async(engine, self.table_name)
        async with engine.begin() as connection:
            await connection.run_sync(self.business.drop)
        await self.async_connections.dispose()
        self.sync_connections.dispose()

    @override
    def new_storage(self) -> AsyncSqlAlchemyOutboxStorage:
        self.storages.append(AsyncSqlAlchemyOutboxStorage(self.async_sessions, self.async_connections, self.outbox_config(), self.config))
        return self.storages[-1]

    @override
    def new_sync_storage(self) -> SqlAlchemyOutboxStorage:
        self.sync_storages.append(SqlAlchemyOutboxStorage(self.sync_sessions, self.sync_connections, self.outbox_config(), self.config))
        return self.sync_storages[-1]

    @override
    @asynccontextmanager
    async def business_transaction(self, business_key: str) -> AsyncGenerator[None]:
        """A spakky-sqlalchemy `AsyncTransaction` that inserts the business row."""
        async with AsyncTransaction(self.async_connection_config, self.async_sessions) as tx:
            await tx.session.execute(insert(self.business).values(business_key=business_key))
            yield

    @override
    @contextmanager
    def business_transaction_sync(self, business_key: str) -> Generator[None]:
        """The same through a spakky-sqlalchemy `Transaction`."""
        with Transaction(self.sync_connection_config, self.sync_sessions) as tx:
            tx.session.execute(insert(self.business).values(business_key=business_key))
            yield

    @override
    async def business_record_exists(self, business_key: str) -> bool:
        """Backdoor: count the business rows with that key."""
        query = select(func.count()).where(self.business.c.business_key == business_key)
        async with self.async_connections.connection.connect() as connection:
            return bool((await connection.execute(query)).scalar_one())

    @override
    async def raw_records(self) -> list[RawOutboxRecord]:
        """Backdoor: read the outbox table with plain SQL."""
        t = self.table
        async with self.async_connections.connection.connect() as connection:
            rows = (
                (await connection.execute(select(t).order_by(t.c.seq))).mappings().all()
            )
        return [
            RawOutboxRecord(
                id=row["id"],
                event_name=row["event_name"],
                payload=bytes(row["payload"]),
                headers=dict(row["headers"]) if isinstance(row["headers"], dict) else {},
                partition_key=row["partition_key"],
                retry_count=row["retry_count"],
                claimed=row["claimed_by"] is not None,
                published=row["published_at"] is not None,
                abandoned=row["abandoned_at"] is not None,
                last_error=row["last_error"],
                created_at=row["created_at"],
            )
            for row in rows
        ]

    @override
    async def raw_relay_figures(self) -> list[RelayFigures]:
        """Backdoor: read the figures table with plain SQL."""
        t = figures_table(self.table_name)
        async with self.async_connections.connection.connect() as connection:
            rows = (await connection.execute(select(t).order_by(t.c.id))).mappings().all()
        return [figures_row(row) for row in rows]

    @override
    async def corrupt(self, message_id: uuid.UUID) -> None:
        """Backdoor: store headers that are JSON but not an object."""
        statement = (
            update(self.table)
            .where(self.table.c.id == message_id)
            .values(headers=["not", "an", "object"])
        )
        async with self.async_connections.connection.begin() as connection:
            await connection.execute(statement)

    @override
    async def assert_no_leaks(self) -> None:
        """No connection of either engine may still be checked out.

        The LISTEN and NOTIFY connections come from the engine's pool (so they
        connect as the application's do) and are detached once open: one still
        opening when the test ends is checked out for a moment, hence the deadline.
        """
        async_pool: Any = self.async_connections.connection.sync_engine.pool
        sync_pool: Any = self.sync_connections.connection.pool
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while (async_pool.checkedout() or sync_pool.checkedout()) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert async_pool.checkedout() == 0, "async engine connection leaked"
        assert sync_pool.checkedout() == 0, "sync engine connection leaked"


def _urls(
    request: pytest.FixtureRequest, backend: Backend, tmp_path: Path
) -> tuple[str, str]:
    if backend.service == "sqlite":
        path = tmp_path / "outbox.db"
        return f"{backend.async_driver}:///{path}", f"{backend.sync_driver}:///{path}"
    plain = make_url(request.getfixturevalue(f"{backend.service}_url"))
    render = lambda driver: plain.set(drivername=driver).render_as_string(  # noqa: E731
        hide_password=False
    )
    return render(backend.async_driver), render(backend.sync_driver)


@pytest.fixture(params=BACKENDS, ids=[b.id for b in BACKENDS])
async def outbox_harness(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqlAlchemyOutboxHarness]:
    """A fresh outbox table on one dialect, dropped after the test."""
    backend: Backend = request.param
    async_url, sync_url = _urls(request, backend, tmp_path)
    if backend.service == "sqlite":
        import sqlite3

        with sqlite3.connect(tmp_path / "outbox.db") as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    harness = SqlAlchemyOutboxHarness(backend.id, async_url, sync_url)
    if backend.sync_shared_with is not None:
        harness.sync_flavour_shared_with = f"sqlalchemy-{backend.sync_shared_with}"
    await harness.setup()
    try:
        yield harness
    finally:
        await harness.drop()
