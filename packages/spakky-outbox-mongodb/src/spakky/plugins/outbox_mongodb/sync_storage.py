# Sync twin generated from packages/spakky-outbox-mongodb/src/spakky/plugins/outbox_mongodb/async_storage.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): cdfb1e98c953fd7336602c8ada7c32796f8ea863ffdbb099797747f6586d4844
"""The MongoDB outbox storage of the sync flavour."""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, override
from uuid import UUID

from pymongo.errors import ConnectionFailure, PyMongoError
from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.figures import RELAY_FIGURES_READ_LIMIT, RelayFigures
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import (
    KeyHead,
    MessageDetail,
    OutboxStats,
    OutboxTarget,
    RelayClaims,
    stats_timeout,
)
from spakky.outbox.error import OutboxTransactionRequiredError
from spakky.outbox.ports.storage import (
    IOutboxFullStorage,
)
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.documents import insert_stamped, to_document
from spakky.plugins.outbox_mongodb.operations import (
    Plan,
    read_figures,
    run_plan,
    write_figures,
)
from spakky.plugins.outbox_mongodb.storage_base import MongoOutboxStorageBase
from spakky.plugins.outbox_mongodb.transaction import (
    current_scope,
    translate_error,
)
from spakky.plugins.outbox_mongodb.wakeup import ChangeStreamWatcher


@Pod()
class MongoOutboxStorage(
    MongoOutboxStorageBase,
    IOutboxFullStorage,
):
    """MongoDB outbox storage of the synchronous flavour, with every optional capability."""

    def __init__(self, connections: MongoOutboxConnectionManager, outbox_config: OutboxConfig) -> None:
        """Build a storage instance with its own claim owner token."""
        super().__init__(connections, outbox_config)
        self._watcher: ChangeStreamWatcher | None = None

    def _run[T](self, plan: Plan[T], collection: Any = None) -> T:
        """Run ``plan`` on ``collection`` (default: the outbox collection)."""
        try:
            return run_plan(plan, self._connections.collection() if collection is None else collection)
        except ConnectionFailure as error:
            raise self._unavailable(error) from error

    def _administer[T](self, plan: Plan[T]) -> T:
        """Run an administration plan; it never creates the collection."""
        if not self._collection_exists:
            if not self._run(self._exists()):
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
        scope = current_scope()
        if scope is None:
            raise OutboxTransactionRequiredError("open a MongoTransaction (or use @Transactional())")
        document = to_document(message)
        collection: Any = self._connections.collection(scope.session.client)
        try:
            # One upsert that stamps the server's clock (not the writer's) on
            # the new document; the filter matches no stored document, so an
            # existing id fails with a duplicate key as an insert would.
            collection.update_one(*insert_stamped(document), upsert=True, session=scope.session)
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
    def mark_published_many(self, message_ids: Sequence[UUID]) -> int:
        """Mark every message this instance still holds among ``message_ids`` published; count them."""
        return self._run(self._queries.publish(message_ids))

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
            self._watcher = ChangeStreamWatcher(self._connections, hub)
            self._watcher.start()
        woke = hub.wait(self._seen, timeout)
        self._seen = hub.generation
        return woke

    @override
    def close_wake_up(self) -> None:
        """Stop the change stream watcher, if one was started."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    @override
    def target(self) -> OutboxTarget:
        return self._connections.target()

    @override
    def stats(self, timeout_seconds: float | None = None) -> OutboxStats:
        return self._administer(self._queries.stats(stats_timeout(timeout_seconds)))

    @override
    def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        return self._listed(self._administer(self._queries.list_abandoned(limit)))

    @override
    def requeue_abandoned(
        self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000
    ) -> int:
        return self._administer(self._queries.requeue_abandoned(message_ids, limit))

    @override
    def key_heads(self, limit: int = 50, after: UUID | None = None) -> list[KeyHead]:
        return self._administer(self._queries.key_heads(limit, after))

    @override
    def get_message(self, message_id: UUID) -> MessageDetail | None:
        return self._administer(self._queries.get_message(message_id))

    @override
    def relay_claims(self) -> list[RelayClaims]:
        return self._administer(self._queries.relay_claims())

    @override
    def purge_published(self, before: datetime | timedelta, limit: int = 10_000) -> int:
        return self._administer(self._queries.purge_published(before, limit))

    @override
    def write_relay_figures(self, figures: RelayFigures) -> None:
        self._run(write_figures(figures), self._connections.figures_collection())

    @override
    def relay_figures(self, since: datetime, limit: int = RELAY_FIGURES_READ_LIMIT) -> list[RelayFigures]:
        return self._run(read_figures(since, limit), self._connections.figures_collection())
