"""Fixtures for the MongoDB outbox package tests: one fresh collection per test."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.testing.harness import AbstractOutboxHarness
from spakky.outbox.testing.inbox_harness import AbstractInboxHarness
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.config import MongoDriver, MongoOutboxConfig
from spakky.plugins.outbox_mongodb.documents import CODEC_OPTIONS
from spakky.plugins.outbox_mongodb.storage import (
    AsyncMongoOutboxStorage,
    MongoOutboxStorage,
)
from spakky.plugins.outbox_mongodb.transaction import current_async_session
from spakky_outbox_testservices.resolve import MongoServer

DATABASE = "spakky_outbox_unit"


@dataclass
class MongoOutbox:
    """One isolated outbox: its settings, clients and a raw collection for assertions."""

    server: MongoServer
    config: MongoOutboxConfig
    outbox_config: OutboxConfig
    connections: MongoOutboxConnectionManager
    raw: Any
    """The outbox collection through a separate client (backdoor)."""

    def storage(self) -> AsyncMongoOutboxStorage:
        """A new asyncio storage instance (one relay)."""
        return AsyncMongoOutboxStorage(self.connections, self.outbox_config)

    def sync_storage(self) -> MongoOutboxStorage:
        """A new synchronous storage instance (one relay)."""
        return MongoOutboxStorage(self.connections, self.outbox_config)


def skip_unless_motor(uses_motor: bool) -> None:
    """Skip a test that drives Motor where Motor is not installed (spakky-outbox[motor])."""
    if uses_motor:
        pytest.importorskip("motor", reason="Motor not installed (spakky-outbox[motor])")


@asynccontextmanager
async def dropped_after[H: AbstractOutboxHarness | AbstractInboxHarness](harness: H) -> AsyncIterator[H]:
    """``harness`` for the block (one test), dropped afterwards."""
    try:
        yield harness
    finally:
        await harness.drop()


def refuse_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the current transaction's commit fail as a transient write conflict does (a retryable error)."""

    async def refuse(*_: Any, **__: Any) -> None:
        raise OperationFailure("WriteConflict", 112, {"errorLabels": ["TransientTransactionError"]})

    monkeypatch.setattr(current_async_session(), "commit_transaction", refuse)


def outbox_settings(url: str, collection: str, driver: MongoDriver = MongoDriver.PYMONGO) -> MongoOutboxConfig:
    """Settings of an outbox in ``collection`` of the test database."""
    return MongoOutboxConfig().model_copy(
        update={"url": url, "database": DATABASE, "collection": collection, "driver": driver}
    )


@pytest.fixture
async def outbox(mongodb_server: MongoServer) -> AsyncIterator[MongoOutbox]:
    """A fresh outbox collection with its indexes, dropped afterwards."""
    collection = f"unit_{uuid.uuid4().hex}"
    config = outbox_settings(mongodb_server.url, collection)
    outbox_config = OutboxConfig().model_copy(
        update={"claim_timeout_seconds": 6.0, "claim_lease_seconds": 3.0}
    )
    connections = MongoOutboxConnectionManager(config, outbox_config)
    connections.create_indexes()
    client = AsyncMongoClient[dict[str, Any]](mongodb_server.url)
    raw = client.get_database(DATABASE, codec_options=CODEC_OPTIONS)[collection]
    try:
        yield MongoOutbox(mongodb_server, config, outbox_config, connections, raw)
    finally:
        await raw.drop()
        await client.get_database(DATABASE)[f"business_{collection}"].drop()
        await client.close()
        await connections.aclose()
