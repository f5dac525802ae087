"""The contract between the conformance suite and a storage backend under test."""

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.error import AbstractOutboxDetailedError
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


class Capability(StrEnum):
    """What a storage declares it supports; the suite proves each declared one."""

    ASYNC_API = "async_api"
    """The asynchronous port `IAsyncOutboxStorage` (part of the base level)."""
    SYNC_API = "sync_api"
    """The synchronous port `IOutboxStorage`."""
    BATCH_ACKNOWLEDGEMENT = "batch_acknowledgement"
    """``mark_published_many`` in one round trip."""
    RETRY_SCHEDULING = "retry_scheduling"
    """``schedule_retry`` / ``abandon`` / ``release`` instead of waiting for claim expiry."""
    WAKE_UP = "wake_up"
    """``wait_for_messages`` returns early after a committed save."""
    ADMINISTRATION = "administration"
    """Stats, list/requeue abandoned, purge published."""
    PARTITION_ORDERING = "partition_ordering"
    """A keyed message is only claimed with its key's oldest undelivered one."""
    LIVENESS = "liveness"
    """``renew_claims``: a claim lapses after a short lease unless renewed."""
    KEY_SPREADING = "key_spreading"
    """Claims of a key-heavy backlog take runs of few keys, leaving keys for others."""
    BYTE_BUDGET = "byte_budget"
    """A claim holds at most ``batch_max_bytes`` of payload (a lone larger message excepted)."""


BASE_CAPABILITIES: frozenset[Capability] = frozenset({Capability.ASYNC_API})
"""Every backend must declare and pass these."""
EXTENDED_CAPABILITIES: frozenset[Capability] = frozenset(Capability) - BASE_CAPABILITIES
"""Optional capabilities; tests for undeclared ones are skipped with the name."""


@dataclass(frozen=True)
class CapabilityPorts:
    """The interfaces a storage implements for one capability, one per flavour."""

    async_port: type
    """What the asyncio storage implements (`IAsyncOutbox...`)."""
    sync_port: type
    """What the synchronous storage implements (`IOutbox...`)."""


CAPABILITY_PORTS: Mapping[Capability, CapabilityPorts] = {
    Capability.BATCH_ACKNOWLEDGEMENT: CapabilityPorts(IAsyncOutboxBatchAcknowledgement, IOutboxBatchAcknowledgement),
    Capability.RETRY_SCHEDULING: CapabilityPorts(IAsyncOutboxRetryScheduling, IOutboxRetryScheduling),
    Capability.WAKE_UP: CapabilityPorts(IAsyncOutboxWakeUp, IOutboxWakeUp),
    Capability.ADMINISTRATION: CapabilityPorts(IAsyncOutboxAdministration, IOutboxAdministration),
    Capability.LIVENESS: CapabilityPorts(IAsyncOutboxLiveness, IOutboxLiveness),
}
"""The one capability table: the port of each capability a storage implements to declare it.

The flavours themselves (``ASYNC_API``, ``SYNC_API``) are the base ports; the
capabilities that are rules about claims rather than methods (partition
ordering, key spreading, byte budget) have no port of their own.
"""


class CapabilityNotDeclaredError(AbstractOutboxDetailedError):
    """Raised when the suite asks a harness for something it did not declare."""

    message = "The harness does not declare this capability"


@dataclass(frozen=True)
class RawOutboxRecord:
    """A stored message as the backend holds it, read without the storage's methods."""

    id: UUID
    event_name: str
    payload: bytes
    headers: dict[str, str]
    partition_key: str | None
    retry_count: int
    claimed: bool
    """True while a claim marker is set (live or expired)."""
    published: bool
    abandoned: bool
    last_error: str | None
    created_at: datetime
    """When the message was created, as stored (timezone-aware)."""


SYNC_SHARED = "the sync storage is"
"""How the skip of a sync run covered by `AbstractOutboxHarness.sync_flavour_shared_with` starts."""


class _RollbackRequestedError(Exception):
    """Raised inside a harness transaction to make it roll back, as a failing use case would."""


async def write_in_transaction[T](
    transaction: AbstractAsyncContextManager[T],
    write_business: Callable[[T], Awaitable[object]],
    storage: IAsyncOutboxStorage,
    messages: Sequence[OutboxMessage],
    *,
    commit: bool,
) -> None:
    """A harness's `AbstractOutboxHarness.write`: inside ``transaction``, the business record, then every ``save``.

    ``write_business`` gets what the transaction's ``async with`` gives. Without
    ``commit`` an error raised through the transaction rolls it back (and is
    swallowed here), the way a failing use case rolls back its own.
    """
    try:
        async with transaction as opened:
            await write_business(opened)
            for message in messages:
                await storage.save(message)
            if not commit:
                raise _RollbackRequestedError
    except _RollbackRequestedError:
        pass


