"""Fixtures for the MongoDB outbox package tests: one fresh collection per test."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from spakky.outbox.common.config import OutboxConfig
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.config import MongoDriver, MongoOutboxConfig
from spakky.plugins.outbox_mongodb.documents import CODEC_OPTIONS
from spakky.plugins.outbox_mongodb.storage import (
    AsyncMongoOutboxStorage,
    MongoOutboxStorage,
)
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
