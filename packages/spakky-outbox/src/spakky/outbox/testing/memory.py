"""In-memory reference storage: passes every capability, doubles as a public fake.

One `InMemoryOutboxState` holds the messages (and, for tests, business records);
`InMemoryOutboxStorage` / `AsyncInMemoryOutboxStorage` are thin per-instance
views with their own owner token, standing for relay processes.
`InMemoryTransaction` / `AsyncInMemoryTransaction` give ``@Transactional()``
its commit and rollback, so saves join the business transaction. A save made
with no transaction open is written at once (documented standalone write).
"""

import asyncio
import threading
from collections.abc import Callable, Generator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import override
from uuid import UUID, uuid4

from spakky.core.pod.annotations.pod import Pod
from spakky.data.persistency.transaction import (
    AbstractAsyncTransaction,
    AbstractTransaction,
)
from spakky.outbox.common.claims import choose_batch, key_run
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import OutboxStats
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
from spakky.outbox.testing.harness import (
    AbstractOutboxHarness,
    Capability,
    RawOutboxRecord,
)

type Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Return the current UTC time."""
    return datetime.now(UTC)


class ManualClock:
    """A clock tests move by hand, so claim expiry and backoff need no waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        """Start at ``start`` (default: now)."""
        self.now = start or system_clock()

    def __call__(self) -> datetime:
        """Return the clock's current time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += timedelta(seconds=seconds)


@dataclass
class _Record:
    message: OutboxMessage
    seq: int
    claimed_by: UUID | None = None
    claimed_at: datetime | None = None
    lease_until: datetime | None = None
    not_before: datetime | None = None
    published_at: datetime | None = None
    abandoned_at: datetime | None = None
    retry_count: int = 0
    last_error: str | None = None

    @property
    def pending(self) -> bool:
        return self.published_at is None and self.abandoned_at is None

    def view(self) -> OutboxMessage:
        return replace(
            self.message,
            published_at=self.published_at,
            retry_count=self.retry_count,
            claimed_at=self.claimed_at,
            abandoned_at=self.abandoned_at,
            last_error=self.last_error,
        )


@dataclass
class _Pending:
    messages: list[OutboxMessage] = field(default_factory=list[OutboxMessage])
    business: dict[str, object] = field(default_factory=dict[str, object])


@Pod()
class InMemoryOutboxState:
    """The shared store behind every in-memory storage instance of one application."""

    def __init__(self) -> None:
        """Create an empty store on the system clock."""
        self.clock: Clock = system_clock
        self.claim_timeout = timedelta(seconds=300)
        self.claim_lease = timedelta(seconds=10)
        self.records: dict[UUID, _Record] = {}
        self.business: dict[str, object] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._version = 0
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._transaction: ContextVar[_Pending | None] = ContextVar(
            f"spakky_outbox_memory_tx_{id(self)}", default=None
        )

    # --- transactions ---------------------------------------------------------

    def begin(self) -> Token[_Pending | None]:
        """Open a transaction in the current context."""
        return self._transaction.set(_Pending())

    def commit(self) -> None:
        """Apply the current transaction's business writes and messages atomically."""
        pending = self._transaction.get()
        if pending is None:
            return
        self._apply(pending.messages, pending.business)
        self._transaction.set(_Pending())

    def rollback(self) -> None:
        """Discard the current transaction's writes."""
        if self._transaction.get() is not None:
            self._transaction.set(_Pending())

    def end(self, token: Token[_Pending | None]) -> None:
        """Close the transaction opened with ``token``."""
        self._transaction.reset(token)

    @contextmanager
    def transaction(self, *, commit: bool = True) -> Generator[None]:
        """Run a block in a transaction that commits (or rolls back) at the end."""
        token = self.begin()
        try:
            yield
            if commit:
                self.commit()
        finally:
            self.end(token)

    def put_business(self, key: str, value: object) -> None:
        """Write a business record in the current transaction (or at once)."""
        pending = self._transaction.get()
        if pending is None:
            self._apply([], {key: value})
        else:
            pending.business[key] = value

    def save(self, message: OutboxMessage) -> None:
        """Queue a message in the current transaction, or store it at once outside one."""
        pending = self._transaction.get()
        if pending is None:
            self._apply([message], {})
        else:
            pending.messages.append(message)

    def _apply(self, messages: Sequence[OutboxMessage], business: dict[str, object]) -> None:
        with self._lock:
            self.business.update(business)
            for message in messages:
                self._seq += 1
                self.records[message.id] = _Record(
                    message=message, seq=self._seq, retry_count=message.retry_count
                )
            if messages:
                self._version += 1
                self._changed.notify_all()
                for loop, event in list(self._async_waiters):
                    loop.call_soon_threadsafe(event.set)

    # --- claims and acknowledgements -----------------------------------------

    def claim(self, owner: UUID, limit: int, max_retry: int) -> list[OutboxMessage]:
        """Claim the oldest eligible messages, keeping each key's order.

        Keyless messages come oldest first; keys come as runs (see
        `choose_batch`), visited in the order of their oldest message.
        """
        with self._lock:
            now = self.clock()
            run = key_run(limit)
            keyless: list[_Record] = []
            runs: dict[str, list[_Record]] = {}
            closed: set[str] = set()
            for record in self.records.values():
                if not record.pending:
                    continue
                key = record.message.partition_key
                if key is None:
                    if len(keyless) < limit and self._eligible(record, now, max_retry):
                        keyless.append(record)
                elif key not in closed:
                    prefix = runs.setdefault(key, [])
                    if len(prefix) < run and self._eligible(record, now, max_retry):
                        prefix.append(record)
                    else:
                        closed.add(key)
            chosen = choose_batch(keyless, runs.values(), limit, lambda r: r.seq)
            for record in chosen:
                record.claimed_by, record.claimed_at = owner, now
                record.lease_until = now + self.claim_lease
            return [record.view() for record in chosen]

    def _eligible(self, record: _Record, now: datetime, max_retry: int) -> bool:
        if record.retry_count >= max_retry:
            return False
        if record.not_before is not None and record.not_before > now:
            return False
        return not self._claim_live(record, now)

    def _claim_live(self, record: _Record, now: datetime) -> bool:
        """Whether a claim holds: within the claim timeout and its lease."""
        if record.claimed_at is None or record.claimed_at + self.claim_timeout <= now:
            return False
        return record.lease_until is None or record.lease_until > now

    def _owned(self, owner: UUID, message_id: UUID) -> _Record | None:
        record = self.records.get(message_id)
        if record is None or record.claimed_by != owner or not record.pending:
            return None
        return record

    def publish(self, owner: UUID, ids: Sequence[UUID]) -> None:
        """Mark this owner's claimed messages published."""
        with self._lock:
            for message_id in ids:
                if record := self._owned(owner, message_id):
                    record.published_at = self.clock()
                    record.claimed_by = record.claimed_at = None

    def increment_retry(self, owner: UUID, message_id: UUID) -> None:
        """Spend one retry and keep the claim until it expires (6.x behaviour)."""
        with self._lock:
            if record := self._owned(owner, message_id):
                record.retry_count += 1

    def schedule_retry(self, owner: UUID, message_id: UUID, delay: float, error: str) -> None:
        """Spend one retry, keep the error and release the claim until ``delay`` passed."""
        with self._lock:
            if record := self._owned(owner, message_id):
                record.retry_count += 1
                record.last_error = error
                record.claimed_by = record.claimed_at = None
                record.not_before = self.clock() + timedelta(seconds=delay)

    def abandon(self, owner: UUID, message_id: UUID, error: str | None) -> None:
        """Give up on a message, keeping it readable with its reason."""
        with self._lock:
            if record := self._owned(owner, message_id):
                record.abandoned_at = self.clock()
                record.claimed_by = record.claimed_at = None
                if error is not None:
                    record.last_error = error

    def release(self, owner: UUID, ids: Sequence[UUID]) -> None:
        """Drop this owner's claims without spending budget."""
        with self._lock:
            for message_id in ids:
                if record := self._owned(owner, message_id):
                    record.claimed_by = record.claimed_at = None

    def renew(self, owner: UUID, ids: Sequence[UUID]) -> int:
        """Extend the lease of this owner's claims younger than the claim timeout."""
        with self._lock:
            now = self.clock()
            renewed = 0
            for message_id in ids:
                record = self._owned(owner, message_id)
                if record is None or record.claimed_at is None:
                    continue
                if record.claimed_at + self.claim_timeout <= now:
                    continue
                record.lease_until = now + self.claim_lease
                renewed += 1
            return renewed

    # --- wake-up ---------------------------------------------------------------

    @property
    def version(self) -> int:
        """Counter raised by every commit that stores messages."""
        return self._version

    def wait(self, seen: int, timeout: float) -> bool:
        """Block until a commit after version ``seen`` or until ``timeout`` passes."""
        with self._lock:
            return self._changed.wait_for(lambda: self._version != seen, timeout)

    async def wait_async(self, seen: int, timeout: float) -> bool:
        """Wait until a commit after version ``seen`` or until ``timeout`` passes."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if self._version != seen:
                return True
            self._async_waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter[1].wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._async_waiters.discard(waiter)

    # --- administration ------------------------------------------------------

    def stats(self) -> OutboxStats:
        """Count messages by state."""
        with self._lock:
            now = self.clock()
            pending = [r for r in self.records.values() if r.pending]
            claimed = [r for r in pending if r.claimed_by is not None and self._claim_live(r, now)]
            oldest = min((r.message.created_at for r in pending), default=None)
            return OutboxStats(
                pending=len(pending),
                claimed=len(claimed),
                published=sum(r.published_at is not None for r in self.records.values()),
                abandoned=sum(r.abandoned_at is not None for r in self.records.values()),
                oldest_pending_age_seconds=(
                    None if oldest is None else max(0.0, (now - oldest).total_seconds())
                ),
            )

    def list_abandoned(self, limit: int) -> list[OutboxMessage]:
        """Return abandoned messages, oldest first."""
        with self._lock:
            return [r.view() for r in self.records.values() if r.abandoned_at is not None][:limit]

    def requeue_abandoned(self, ids: Sequence[UUID] | None, limit: int) -> int:
        """Make up to ``limit`` abandoned messages pending again with a fresh budget."""
        with self._lock:
            wanted = None if ids is None else set(ids)
            count = 0
            for record in self.records.values():
                if count >= limit:
                    break
                if record.abandoned_at is None or (wanted is not None and record.message.id not in wanted):
                    continue
                record.abandoned_at = record.not_before = None
                record.claimed_by = record.claimed_at = record.lease_until = None
                record.retry_count = 0
                count += 1
            return count

    def purge_published(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` messages published before ``before``."""
        with self._lock:
            doomed = [
                message_id for message_id, r in self.records.items()
                if r.published_at is not None and r.published_at < before
            ][:limit]
            for message_id in doomed:
                del self.records[message_id]
            return len(doomed)


