"""Broken MongoDB inboxes fail the inbox rules: the MongoDB harness's raw checks catch each mistake."""

from collections.abc import Awaitable, Callable
from typing import override

import pytest
from pymongo.errors import OperationFailure
from spakky.outbox.error import OutboxTransactionRequiredError
from spakky.outbox.ports.inbox import IAsyncInboxStorage
from spakky.outbox.testing import inbox_broken
from spakky.outbox.testing import inbox_conformance as rules
from spakky.outbox.testing.inbox_harness import AbstractInboxHarness
from spakky.plugins.outbox_mongodb.inbox import AsyncMongoInboxStorage
from spakky.plugins.outbox_mongodb.inbox_documents import LEASED, RECORD, record_filter
from spakky.plugins.outbox_mongodb.transaction import current_async_scope
from spakky_outbox_testservices.resolve import MongoServer

from .test_inbox_rules import Flavour, MongoInboxHarness

type Rule = Callable[[AbstractInboxHarness], Awaitable[None]]


class OutsideTransaction(AsyncMongoInboxStorage):
    """Records in a session of its own: the record outlives the handler's rollback."""

    @override
    async def record(self, consumer: str, message_id: str) -> bool:
        if current_async_scope() is None:
            raise OutboxTransactionRequiredError()
        async with self._outside() as (collection, session):
            result = await collection.update_one(record_filter(consumer, message_id), RECORD, upsert=True, session=session)
        return result.upserted_id is not None


class IgnoresConflicts(AsyncMongoInboxStorage):
    """Upserts with the session but lets the server's conflict through as it comes."""

    @override
    async def record(self, consumer: str, message_id: str) -> bool:
        scope = current_async_scope()
        if scope is None:
            raise OutboxTransactionRequiredError()
        await self._ensure_indexes()
        collection = self._connections.async_inbox_collection(scope.session.client)
        result = await collection.update_one(record_filter(consumer, message_id), RECORD, upsert=True, session=scope.session)
        return result.upserted_id is not None


class ConsumersConflated(AsyncMongoInboxStorage):
    """Takes a message recorded by any consumer for a duplicate."""

    @override
    async def record(self, consumer: str, message_id: str) -> bool:
        scope = current_async_scope()
        if scope is not None:
            await self._ensure_indexes()  # before the transaction's first operation, as the real record does
            collection = self._connections.async_inbox_collection(scope.session.client)
            if await collection.find_one({"message_id": message_id}, session=scope.session) is not None:
                return False
        return await super().record(consumer, message_id)


class SweepUnbounded(inbox_broken.SweepUnbounded, AsyncMongoInboxStorage):
    """The MongoDB inbox sweeping every old record at once."""


class FinishNotFenced(AsyncMongoInboxStorage):
    """Finishes a lease whoever holds it now."""

    @override
    async def finish_lease(self, consumer: str, message_id: str, token: str) -> bool:
        async with self._outside() as (collection, session):
            result = await collection.update_one(
                {**record_filter(consumer, message_id), **LEASED},
                {"$set": {"lease_owner": None, "lease_until": None}},
                session=session,
            )
        return result.matched_count == 1


class BrokenHarness(MongoInboxHarness):
    """The MongoDB harness handing out a broken inbox."""

    def __init__(self, server: MongoServer, broken: type[AsyncMongoInboxStorage]) -> None:
        """Fresh collections; every inbox is a ``broken`` one."""
        super().__init__(server, Flavour.PYMONGO)
        self.broken = broken

    @override
    def inbox(self) -> IAsyncInboxStorage:
        return self.broken(self.connections, self.inbox_config)


BROKEN: list[tuple[type[AsyncMongoInboxStorage], Rule, type[Exception], str]] = [
    (OutsideTransaction, rules.test_inbox_rolled_back_handler_expect_no_record_and_rerun, AssertionError, "leave no record"),
    (IgnoresConflicts, rules.test_inbox_racing_instances_expect_effect_once, OperationFailure, "[Ww]rite ?[Cc]onflict"),
    (ConsumersConflated, rules.test_inbox_consumer_names_expect_independent, AssertionError, "must be independent"),
    (SweepUnbounded, rules.test_inbox_sweep_outside_window_expect_removed_in_bounded_batches, AssertionError, "at most 2 per call"),
    (FinishNotFenced, rules.test_inbox_lease_crashed_holder_expect_rerun_after_lease_fenced, AssertionError, "fenced off"),
]


@pytest.mark.parametrize(("broken", "rule", "error", "says"), BROKEN, ids=[b[0].__name__ for b in BROKEN])
async def test_mongodb_inbox_broken_expect_rule_fails(
    mongodb_server: MongoServer, broken: type[AsyncMongoInboxStorage], rule: Rule, error: type[Exception], says: str
) -> None:
    """Each broken MongoDB inbox fails the rule it breaks, on raw collection state."""
    harness = BrokenHarness(mongodb_server, broken)
    try:
        with pytest.raises(error, match=says):
            await rule(harness)
    finally:
        await harness.drop()
