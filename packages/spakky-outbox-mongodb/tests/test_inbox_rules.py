"""The inbox conformance rules on the MongoDB inbox: PyMongo async, Motor, and the sync flavour.

Runs on a real replica set where MONGODB_URL is set (or one answers locally)
and otherwise on the in-process mongoeco wire server, as the outbox tests do.
"""

import asyncio
import contextvars
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from enum import StrEnum
from typing import Any, override

import pytest
from pymongo import AsyncMongoClient
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.inbox.config import InboxConfig
from spakky.outbox.ports.inbox import IAsyncInboxStorage
from spakky.outbox.testing.inbox_conformance import *  # noqa: F403
from spakky.outbox.testing.inbox_harness import (
    AbstractInboxHarness,
    HandlerCall,
    RawInboxRecord,
    ThreadedInbox,
)
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.config import MongoDriver, MongoOutboxConfig
from spakky.plugins.outbox_mongodb.documents import CODEC_OPTIONS
from spakky.plugins.outbox_mongodb.inbox import (
    AsyncMongoInboxStorage,
    MongoInboxStorage,
)
from spakky.plugins.outbox_mongodb.transaction import (
    AsyncMongoTransaction,
    MongoTransaction,
    current_async_session,
    current_session,
)
from spakky_outbox_testservices.resolve import MongoServer

from .conftest import dropped_after, skip_unless_motor

DATABASE = "spakky_outbox_unit"


class Flavour(StrEnum):
    """Which inbox and transaction the harness drives."""

    PYMONGO = "pymongo"
    MOTOR = "motor"
    SYNC = "sync"


class _RollbackError(Exception):
    """Makes a handler transaction roll back."""


class MongoInboxHarness(AbstractInboxHarness):
    """An inbox collection and an effects collection in a MongoDB, through one flavour."""

    def __init__(self, server: MongoServer, flavour: Flavour) -> None:
        """Fresh collections on ``server``; nothing is created before the first record."""
        # A lease must outlive the few round trips the rules make while it is live:
        # ~10-150 ms each on the Python wire server of a loaded machine.
        self.lease_seconds = 2.0 if server.wire else 0.5
        self.name = f"mongodb-{flavour.value}{' (wire server)' if server.wire else ''}"
        self.flavour = flavour
        suffix = uuid.uuid4().hex
        driver = MongoDriver.MOTOR if flavour is Flavour.MOTOR else MongoDriver.PYMONGO
        self.config = MongoOutboxConfig().model_copy(
            update={
                "url": server.url,
                "database": DATABASE,
                "collection": f"outbox_{suffix}",
                "inbox_collection": f"inbox_{suffix}",
                "driver": driver,
            }
        )
        self.inbox_config = InboxConfig()
        self.connections = MongoOutboxConnectionManager(self.config, OutboxConfig())
        self.backdoor = AsyncMongoClient[dict[str, Any]](server.url, uuidRepresentation="standard", tz_aware=True)
        database = self.backdoor.get_database(DATABASE, codec_options=CODEC_OPTIONS)
        self.raw = database.get_collection(self.config.inbox_collection)
        self.effects_name = f"effects_{suffix}"
        self.raw_effects = database.get_collection(self.effects_name)

    @override
    def inbox(self) -> IAsyncInboxStorage:
        if self.flavour is Flavour.SYNC:
            return ThreadedInbox(MongoInboxStorage(self.connections, self.inbox_config))
        return AsyncMongoInboxStorage(self.connections, self.inbox_config)

    @override
    async def run_handler(self, call: HandlerCall) -> bool:
        if self.flavour is Flavour.SYNC:
            return await self._handle_sync(call)
        ran = False
        try:
            async with AsyncMongoTransaction(self.config, self.connections):
                ran = await call.record()
                if ran:
                    session = current_async_session()
                    effects = session.client[DATABASE][self.effects_name]
                    await effects.insert_one({"effect": call.effect}, session=session)
                await call.reach_commit()
                if call.fail:
                    raise _RollbackError
        except _RollbackError:
            pass
        return ran

    async def _handle_sync(self, call: HandlerCall) -> bool:
        """One sync handler call in a worker thread; the port's coroutines run on this loop in its context."""
        loop = asyncio.get_running_loop()

        def on_loop[T](step: Callable[[], Awaitable[T]]) -> T:
            async def run() -> T:
                return await step()

            # call_soon_threadsafe copies this thread's context: the transaction is seen.
            return asyncio.run_coroutine_threadsafe(run(), loop).result(60)

        def run() -> bool:
            ran = False
            try:
                with MongoTransaction(self.config, self.connections):
                    ran = on_loop(call.record)
                    if ran:
                        session = current_session()
                        session.client[DATABASE][self.effects_name].insert_one({"effect": call.effect}, session=session)
                    on_loop(call.reach_commit)
                    if call.fail:
                        raise _RollbackError
            except _RollbackError:
                pass
            return ran

        return await asyncio.to_thread(contextvars.Context().run, run)

    @override
    async def records(self) -> list[RawInboxRecord]:
        documents = await self.raw.find({}, sort=[("consumer", 1), ("message_id", 1)]).to_list(None)
        return [RawInboxRecord(d["consumer"], d["message_id"], isinstance(d.get("lease_owner"), str)) for d in documents]

    @override
    async def effects(self) -> list[str]:
        return sorted(d["effect"] for d in await self.raw_effects.find({}).to_list(None))

    @override
    async def backdate(self, consumer: str, message_id: str, seconds: float) -> None:
        key = {"consumer": consumer, "message_id": message_id}
        found = await self.raw.find_one(key)
        assert found is not None, f"no record {key}"
        await self.raw.update_one(key, {"$set": {"recorded_at": found["recorded_at"] - timedelta(seconds=seconds)}})

    @override
    async def drop(self) -> None:
        await self.raw.drop()
        await self.raw_effects.drop()
        await self.backdoor.close()
        await self.connections.aclose()


@pytest.fixture(params=list(Flavour), ids=[f.value for f in Flavour])
async def inbox_harness(request: pytest.FixtureRequest, mongodb_server: MongoServer) -> AsyncIterator[MongoInboxHarness]:
    """A fresh MongoDB inbox per flavour, dropped afterwards."""
    skip_unless_motor(request.param is Flavour.MOTOR)
    async with dropped_after(MongoInboxHarness(mongodb_server, request.param)) as harness:
        yield harness