class _InMemoryView:
    """Per-instance owner token and settings shared by both in-memory storages."""

    def __init__(self, state: InMemoryOutboxState, config: OutboxConfig) -> None:
        self.state = state
        self.owner = uuid4()
        self.seen_version = state.version
        state.claim_timeout = timedelta(seconds=config.claim_timeout_seconds)
        state.claim_lease = timedelta(seconds=config.claim_lease_seconds)


@Pod()
class InMemoryOutboxStorage(
    IOutboxStorage,
    IOutboxBatchAcknowledgement,
    IOutboxRetryScheduling,
    IOutboxWakeUp,
    IOutboxAdministration,
    IOutboxLiveness,
):
    """Synchronous in-memory storage with every capability."""

    def __init__(self, state: InMemoryOutboxState, config: OutboxConfig) -> None:
        """Bind to the shared state with a new owner token."""
        self._view = _InMemoryView(state, config)
        self._state = state

    @override
    def save(self, message: OutboxMessage) -> None:
        self._state.save(message)

    @override
    def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        self._view.seen_version = self._state.version
        return self._state.claim(self._view.owner, limit, max_retry)

    @override
    def mark_published(self, message_id: UUID) -> None:
        self._state.publish(self._view.owner, [message_id])

    @override
    def mark_published_many(self, message_ids: Sequence[UUID]) -> None:
        self._state.publish(self._view.owner, message_ids)

    @override
    def increment_retry(self, message_id: UUID) -> None:
        self._state.increment_retry(self._view.owner, message_id)

    @override
    def mark_abandoned(self, message_id: UUID) -> None:
        self._state.abandon(self._view.owner, message_id, None)

    @override
    def schedule_retry(self, message_id: UUID, delay_seconds: float, error: str) -> None:
        self._state.schedule_retry(self._view.owner, message_id, delay_seconds, error)

    @override
    def abandon(self, message_id: UUID, error: str) -> None:
        self._state.abandon(self._view.owner, message_id, error)

    @override
    def release(self, message_ids: Sequence[UUID]) -> None:
        self._state.release(self._view.owner, message_ids)

    @override
    def wait_for_messages(self, timeout: float) -> bool:
        # Commits since this instance's last claim count, so none is lost
        # between a claim that found nothing and the wait that follows it.
        return self._state.wait(self._view.seen_version, timeout)

    @override
    def stats(self) -> OutboxStats:
        return self._state.stats()

    @override
    def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        return self._state.list_abandoned(limit)

    @override
    def requeue_abandoned(
        self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000
    ) -> int:
        return self._state.requeue_abandoned(message_ids, limit)

    @override
    def renew_claims(self, message_ids: Sequence[UUID]) -> int:
        return self._state.renew(self._view.owner, message_ids)

    @override
    def purge_published(self, before: datetime, limit: int = 10_000) -> int:
        return self._state.purge_published(before, limit)


