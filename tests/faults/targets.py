"""Build drill targets outside pytest: an outbox table or key prefix of its own, removed after.

The fault drills' fixtures (``conftest.py``) and ``make bench``'s relay-process
sections (``benchmarks/processes.py``) both build their targets here. The relays
may reach the server by another URL than the in-process storage (through a
fault proxy, for instance).
"""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import redis
from spakky.core.application.application_context import ApplicationContext
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.config import MongoOutboxConfig
from spakky.plugins.outbox_mongodb.storage import AsyncMongoOutboxStorage
from spakky.plugins.outbox_mongodb.transaction import AsyncMongoTransaction
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.storage import AsyncRedisOutboxStorage
from spakky.plugins.outbox_redis.transaction import AsyncRedisTransaction
from spakky.plugins.outbox_sqlalchemy.config import SqlAlchemyOutboxConfig
from spakky.plugins.outbox_sqlalchemy.schema import (
    create_outbox_table_async,
    drop_outbox_table_async,
    outbox_table,
)
from spakky.plugins.outbox_sqlalchemy.storage import AsyncSqlAlchemyOutboxStorage
from spakky.plugins.sqlalchemy.common.config import SQLAlchemyConnectionConfig
from spakky.plugins.sqlalchemy.persistency.connection_manager import (
    AsyncConnectionManager,
)
from spakky.plugins.sqlalchemy.persistency.session_manager import AsyncSessionManager
from spakky.plugins.sqlalchemy.persistency.transaction import AsyncTransaction
from sqlalchemy import select

from tests.faults.drill import Target, in_fresh_context

LOST_STATE_COLUMNS = (
    "seq", "id", "partition_key", "published_at", "claimed_at", "claimed_by", "lease_until",
    "retry_count", "not_before", "abandoned_at", "last_error",
)
"""What a report shows of a lost message's row: delivered and acknowledged, claimed, retried, abandoned."""


@asynccontextmanager
async def sql_target(
    name: str, direct_url: str, relay_url: str, config: OutboxConfig
) -> AsyncIterator[Target]:
    """A SQLAlchemy target on a fresh table; the relays connect to ``relay_url``."""
    table = f"fault_{uuid.uuid4().hex[:16]}"
    connection_config = SQLAlchemyConnectionConfig.model_construct(connection_string=direct_url)
    connections = AsyncConnectionManager(connection_config)
    sessions = AsyncSessionManager(connections)
    sessions.set_application_context(ApplicationContext())
    storage = AsyncSqlAlchemyOutboxStorage(
        sessions,
        connections,
        config,
        SqlAlchemyOutboxConfig().model_copy(update={"table_name": table}),
    )
    await create_outbox_table_async(connections.connection, table)

    async def write(messages: list[OutboxMessage]) -> None:
        async def transaction() -> None:
            async with AsyncTransaction(connection_config, sessions):
                for message in messages:
                    await storage.save(message)

        await in_fresh_context(transaction())

    async def rows(ids: list[UUID]) -> list[dict[str, Any]]:
        outbox = outbox_table(table)
        columns = [outbox.c[name] for name in LOST_STATE_COLUMNS]
        async with connections.connection.connect() as connection:
            found = await connection.execute(select(*columns).where(outbox.c.id.in_(ids)).order_by(outbox.c.seq))
            return [
                {name: (str(value) if value is not None else None) for name, value in row._mapping.items()}
                for row in found
            ]

    try:
        yield Target(
            name=name,
            backend="sqlalchemy",
            env={
                "SPAKKY_OUTBOX__STORAGE": "sqlalchemy",
                "SPAKKY_SQLALCHEMY__CONNECTION_STRING": relay_url,
                "SPAKKY_OUTBOX_SQLALCHEMY__TABLE_NAME": table,
            },
            storage=storage,
            write=write,
            rows=rows,
        )
    finally:
        await storage.close_wake_up()
        await drop_outbox_table_async(connections.connection, table)
        await connections.dispose()


@asynccontextmanager
async def redis_target(
    name: str, direct_url: str, relay_url: str, config: OutboxConfig
) -> AsyncIterator[Target]:
    """A Redis target under a fresh hash-tagged key prefix; the relays connect to ``relay_url``."""
    prefix = f"{{fault-{uuid.uuid4().hex[:12]}}}"
    redis_config = RedisOutboxConfig().model_copy(update={"url": direct_url, "key_prefix": prefix})
    connections = RedisOutboxConnectionManager(redis_config)
    storage = AsyncRedisOutboxStorage(connections, redis_config, config)
    transaction = AsyncRedisTransaction(redis_config, connections)

    async def write(messages: list[OutboxMessage]) -> None:
        async def commit() -> None:
            await transaction.initialize()
            try:
                for message in messages:
                    await storage.save(message)
                await transaction.commit()
            finally:
                await transaction.dispose()

        await in_fresh_context(commit())

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


WIRE_RELAY_SETTINGS = {
    "SPAKKY_OUTBOX__CLAIM_LEASE_SECONDS": "10",
    "SPAKKY_OUTBOX__CLAIM_TIMEOUT_SECONDS": "60",
}
"""Leases the relays need on the mongoeco wire server (see `mongodb_target`)."""

WIRE_TARGET = "mongodb-wire"
"""The MongoDB target's name on the wire server, where drills load fewer events (it drains about 15 a second)."""

MONGODB_DATABASE = "spakky_outbox_faults"
"""The database of the MongoDB drill targets (one collection each)."""


@asynccontextmanager
async def mongodb_target(
    name: str, url: str, config: OutboxConfig, relay_settings: dict[str, str] | None = None
) -> AsyncIterator[Target]:
    """A MongoDB target on a fresh collection with its indexes (created here, before any relay starts)."""
    collection = f"fault_{uuid.uuid4().hex[:16]}"
    mongo_config = MongoOutboxConfig().model_copy(
        update={"url": url, "database": MONGODB_DATABASE, "collection": collection}
    )
    connections = MongoOutboxConnectionManager(mongo_config, config)
    connections.create_indexes()
    storage = AsyncMongoOutboxStorage(connections, config)

    async def write(messages: list[OutboxMessage]) -> None:
        async def commit() -> None:
            async with AsyncMongoTransaction(mongo_config, connections):
                for message in messages:
                    await storage.save(message)

        await in_fresh_context(commit())

    try:
        yield Target(
            name=name,
            backend="mongodb",
            env={
                "SPAKKY_OUTBOX__STORAGE": "mongodb",
                "SPAKKY_OUTBOX_MONGODB__URL": url,
                "SPAKKY_OUTBOX_MONGODB__DATABASE": MONGODB_DATABASE,
                "SPAKKY_OUTBOX_MONGODB__COLLECTION": collection,
            },
            storage=storage,
            write=write,
            relay_settings=relay_settings or {},
        )
    finally:
        connections.collection().drop()
        await connections.aclose()
