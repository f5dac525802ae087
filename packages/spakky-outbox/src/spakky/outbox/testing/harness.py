"""The contract between the conformance suite and a storage backend under test."""

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.error import AbstractSpakkyOutboxError
from spakky.outbox.ports.storage import IAsyncOutboxStorage, IOutboxStorage


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


BASE_CAPABILITIES: frozenset[Capability] = frozenset({Capability.ASYNC_API})
"""Every backend must declare and pass these."""
EXTENDED_CAPABILITIES: frozenset[Capability] = frozenset(Capability) - BASE_CAPABILITIES
"""Optional capabilities; tests for undeclared ones are skipped with the name."""


class CapabilityNotDeclaredError(AbstractSpakkyOutboxError):
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


class AbstractOutboxHarness(ABC):
    """One fresh, empty, isolated outbox (own table / key prefix) for one test.

    A backend's ``conftest.py`` provides an ``outbox_harness`` fixture that
    yields a subclass instance and cleans it up afterwards. Storages the
    harness creates must use `claim_timeout_seconds` as their claim timeout.
    """

    name: str = "storage"
    """Shown in the conformance summary."""
    capabilities: frozenset[Capability] = BASE_CAPABILITIES
    """What this backend declares."""
    claim_timeout_seconds: float = 1.0
    """Claim timeout of every storage the harness creates; keep it short."""

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
        storage instance, exactly as the outbox bus calls it.
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

    async def assert_no_leaks(self) -> None:
        """Fail when a connection or session opened during the test is still out."""
        return


async def wait_until[T](
    harness: AbstractOutboxHarness,
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    timeout: float,
    step: float = 0.05,
) -> T:
    """Re-run ``probe`` until ``accept`` holds, advancing the harness clock, with a deadline."""
    waited = 0.0
    while True:
        value = await probe()
        if accept(value) or waited >= timeout:
            return value
        await harness.advance(step)
        waited += step