@Pod()
class AsyncInMemoryOutboxStorage(
    IAsyncOutboxStorage,
    IAsyncOutboxBatchAcknowledgement,
    IAsyncOutboxRetryScheduling,
    IAsyncOutboxWakeUp,
    IAsyncOutboxAdministration,
    IAsyncOutboxLiveness,
):
    """Asynchronous in-memory storage with every capability."""

    def __init__(self, state: InMemoryOutboxState, config: OutboxConfig) -> None:
        """Bind to the shared state with a new owner token."""
        self._view = _InMemoryView(state, config)
        self._state = state

    @override
    async def save(self, message: OutboxMessage) -> None:
        self._state.save(message)

    @override
    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        self._view.seen_version = self._state.version
        return self._state.claim(self._view.owner, limit, max_retry)

    @override
    async def mark_published(self, message_id: UUID) -> None:
        self._state.publish(self._view.owner, [message_id])

    @override
    async def mark_published_many(self, message_ids: Sequence[UUID]) -> None:
        self._state.publish(self._view.owner, message_ids)

    @override
    async def increment_retry(self, message_id: UUID) -> None:
        self._state.increment_retry(self._view.owner, message_id)

    @override
    async def mark_abandoned(self, message_id: UUID) -> None:
        self._state.abandon(self._view.owner, message_id, None)

    @override
    async def schedule_retry(self, message_id: UUID, delay_seconds: float, error: str) -> None:
        self._state.schedule_retry(self._view.owner, message_id, delay_seconds, error)

    @override
    async def abandon(self, message_id: UUID, error: str) -> None:
        self._state.abandon(self._view.owner, message_id, error)

    @override
    async def release(self, message_ids: Sequence[UUID]) -> None:
        self._state.release(self._view.owner, message_ids)

    @override
    async def wait_for_messages(self, timeout: float) -> bool:
        return await self._state.wait_async(self._view.seen_version, timeout)

    @override
    async def stats(self) -> OutboxStats:
        return self._state.stats()

    @override
    async def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        return self._state.list_abandoned(limit)

    @override
    async def requeue_abandoned(
        self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000
    ) -> int:
        return self._state.requeue_abandoned(message_ids, limit)

    @override
    async def renew_claims(self, message_ids: Sequence[UUID]) -> int:
        return self._state.renew(self._view.owner, message_ids)

    @override
    async def purge_published(self, before: datetime, limit: int = 10_000) -> int:
        return self._state.purge_published(before, limit)


