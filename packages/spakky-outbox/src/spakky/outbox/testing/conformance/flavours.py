"""Every rule on both flavours: the async storage, and the sync storage through the same tests.

The suite's ``outbox_harness`` fixture overrides the backend's: it runs each
test once on the harness as given (``async``) and once on `SyncFlavourHarness`
(``sync``), whose storages are the backend's synchronous ones behind a thin
asyncio face (`threaded`: every call in a worker thread, as a sync relay runs
them) and whose writes go through ``write_sync``. The rules are written once,
against the async port; what they exercise on the ``sync`` run is the sync
storage. A harness without ``Capability.SYNC_API`` skips its ``sync`` run.
"""

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import cast, override
from uuid import UUID

import pytest
from spakky.outbox.common.figures import RELAY_FIGURES_READ_LIMIT, RelayFigures
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import (
    KeyHead,
    MessageDetail,
    OutboxStats,
    OutboxTarget,
    RelayClaims,
)
from spakky.outbox.ports.storage import (
    IAsyncOutboxStorage,
    IOutboxAdministration,
    IOutboxBatchAcknowledgement,
    IOutboxLiveness,
    IOutboxRelayFigures,
    IOutboxRetryScheduling,
    IOutboxStorage,
    IOutboxWakeUp,
)
from spakky.outbox.testing.harness import (
    CAPABILITY_PORTS,
    SYNC_SHARED,
    AbstractOutboxHarness,
    Capability,
    RawOutboxRecord,
)
from spakky.outbox.testing.plugin import BACKEND, FLAVOUR


class Flavour(StrEnum):
    """Which port of the backend a suite test runs on."""

    ASYNC = "async"
    SYNC = "sync"


class _ThreadedOutboxStorage(IAsyncOutboxStorage):
    """The async port over a sync storage: each call runs in a worker thread.

    It carries every capability's methods; `threaded` makes it an instance of
    exactly the async ports whose sync twins the storage implements, so the
    suite's ``isinstance`` checks see what the sync storage declares.
    """

    def __init__(self, storage: IOutboxStorage) -> None:
        self.sync_storage = storage

    @override
    async def save(self, message: OutboxMessage) -> None:
        await asyncio.to_thread(self.sync_storage.save, message)

    @override
    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        return await asyncio.to_thread(self.sync_storage.fetch_pending, limit, max_retry)

    @override
    async def mark_published(self, message_id: UUID) -> None:
        await asyncio.to_thread(self.sync_storage.mark_published, message_id)

    @override
    async def increment_retry(self, message_id: UUID) -> None:
        await asyncio.to_thread(self.sync_storage.increment_retry, message_id)

    @override
    async def mark_abandoned(self, message_id: UUID) -> None:
        await asyncio.to_thread(self.sync_storage.mark_abandoned, message_id)

    async def mark_published_many(self, message_ids: Sequence[UUID]) -> int | None:
        storage = cast(IOutboxBatchAcknowledgement, self.sync_storage)
        return await asyncio.to_thread(storage.mark_published_many, message_ids)

    async def schedule_retry(self, message_id: UUID, delay_seconds: float, error: str) -> None:
        storage = cast(IOutboxRetryScheduling, self.sync_storage)
        await asyncio.to_thread(storage.schedule_retry, message_id, delay_seconds, error)

    async def abandon(self, message_id: UUID, error: str) -> None:
        await asyncio.to_thread(cast(IOutboxRetryScheduling, self.sync_storage).abandon, message_id, error)

    async def release(self, message_ids: Sequence[UUID]) -> None:
        await asyncio.to_thread(cast(IOutboxRetryScheduling, self.sync_storage).release, message_ids)

    async def wait_for_messages(self, timeout: float) -> bool:
        return await asyncio.to_thread(cast(IOutboxWakeUp, self.sync_storage).wait_for_messages, timeout)

    async def close_wake_up(self) -> None:
        await asyncio.to_thread(cast(IOutboxWakeUp, self.sync_storage).close_wake_up)

    def target(self) -> OutboxTarget:
        return cast(IOutboxAdministration, self.sync_storage).target()

    async def stats(self, timeout_seconds: float | None = None) -> OutboxStats:
        return await asyncio.to_thread(cast(IOutboxAdministration, self.sync_storage).stats, timeout_seconds)

    async def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        return await asyncio.to_thread(cast(IOutboxAdministration, self.sync_storage).list_abandoned, limit)

    async def requeue_abandoned(self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000) -> int:
        storage = cast(IOutboxAdministration, self.sync_storage)
        return await asyncio.to_thread(storage.requeue_abandoned, message_ids, limit)

    async def key_heads(self, limit: int = 50, after: UUID | None = None) -> list[KeyHead]:
        return await asyncio.to_thread(cast(IOutboxAdministration, self.sync_storage).key_heads, limit, after)

    async def get_message(self, message_id: UUID) -> MessageDetail | None:
        return await asyncio.to_thread(cast(IOutboxAdministration, self.sync_storage).get_message, message_id)

    async def relay_claims(self) -> list[RelayClaims]:
        return await asyncio.to_thread(cast(IOutboxAdministration, self.sync_storage).relay_claims)

    async def purge_published(self, before: datetime | timedelta, limit: int = 10_000) -> int:
        storage = cast(IOutboxAdministration, self.sync_storage)
        return await asyncio.to_thread(storage.purge_published, before, limit)

    async def renew_claims(self, message_ids: Sequence[UUID]) -> int:
        return await asyncio.to_thread(cast(IOutboxLiveness, self.sync_storage).renew_claims, message_ids)

    async def write_relay_figures(self, figures: RelayFigures) -> None:
        await asyncio.to_thread(cast(IOutboxRelayFigures, self.sync_storage).write_relay_figures, figures)

    async def relay_figures(self, since: datetime, limit: int = RELAY_FIGURES_READ_LIMIT) -> list[RelayFigures]:
        return await asyncio.to_thread(cast(IOutboxRelayFigures, self.sync_storage).relay_figures, since, limit)


