"""The MongoDB storage under the conformance suite: PyMongo async and Motor.

Runs on a real replica set when one is reachable (MONGODB_URL, a local
server, Docker) and otherwise on the in-process mongoeco wire server.
"""

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Generator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, override

import pytest
from pymongo import AsyncMongoClient
from spakky.outbox.common.figures import RelayFigures
from spakky.outbox.testing.harness import (
    AbstractOutboxHarness,
    Capability,
    RawOutboxRecord,
)
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.config import MongoDriver, MongoOutboxConfig
from spakky.plugins.outbox_mongodb.documents import CODEC_OPTIONS, ORDER, to_figures
from spakky.plugins.outbox_mongodb.storage import (
    AsyncMongoOutboxStorage,
    MongoOutboxStorage,
)
from spakky.plugins.outbox_mongodb.transaction import (
    AsyncMongoTransaction,
    MongoTransaction,
    current_async_session,
    current_session,
)
from spakky_outbox_testservices.resolve import MongoServer

from ..conftest import dropped_after, skip_unless_motor

DATABASE = "spakky_outbox_test"



class MongoOutboxHarness(AbstractOutboxHarness):
    """One outbox in a fresh collection (plus a business collection) of a MongoDB."""

    capabilities = frozenset(Capability)

    def __init__(self, server: MongoServer, driver: MongoDriver) -> None:
        """Prepare a fresh outbox collection on ``server`` used through ``driver``."""
        # One claim is ~5 round trips: ~5 ms on MongoDB, ~150 ms on the Python wire
        # server of a loaded machine, where a suite test's rounds of concurrent
        # claims must still fit in one lease, and 1.6 leases of renewals (with
        # their round trips) within the claim timeout.
        self.claim_lease_seconds, self.claim_timeout_seconds = (3.0, 12.0) if server.wire else (1.0, 3.0)
        wire = " (wire server)" if server.wire else ""
        self.name = f"mongodb-{driver.value}{wire}"
        if driver is MongoDriver.MOTOR:
            # Both async drivers have the one PyMongo sync storage as their twin.
            self.sync_flavour_shared_with = f"mongodb-{MongoDriver.PYMONGO.value}{wire}"
        collection = f"outbox_{uuid.uuid4().hex}"
        self.config = MongoOutboxConfig().model_copy(
            update={"url": server.url, "database": DATABASE, "collection": collection, "driver": driver}
        )
        self.connections = MongoOutboxConnectionManager(self.config, self.outbox_config())
        self.connections.create_indexes()
        self.backdoor = AsyncMongoClient[dict[str, Any]](server.url, uuidRepresentation="standard", tz_aware=True)
        database = self.backdoor.get_database(DATABASE, codec_options=CODEC_OPTIONS)
        self.raw = database.get_collection(collection)
        self.raw_figures = database.get_collection(f"{collection}_figures")
        self.business = database.get_collection(f"business_{collection}")
        self._storages: list[AsyncMongoOutboxStorage | MongoOutboxStorage] = []

    def _kept[S: AsyncMongoOutboxStorage | MongoOutboxStorage](self, storage: S) -> S:
        """``storage``, kept to close its wake-up in `drop`."""
        self._storages.append(storage)
        return storage

    @override
    def new_storage(self) -> AsyncMongoOutboxStorage:
        return self._kept(AsyncMongoOutboxStorage(self.connections, self.outbox_config()))

    @override
    def new_sync_storage(self) -> MongoOutboxStorage:
        return self._kept(MongoOutboxStorage(self.connections, self.outbox_config()))

    @override
    @asynccontextmanager
    async def business_transaction(self, business_key: str) -> AsyncGenerator[None]:
        async with AsyncMongoTransaction(self.config, self.connections):
            session = current_async_session()
            await session.client[DATABASE][self.business.name].insert_one({"key": business_key}, session=session)
            yield

    @override
    @contextmanager
    def business_transaction_sync(self, business_key: str) -> Generator[None]:
        with MongoTransaction(self.config, self.connections):
            session = current_session()
            session.client[DATABASE][self.business.name].insert_one({"key": business_key}, session=session)
            yield

    @override
    async def business_record_exists(self, business_key: str) -> bool:
        return await self.business.find_one({"key": business_key}) is not None

    @override
    async def raw_relay_figures(self) -> list[RelayFigures]:
        return [to_figures(d) for d in await self.raw_figures.find({}, {"_id": 0}).to_list(None)]

    @override
    async def raw_records(self) -> list[RawOutboxRecord]:
        documents = await self.raw.find({}, sort=list(ORDER.items())).to_list(None)
        return [
            RawOutboxRecord(
                id=d["_id"],
                event_name=d["event_name"],
                payload=d["payload"],
                headers=d["headers"],
                partition_key=d["partition_key"],
                retry_count=d["retry_count"],
                claimed=d.get("claimed_by") is not None,
                published=d["state"] == "published",
                abandoned=d["state"] == "abandoned",
                last_error=d.get("last_error"),
                created_at=d["created_at"],
            )
            for d in documents
        ]

    @override
    async def corrupt(self, message_id: uuid.UUID) -> None:
        await self.raw.update_one({"_id": message_id}, {"$set": {"payload": "not bytes", "headers": 42}})

    @override
    async def assert_no_leaks(self) -> None:
        assert self.connections.open_sessions == 0, f"{self.connections.open_sessions} MongoDB session(s) not ended"

    @override
    async def drop(self) -> None:
        for storage in self._storages:
            if isinstance(storage, AsyncMongoOutboxStorage):
                await storage.close_wake_up()
            else:
                storage.close_wake_up()
        await self.raw.drop()
        await self.raw_figures.drop()
        await self.business.drop()
        await self.backdoor.close()
        await self.connections.aclose()


@pytest.fixture(params=[MongoDriver.PYMONGO, MongoDriver.MOTOR], ids=["pymongo", "motor"])
async def outbox_harness(
    request: pytest.FixtureRequest, mongodb_server: MongoServer
) -> AsyncIterator[MongoOutboxHarness]:
    """A fresh MongoDB outbox collection, dropped afterwards, per async driver."""
    skip_unless_motor(request.param is MongoDriver.MOTOR)
    async with dropped_after(MongoOutboxHarness(mongodb_server, request.param)) as harness:
        yield harness