@Pod()
class InMemoryTransaction(AbstractTransaction):
    """Synchronous transaction over `InMemoryOutboxState`."""

    def __init__(self, state: InMemoryOutboxState) -> None:
        """Bind to the shared state."""
        super().__init__(autocommit=True)
        self._state = state
        self._token: ContextVar[Token[_Pending | None] | None] = ContextVar(
            f"spakky_outbox_memory_sync_tx_{id(self)}", default=None
        )

    @override
    def initialize(self) -> None:
        self._token.set(self._state.begin())

    @override
    def dispose(self) -> None:
        token = self._token.get()
        if token is not None:
            self._state.end(token)

    @override
    def commit(self) -> None:
        self._state.commit()

    @override
    def rollback(self) -> None:
        self._state.rollback()


@Pod()
class AsyncInMemoryTransaction(AbstractAsyncTransaction):
    """Asynchronous transaction over `InMemoryOutboxState`."""

    def __init__(self, state: InMemoryOutboxState) -> None:
        """Bind to the shared state."""
        super().__init__(autocommit=True)
        self._state = state
        self._token: ContextVar[Token[_Pending | None] | None] = ContextVar(
            f"spakky_outbox_memory_async_tx_{id(self)}", default=None
        )

    @override
    async def initialize(self) -> None:
        self._token.set(self._state.begin())

    @override
    async def dispose(self) -> None:
        token = self._token.get()
        if token is not None:
            self._state.end(token)

    @override
    async def commit(self) -> None:
        self._state.commit()

    @override
    async def rollback(self) -> None:
        self._state.rollback()


