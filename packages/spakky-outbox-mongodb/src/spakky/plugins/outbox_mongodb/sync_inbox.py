# Sync twin generated from packages/spakky-outbox-mongodb/src/spakky/plugins/outbox_mongodb/async_inbox.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): da814112415ab6317b0cfe60289a816df3725ad22780091d764321901533a061
"""The MongoDB inbox of the sync flavour, on the outbox's client and database.

`MongoInboxStorage.record` upserts the record with the session of the
handler's ``@Transactional()`` (`MongoTransaction`), so it commits or
aborts with the business documents. The unique key on ``(consumer,
message_id)`` settles races: a committed record matches (a duplicate, skip);
a record another open transaction wrote fails the upsert with a write
conflict on a real server, and the commit on a server that checks conflicts
only then; both become `InboxConflictError`, the whole transaction aborted.
Everything else (leases, sweep, counts, creating the indexes) runs outside
any transaction, in a session of its own, on the server clock.
"""

import uuid
from collections.abc import Generator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, override

from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)
from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.error import (
    OutboxStorageUnavailableError,
    OutboxTransactionRequiredError,
)
from spakky.outbox.inbox.config import InboxConfig
from spakky.outbox.inbox.error import InboxConflictError
from spakky.outbox.ports.inbox import (
    IInboxStorage,
    InboxLease,
    InboxStats,
    LeaseOutcome,
)
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.documents import Document
from spakky.plugins.outbox_mongodb.driver import resolved
from spakky.plugins.outbox_mongodb.inbox_documents import (
    LEASED,
    OLDEST_FIRST,
    RECORD,
    finish,
    held,
    inbox_indexes,
    lease_ms,
    lease_refused,
    new_lease,
    record_filter,
    take_over,
    written_before,
)
from spakky.plugins.outbox_mongodb.transaction import (
    current_scope,
    translate_error,
)

_CONFLICTS = frozenset({11000, 112})
"""``DuplicateKey`` and ``WriteConflict``: another transaction holds or stored the record."""


@Pod()
class MongoInboxStorage(IInboxStorage):
    """MongoDB inbox of the synchronous flavour."""

    def __init__(self, connections: MongoOutboxConnectionManager, config: InboxConfig) -> None:
        """Bind the inbox to the outbox's clients; its indexes follow the dedup window."""
        self._connections = connections
        self._indexes = inbox_indexes(config.window_seconds)
        self._indexed = False

    @contextmanager
    def _outside(self) -> Generator[tuple[Any, Any]]:
        """The inbox collection and a session of its own: writes commit at once, even in a transaction."""
        client = self._connections.client
        try:
            with resolved(client.start_session()) as session:
                yield self._connections.inbox_collection(client), session
        except ConnectionFailure as error:
            raise OutboxStorageUnavailableError(f"{self.location()}: {error}") from error

    def _ensure_indexes(self) -> None:
        """Create the collection's indexes on first use; recreate one whose definition changed (the TTL)."""
        if self._indexed:
            return
        with self._outside() as (collection, session):
            existing = collection.index_information(session=session)
            for index in self._indexes:
                info = existing.get(index.name)
                if info is not None and index.matches(info):
                    continue
                if info is not None:
                    collection.drop_index(index.name, session=session)
                collection.create_index(list(index.keys), session=session, **index.options())
        self._indexed = True

    def _stored(self, key: Document) -> bool:
        """Whether the record is stored, read outside every transaction; False when that fails."""
        try:
            with self._outside() as (collection, session):
                return collection.find_one(key, {"_id": 1}, session=session) is not None
        except (PyMongoError, OutboxStorageUnavailableError):
            return False

    @override
    def record(self, consumer: str, message_id: str) -> bool:
        """Upsert the record with the open transaction's session; True when it is new.

        Raises:
            OutboxTransactionRequiredError: No `MongoTransaction` is open.
            InboxConflictError: Another open transaction wrote the same record.
        """
        scope = current_scope()
        if scope is None:
            raise OutboxTransactionRequiredError("open a MongoTransaction (or use @Transactional())")
        key = record_filter(consumer, message_id)
        self._ensure_indexes()
        collection = self._connections.inbox_collection(scope.session.client)
        try:
            result = collection.update_one(key, RECORD, upsert=True, session=scope.session)
        except PyMongoError as error:
            if isinstance(error, OperationFailure) and error.code in _CONFLICTS:
                raise InboxConflictError(f"consumer {consumer!r}, message {message_id!r}") from error
            raise translate_error(error) from error
        if result.upserted_id is None:
            return False
        scope.inbox_checks.append(lambda: self._stored(key))
        return True

    @override
    def acquire_lease(self, consumer: str, message_id: str, lease_seconds: float) -> InboxLease:
        key = record_filter(consumer, message_id)
        owner, lease = uuid.uuid4().hex, lease_ms(lease_seconds)
        self._ensure_indexes()
        with self._outside() as (collection, session):
            try:
                collection.update_one(*new_lease(key, owner, lease), upsert=True, session=session)
                return InboxLease(LeaseOutcome.ACQUIRED, owner)
            except DuplicateKeyError:
                pass
            taken = collection.update_one(*take_over(key, owner, lease), session=session)
            if taken.matched_count == 1:
                return InboxLease(LeaseOutcome.ACQUIRED, owner)
            found = collection.find_one(key, {"lease_owner": 1}, session=session)
        return lease_refused(found)

    @override
    def finish_lease(self, consumer: str, message_id: str, token: str) -> bool:
        key = record_filter(consumer, message_id)
        with self._outside() as (collection, session):
            result = collection.update_one(*finish(key, token), session=session)
        return result.matched_count == 1

    @override
    def release_lease(self, consumer: str, message_id: str, token: str) -> None:
        key = record_filter(consumer, message_id)
        with self._outside() as (collection, session):
            collection.delete_one(held(key, token), session=session)

    @override
    def purge(self, before: datetime, limit: int = 10_000) -> int:
        """Delete up to ``limit`` records written before ``before``, oldest first (along the TTL index)."""
        if limit <= 0:
            return 0
        old = written_before(before)
        with self._outside() as (collection, session):
            cursor = collection.find(old, {"_id": 1}, sort=OLDEST_FIRST, limit=limit, session=session)
            found: list[Document] = cursor.to_list(None)
            if not found:
                return 0
            result = collection.delete_many({"_id": {"$in": [d["_id"] for d in found]}, **old}, session=session)
        return result.deleted_count

    @override
    def stats(self) -> InboxStats:
        with self._outside() as (collection, session):
            records = collection.count_documents({}, session=session)
            leased = collection.count_documents(LEASED, session=session)
            oldest = collection.find_one({}, {"recorded_at": 1}, sort=OLDEST_FIRST, session=session)
        return InboxStats(
            records=records,
            leased=leased,
            oldest_recorded_at=None if oldest is None else oldest.get("recorded_at"),
        )

    @property
    @override
    def expires_by_itself(self) -> bool:
        """The window is a TTL index: the server deletes expired records."""
        return True

    @override
    def location(self) -> str:
        return self._connections.inbox_location()

    @override
    def defaulted(self) -> tuple[str, ...]:
        return self._connections.inbox_defaulted()
