"""The contract between the conformance suite and a storage backend under test."""

import asyncio
import contextvars
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.figures import RelayFigures
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.error import AbstractOutboxDetailedError
from spakky.outbox.ports import storage as ports


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
    RELAY_FIGURES = "relay_figures"
    """``write_relay_figures`` / ``relay_figures``: the relays' windows, bounded reads, 24 h retention."""


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
    Capability.BATCH_ACKNOWLEDGEMENT: CapabilityPorts(ports.IAsyncOutboxBatchAcknowledgement, ports.IOutboxBatchAcknowledgement),
    Capability.RETRY_SCHEDULING: CapabilityPorts(ports.IAsyncOutboxRetryScheduling, ports.IOutboxRetryScheduling),
    Capability.WAKE_UP: CapabilityPorts(ports.IAsyncOutboxWakeUp, ports.IOutboxWakeUp),
    Capability.ADMINISTRATION: CapabilityPorts(ports.IAsyncOutboxAdministration, ports.IOutboxAdministration),
    Capability.LIVENESS: CapabilityPorts(ports.IAsyncOutboxLiveness, ports.IOutboxLiveness),
    Capability.RELAY_FIGURES: CapabilityPorts(ports.IAsyncOutboxRelayFigures, ports.IOutboxRelayFigures),
}
"""The one capability table: the port of each capability a storage implements to declare it.

The flavours themselves (``ASYNC_API``, ``SYNC_API``) are the base ports; the
capabilities that are rules about claims rather than methods (partition
ordering, key spreading, byte budget) have no port of their own.
"""


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
    """Raised inside a business transaction to make it roll back, as a failing use case would."""


class CapabilityNotDeclaredError(AbstractOutboxDetailedError):
    """Raised when the suite asks a harness for something it did not declare."""

    message = "The harness does not declare this capability"


class AbstractOutboxHarness(ABC):
    """One fresh, empty, isolated outbox (own table / key prefix) for one test.

    A backend's ``conftest.py`` provides an ``outbox_harness`` fixture that
    yields a subclass instance and calls `drop` afterwards. Storages the
    harness creates must use `claim_timeout_seconds` as their claim timeout
    and, with ``Capability.LIVENESS``, `claim_lease_seconds` as their lease
    (`outbox_config` carries both). A harness opens its backend's business
    transaction (`business_transaction`, `business_transaction_sync`); `write`
    and `write_sync`, which the suite calls, save the messages inside it.
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
    def new_storage(self) -> ports.IAsyncOutboxStorage:
        """Return a new storage instance standing for one relay process."""

    def new_sync_storage(self) -> ports.IOutboxStorage:
        """Return a new synchronous storage instance (``SYNC_API`` only)."""
        raise CapabilityNotDeclaredError(Capability.SYNC_API)

    def outbox_config(self) -> OutboxConfig:
        """The settings of every storage the harness creates: the defaults with its claim timings and byte budget."""
        timings = {"claim_timeout_seconds": self.claim_timeout_seconds, "claim_lease_seconds": self.claim_lease_seconds}
        return OutboxConfig().model_copy(update=timings | {"batch_max_bytes": self.batch_max_bytes})

    def business_transaction(self, business_key: str) -> AbstractAsyncContextManager[object]:
        """Open the business transaction a ``@Transactional()`` use case opens, writing the record ``business_key``.

        `write` saves its messages inside it and ends it with an exception to
        roll it back. One test may write the same ``business_key`` several
        times, so the business store must accept repeats (no unique
        constraint on the key). A harness implements this, or `write` itself.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither business_transaction nor write")

    def business_transaction_sync(self, business_key: str) -> AbstractContextManager[object]:
        """`business_transaction` through the sync port, for `write_sync` (``SYNC_API`` only)."""
        raise CapabilityNotDeclaredError(Capability.SYNC_API)

    async def write(self, messages: Sequence[OutboxMessage], *, commit: bool = True, business_key: str = "business") -> None:
        """In one business transaction, write a business record and save ``messages``.

        The record named ``business_key`` and every ``save`` share the
        transaction (`business_transaction`); ``commit=False`` rolls it back.
        ``save`` goes through a storage instance, exactly as the outbox bus
        calls it. The write runs in a fresh context, as a new request does (a
        session scoped to the context is its own).
        """
        storage = self.new_storage()

        async def in_transaction() -> None:
            try:
                async with self.business_transaction(business_key):
                    for message in messages:
                        await storage.save(message)
                    if not commit:
                        raise _RollbackRequestedError
            except _RollbackRequestedError:
                pass

        await asyncio.create_task(in_transaction(), context=contextvars.Context())

    def write_sync(self, messages: Sequence[OutboxMessage], *, commit: bool = True, business_key: str = "business") -> None:
        """Synchronous `write` through the sync port and `business_transaction_sync` (``SYNC_API`` only)."""
        storage = self.new_sync_storage()

        def in_transaction() -> None:
            try:
                with self.business_transaction_sync(business_key):
                    for message in messages:
                        storage.save(message)
                    if not commit:
                        raise _RollbackRequestedError
            except _RollbackRequestedError:
                pass

        contextvars.Context().run(in_transaction)

    @abstractmethod
    async def business_record_exists(self, business_key: str) -> bool:
        """Backdoor: whether the business record was committed."""

    @abstractmethod
    async def raw_records(self) -> list[RawOutboxRecord]:
        """Backdoor: every stored message, read from raw backend state."""

    async def raw_relay_figures(self) -> list[RelayFigures]:
        """Backdoor: every relay window stored, read from raw backend state (``RELAY_FIGURES`` only)."""
        raise CapabilityNotDeclaredError(Capability.RELAY_FIGURES)

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