def write_in_transaction_sync[T](
    transaction: AbstractContextManager[T],
    write_business: Callable[[T], object],
    storage: IOutboxStorage,
    messages: Sequence[OutboxMessage],
    *,
    commit: bool,
) -> None:
    """`write_in_transaction` for `AbstractOutboxHarness.write_sync`, through a sync transaction and storage."""
    try:
        with transaction as opened:
            write_business(opened)
            for message in messages:
                storage.save(message)
            if not commit:
                raise _RollbackRequestedError
    except _RollbackRequestedError:
        pass


class AbstractOutboxHarness(ABC):
    """One fresh, empty, isolated outbox (own table / key prefix) for one test.

    A backend's ``conftest.py`` provides an ``outbox_harness`` fixture that
    yields a subclass instance and calls `drop` afterwards. Storages the
    harness creates must use `claim_timeout_seconds` as their claim timeout
    and, with ``Capability.LIVENESS``, `claim_lease_seconds` as their lease.
    """

    name: str = "storage"
    """Shown in the conformance summary."""
    capabilities: frozenset[Capability] = BASE_CAPABILITIES
    """What this backend declares."""
    claim_timeout_seconds: float = 1.0
    """Claim timeout of every storage the harness creates; keep it short."""
    claim_lease_seconds: float | None = None
    """Claim lease of every storage the harness creates (``LIVENESS`` only).

    Must be shorter than `claim_timeout_seconds`, e.g. a lease of 1 s with a
    claim timeout of 3 s, so the suite can tell the two apart.
    """
    sync_flavour_shared_with: str | None = None
    """The name of another harness of the same suite whose sync storage is this one's
    too (the same sync driver on the same server: two async drivers of one database
    share one sync twin). Its sync flavour is skipped here, so the rules run on that
    sync storage once; the summary says so."""
    batch_max_bytes: int = 64 * 1024
    """Payload byte budget (``OutboxConfig.batch_max_bytes``) of every storage the
    harness creates (``BYTE_BUDGET`` only); the suite sizes its payloads from it,
    so keep it small."""

    @abstractmethod
    def new_storage(self) -> IAsyncOutboxStorage:
        """Return a new storage instance standing for one relay process."""

    def new_sync_storage(self) -> IOutboxStorage:
        """Return a new synchronous storage instance (``SYNC_API`` only)."""
        raise CapabilityNotDeclaredError(Capability.SYNC_API)

    @abstractmethod
    async def write(
        self,
        messages: Sequence[OutboxMessage],
        *,
        commit: bool = True,
        business_key: str = "business",
    ) -> None:
        """In one business transaction, write a business record and save ``messages``.

        The record named ``business_key`` and every ``save`` share the
        transaction; ``commit=False`` rolls it back. ``save`` goes through a
        storage instance, exactly as the outbox bus calls it. One test may
        write the same ``business_key`` several times, so the business store
        must accept repeats (no unique constraint on the key).
        """

    def write_sync(
        self,
        messages: Sequence[OutboxMessage],
        *,
        commit: bool = True,
        business_key: str = "business",
    ) -> None:
        """Synchronous `write` through the sync port (``SYNC_API`` only)."""
        raise CapabilityNotDeclaredError(Capability.SYNC_API)

    @abstractmethod
    async def business_record_exists(self, business_key: str) -> bool:
        """Backdoor: whether the business record was committed."""

    @abstractmethod
    async def raw_records(self) -> list[RawOutboxRecord]:
        """Backdoor: every stored message, read from raw backend state."""

    async def save_outside_transaction(self, message: OutboxMessage) -> bool:
        """Call ``save`` with no transaction open.

        Returns:
            True when the backend documents and performs a standalone write;
            the suite then checks the message is stored. A backend that refuses
            must raise an `AbstractSpakkyOutboxError` subclass here.
        """
        await self.new_storage().save(message)
        return True

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on the clock the backend's claims use.

        Server-clock backends keep this default (real time passes); a backend
        with an injected clock moves it instead.
        """
        await asyncio.sleep(seconds)

    async def corrupt(self, message_id: UUID) -> None:
        """Backdoor: damage the stored message so the storage cannot decode it.

        Optional: the default raises `NotImplementedError` and the suite skips
        the test of undecodable messages, saying so.
        """
        raise NotImplementedError

    async def assert_no_leaks(self) -> None:
        """Fail when a connection or session opened during the test is still out.

        Raise `AssertionError` naming what leaked; the summary reports it as a leak.
        """
        return

    async def drop(self) -> None:
        """Remove what the harness created (table, collection, keys); the fixture calls it last."""
        return
