"""MongoDB outbox storages, sync and asyncio, with every optional capability.

``save`` inserts the message with the session of the ``@Transactional()`` use
case, so it commits or aborts with the business documents. The relay side
runs the plans of `spakky.plugins.outbox_mongodb.operations` outside any
transaction: claims are leases on the server clock, fenced by the storage
instance's owner token, and cost O(batch) whatever the backlog.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any, override
from uuid import UUID

from pymongo.errors import ConnectionFailure, PyMongoError
from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import OutboxStats, OutboxTarget
from spakky.outbox.error import (
    OutboxStorageUnavailableError,
    OutboxTransactionRequiredError,
)
from spakky.outbox.ports.storage import (
    IAsyncOutboxAdministration,
    IAsyncOutboxBatchAcknowledgement,
    IAsyncOutboxLiveness,
    IAsyncOutboxRetryScheduling,
    IAsyncOutboxStorage,
    IAsyncOutboxWakeUp,
    IOutboxAdministration,
    IOutboxBatchAcknowledgement,
    IOutboxLiveness,
    IOutboxRetryScheduling,
    IOutboxStorage,
    IOutboxWakeUp,
)
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.documents import (
    Document,
    to_document,
    to_listed_message,
)
from spakky.plugins.outbox_mongodb.error import MongoOutboxCollectionMissingError
from spakky.plugins.outbox_mongodb.operations import (
    CollectionExists,
    OutboxQueries,
    Plan,
    run_plan,
    run_plan_async,
)
from spakky.plugins.outbox_mongodb.transaction import (
    async_scope,
    sync_scope,
    translate_error,
)
from spakky.plugins.outbox_mongodb.wakeup import (
    AsyncChangeStreamWatcher,
    ChangeStreamThread,
)


class _MongoOutboxBase:
    """Owner token, plans and wake-up state shared by the sync and asyncio storages."""

    def __init__(self, connections: MongoOutboxConnectionManager, outbox_config: OutboxConfig) -> None:
        self._connections = connections
        self._queries = OutboxQueries(
            collection_name=connections.config.collection,
            claim_timeout_ms=max(1, round(outbox_config.claim_timeout_seconds * 1000)),
            claim_lease_ms=max(1, round(outbox_config.claim_lease_seconds * 1000)),
        )
        self._seen = connections.hub.generation
        self._collection_exists = False

    @property
    def owner(self) -> str:
        """Token fencing this instance's claims."""
        return self._queries.owner

    def _unavailable(self, error: ConnectionFailure) -> OutboxStorageUnavailableError:
        return OutboxStorageUnavailableError(f"{self._connections.describe()}: {error}")

    def _missing(self) -> MongoOutboxCollectionMissingError:
        return MongoOutboxCollectionMissingError(
            f"{self._connections.describe()}: start the application once with a relay "
            "(SPAKKY_OUTBOX__RELAY=async or sync), which creates the collection and its "
            "indexes at startup; check SPAKKY_OUTBOX_MONGODB__URL, __DATABASE and "
            "__COLLECTION if it should exist"
        )

    @staticmethod
    def _listed(documents: list[Document]) -> list[OutboxMessage]:
        return [m for m in map(to_listed_message, documents) if m is not None]