class InMemoryOutboxHarness(AbstractOutboxHarness):
    """Conformance harness for the in-memory reference, on a manual clock."""

    name = "in-memory"
    capabilities = frozenset(Capability)
    claim_timeout_seconds = 3.0
    claim_lease_seconds = 1.0

    def __init__(self) -> None:
        """Create a fresh state on a manual clock."""
        self.state = InMemoryOutboxState()
        self.clock = ManualClock()
        self.state.clock = self.clock
        self._config = OutboxConfig().model_copy(
            update={
                "claim_timeout_seconds": self.claim_timeout_seconds,
                "claim_lease_seconds": self.claim_lease_seconds,
            }
        )

    @override
    def new_storage(self) -> AsyncInMemoryOutboxStorage:
        return AsyncInMemoryOutboxStorage(self.state, self._config)

    @override
    def new_sync_storage(self) -> InMemoryOutboxStorage:
        return InMemoryOutboxStorage(self.state, self._config)

    @override
    async def write(
        self,
        messages: Sequence[OutboxMessage],
        *,
        commit: bool = True,
        business_key: str = "business",
    ) -> None:
        storage = self.new_storage()
        with self.state.transaction(commit=commit):
            self.state.put_business(business_key, True)
            for message in messages:
                await storage.save(message)

    @override
    def write_sync(
        self,
        messages: Sequence[OutboxMessage],
        *,
        commit: bool = True,
        business_key: str = "business",
    ) -> None:
        storage = self.new_sync_storage()
        with self.state.transaction(commit=commit):
            self.state.put_business(business_key, True)
            for message in messages:
                storage.save(message)

    @override
    async def business_record_exists(self, business_key: str) -> bool:
        return business_key in self.state.business

    @override
    async def raw_records(self) -> list[RawOutboxRecord]:
        now = self.clock()
        return [
            RawOutboxRecord(
                id=r.message.id,
                event_name=r.message.event_name,
                payload=r.message.payload,
                headers=dict(r.message.headers),
                partition_key=r.message.partition_key,
                retry_count=r.retry_count,
                claimed=r.claimed_by is not None and r.claimed_at is not None and r.claimed_at <= now,
                published=r.published_at is not None,
                abandoned=r.abandoned_at is not None,
                last_error=r.last_error,
                created_at=r.message.created_at,
            )
            for r in self.state.records.values()
        ]

    @override
    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await asyncio.sleep(0)