def threaded(storage: IOutboxStorage) -> IAsyncOutboxStorage:
    """``storage`` behind the async port, an instance of the async twin of each capability port it implements."""
    ports = tuple(p.async_port for p in CAPABILITY_PORTS.values() if isinstance(storage, p.sync_port))
    face = type(f"Threaded{type(storage).__name__}", (_ThreadedOutboxStorage, *ports), {})
    return cast(IAsyncOutboxStorage, face(storage))


class SyncFlavourHarness(AbstractOutboxHarness):
    """The backend's harness with its sync storages and sync writes standing in for the async ones."""

    def __init__(self, harness: AbstractOutboxHarness) -> None:
        """Run the suite's rules through ``harness``'s synchronous port."""
        self.harness = harness
        self.name = harness.name
        self.capabilities = harness.capabilities
        self.claim_timeout_seconds = harness.claim_timeout_seconds
        self.claim_lease_seconds = harness.claim_lease_seconds
        self.batch_max_bytes = harness.batch_max_bytes

    @override
    def new_storage(self) -> IAsyncOutboxStorage:
        """A new sync storage of the backend (one relay process), behind the async port."""
        return threaded(self.harness.new_sync_storage())

    @override
    def new_sync_storage(self) -> IOutboxStorage:
        return self.harness.new_sync_storage()

    @override
    async def write(self, messages: Sequence[OutboxMessage], *, commit: bool = True, business_key: str = "business") -> None:
        """The backend's ``write_sync``, in a worker thread."""
        await asyncio.to_thread(self.harness.write_sync, messages, commit=commit, business_key=business_key)

    @override
    def write_sync(self, messages: Sequence[OutboxMessage], *, commit: bool = True, business_key: str = "business") -> None:
        self.harness.write_sync(messages, commit=commit, business_key=business_key)

    @override
    async def business_record_exists(self, business_key: str) -> bool:
        return await self.harness.business_record_exists(business_key)

    @override
    async def raw_records(self) -> list[RawOutboxRecord]:
        return await self.harness.raw_records()

    @override
    async def raw_relay_figures(self) -> list[RelayFigures]:
        return await self.harness.raw_relay_figures()

    @override
    async def advance(self, seconds: float) -> None:
        await self.harness.advance(seconds)

    @override
    async def corrupt(self, message_id: UUID) -> None:
        await self.harness.corrupt(message_id)

    @override
    async def assert_no_leaks(self) -> None:
        await self.harness.assert_no_leaks()

    @override
    async def drop(self) -> None:
        await self.harness.drop()


@pytest.fixture(params=list(Flavour), ids=str)
def outbox_flavour(request: pytest.FixtureRequest) -> Flavour:
    """Which port of the backend this run of a rule goes through."""
    flavour = cast(Flavour, request.param)
    request.node.stash[FLAVOUR] = str(flavour)
    return flavour


@pytest.fixture
def outbox_harness(
    request: pytest.FixtureRequest, outbox_flavour: Flavour, outbox_harness: AbstractOutboxHarness
) -> AbstractOutboxHarness:
    """The backend's ``outbox_harness`` for this flavour (``sync`` only with ``Capability.SYNC_API``)."""
    request.node.stash[BACKEND] = outbox_harness.name
    if outbox_flavour is Flavour.ASYNC:
        return outbox_harness
    if Capability.SYNC_API not in outbox_harness.capabilities:
        pytest.skip(f"capability not declared: {Capability.SYNC_API} (the sync flavour)")
    if outbox_harness.sync_flavour_shared_with is not None:
        pytest.skip(f"{SYNC_SHARED} {outbox_harness.sync_flavour_shared_with}'s, which runs the rules on it")
    return SyncFlavourHarness(outbox_harness)