@Pod()
class AsyncMongoOutboxStorage(
    _MongoOutboxBase,
    IAsyncOutboxStorage,
    IAsyncOutboxBatchAcknowledgement,
    IAsyncOutboxRetryScheduling,
    IAsyncOutboxWakeUp,
    IAsyncOutboxAdministration,
    IAsyncOutboxLiveness,
):
    """Asyncio MongoDB outbox storage (PyMongo async or Motor)."""

    def __init__(self, connections: MongoOutboxConnectionManager, outbox_config: OutboxConfig) -> None:
        """Build a storage instance with its own claim owner token."""
        super().__init__(connections, outbox_config)
        self._watcher: AsyncChangeStreamWatcher | None = None

    async def _run[T](self, plan: Plan[T]) -> T:
        try:
            return await run_plan_async(plan, self._connections.async_collection())
        except ConnectionFailure as error:
            raise self._unavailable(error) from error

    async def _administer[T](self, plan: Plan[T]) -> T:
        """Run an administration plan; it never creates the collection."""
        if not self._collection_exists:
            if not await self._run(self._exists()):
                plan.close()
                raise self._missing()
            self._collection_exists = True
        return await self._run(plan)

    @staticmethod
    def _exists() -> Plan[bool]:
        return (yield CollectionExists())

    @override
    async def save(self, message: OutboxMessage) -> None:
        """Insert the message with the session of the open transaction.

        Raises:
            OutboxTransactionRequiredError: No `AsyncMongoTransaction` is open.
            InvalidOutboxMessageError: A field cannot be stored.
            MongoTransactionRetryableError: MongoDB aborted the transaction.
        """
        scope = async_scope()
        if scope is None:
            raise OutboxTransactionRequiredError("open an AsyncMongoTransaction (or use @Transactional())")
        document = to_document(message)
        collection: Any = self._connections.async_collection(scope.session.client)
        try:
            await collection.insert_one(document, session=scope.session)
        except PyMongoError as error:
            raise translate_error(error) from error
        scope.hubs.add(self._connections.hub)

    @override
    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        """Claim up to ``limit`` messages, oldest first, for this instance."""
        self._seen = self._connections.hub.generation
        return await self._run(self._queries.claim(limit, max_retry))

    @override
    async def mark_published(self, message_id: UUID) -> None:
        """Mark a message this instance holds as published."""
        await self._run(self._queries.publish([message_id]))

    @override
    async def mark_published_many(self, message_ids: Sequence[UUID]) -> None:
        """Mark every message this instance still holds among ``message_ids`` published."""
        await self._run(self._queries.publish(message_ids))

    @override
    async def increment_retry(self, message_id: UUID) -> None:
        """Spend one retry; the claim stays until it ends."""
        await self._run(self._queries.increment_retry(message_id))

    @override
    async def mark_abandoned(self, message_id: UUID) -> None:
        """Abandon the message; it stays readable and unblocks its key."""
        await self._run(self._queries.abandon(message_id, None))

    @override
    async def schedule_retry(self, message_id: UUID, delay_seconds: float, error: str) -> None:
        """Spend one retry, keep ``error``, and release the claim until the delay passed."""
        await self._run(self._queries.schedule_retry(message_id, delay_seconds, error))

    @override
    async def abandon(self, message_id: UUID, error: str) -> None:
        """Abandon the message, keeping ``error`` as the reason."""
        await self._run(self._queries.abandon(message_id, error))

    @override
    async def release(self, message_ids: Sequence[UUID]) -> None:
        """Give up this instance's claims without spending retry budget."""
        await self._run(self._queries.release(message_ids))

    @override
    async def renew_claims(self, message_ids: Sequence[UUID]) -> int:
        """Extend the lease of the claims this instance still holds."""
        return await self._run(self._queries.renew(message_ids))

    @override
    async def wait_for_messages(self, timeout: float) -> bool:
        """Wait for a commit in this process or, by change stream, in another."""
        hub = self._connections.hub
        if self._watcher is None and self._connections.config.change_stream:
            self._watcher = AsyncChangeStreamWatcher(self._connections, hub)
            self._watcher.start()
        woke = await hub.wait_async(self._seen, timeout)
        self._seen = hub.generation
        return woke

    @override
    async def close_wake_up(self) -> None:
        """Stop the change stream, if one was opened."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher.stop()

    @override
    def target(self) -> OutboxTarget:
        return self._connections.target()

    @override
    async def stats(self) -> OutboxStats:
        return await self._administer(self._queries.stats())

    @override
    async def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        return self._listed(await self._administer(self._queries.list_abandoned(limit)))

    @override
    async def requeue_abandoned(
        self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000
    ) -> int:
        return await self._administer(self._queries.requeue_abandoned(message_ids, limit))

    @override
    async def purge_published(self, before: datetime, limit: int = 10_000) -> int:
        return await self._administer(self._queries.purge_published(before, limit))


@Pod()
class MongoOutboxStorage(
    _MongoOutboxBase,
    IOutboxStorage,
    IOutboxBatchAcknowledgement,
    IOutboxRetryScheduling,
    IOutboxWakeUp,
    IOutboxAdministration,
    IOutboxLiveness,
):
    """Synchronous MongoDB outbox storage (PyMongo)."""

    def __init__(self, connections: MongoOutboxConnectionManager, outbox_config: OutboxConfig) -> None:
        """Build a storage instance with its own claim owner token."""
        super().__init__(connections, outbox_config)
        self._watcher: ChangeStreamThread | None = None

    def _run[T](self, plan: Plan[T]) -> T:
        try:
            return run_plan(plan, self._connections.collection())
        except ConnectionFailure as error:
            raise self._unavailable(error) from error

    def _administer[T](self, plan: Plan[T]) -> T:
        """Run an administration plan; it never creates the collection."""
        if not self._collection_exists:
            if not self._run(AsyncMongoOutboxStorage._exists()):
                plan.close()
                raise self._missing()
            self._collection_exists = True
        return self._run(plan)

    @override
    def save(self, message: OutboxMessage) -> None:
        """Insert the message with the session of the open transaction.

        Raises:
            OutboxTransactionRequiredError: No `MongoTransaction` is open.
            InvalidOutboxMessageError: A field cannot be stored.
            MongoTransactionRetryableError: MongoDB aborted the transaction.
        """
        scope = sync_scope()
        if scope is None:
            raise OutboxTransactionRequiredError("open a MongoTransaction (or use @Transactional())")
        document = to_document(message)
        try:
            self._connections.collection(scope.session.client).insert_one(document, session=scope.session)
        except PyMongoError as error:
            raise translate_error(error) from error
        scope.hubs.add(self._connections.hub)

    @override
    def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        """Claim up to ``limit`` messages, oldest first, for this instance."""
        self._seen = self._connections.hub.generation
        return self._run(self._queries.claim(limit, max_retry))

    @override
    def mark_published(self, message_id: UUID) -> None:
        """Mark a message this instance holds as published."""
        self._run(self._queries.publish([message_id]))

    @override
    def mark_published_many(self, message_ids: Sequence[UUID]) -> None:
        """Mark every message this instance still holds among ``message_ids`` published."""
        self._run(self._queries.publish(message_ids))

    @override
    def increment_retry(self, message_id: UUID) -> None:
        """Spend one retry; the claim stays until it ends."""
        self._run(self._queries.increment_retry(message_id))

    @override
    def mark_abandoned(self, message_id: UUID) -> None:
        """Abandon the message; it stays readable and unblocks its key."""
        self._run(self._queries.abandon(message_id, None))

    @override
    def schedule_retry(self, message_id: UUID, delay_seconds: float, error: str) -> None:
        """Spend one retry, keep ``error``, and release the claim until the delay passed."""
        self._run(self._queries.schedule_retry(message_id, delay_seconds, error))

    @override
    def abandon(self, message_id: UUID, error: str) -> None:
        """Abandon the message, keeping ``error`` as the reason."""
        self._run(self._queries.abandon(message_id, error))

    @override
    def release(self, message_ids: Sequence[UUID]) -> None:
        """Give up this instance's claims without spending retry budget."""
        self._run(self._queries.release(message_ids))

    @override
    def renew_claims(self, message_ids: Sequence[UUID]) -> int:
        """Extend the lease of the claims this instance still holds."""
        return self._run(self._queries.renew(message_ids))

    @override
    def wait_for_messages(self, timeout: float) -> bool:
        """Wait for a commit in this process or, by change stream, in another."""
        hub = self._connections.hub
        if self._watcher is None and self._connections.config.change_stream:
            self._watcher = ChangeStreamThread(self._connections, hub)
            self._watcher.start()
        woke = hub.wait(self._seen, timeout)
        self._seen = hub.generation
        return woke

    @override
    def close_wake_up(self) -> None:
        """Stop the change stream thread, if one was started."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    @override
    def target(self) -> OutboxTarget:
        return self._connections.target()

    @override
    def stats(self) -> OutboxStats:
        return self._administer(self._queries.stats())

    @override
    def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        return self._listed(self._administer(self._queries.list_abandoned(limit)))

    @override
    def requeue_abandoned(
        self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000
    ) -> int:
        return self._administer(self._queries.requeue_abandoned(message_ids, limit))

    @override
    def purge_published(self, before: datetime, limit: int = 10_000) -> int:
        return self._administer(self._queries.purge_published(before, limit))
