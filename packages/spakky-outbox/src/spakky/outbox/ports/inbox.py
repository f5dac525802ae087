"""Inbox storage port: the consumer side of at-least-once delivery.

An inbox keeps one record per (consumer name, message identity). A handler
made idempotent with `spakky.outbox.inbox.Idempotent` runs only when its
record is new, in one of two modes:

- transactional: `IAsyncInboxStorage.record` writes the record inside the
  handler's ``@Transactional()``, through the same session, pipeline or
  client session as the handler's business writes, so both commit or roll
  back together;
- lease: for effects outside the database, `IAsyncInboxStorage.acquire_lease`
  records the message at once with a lease, the handler runs, and
  `IAsyncInboxStorage.finish_lease` marks it done. A crash mid-handler leaves
  the lease to lapse, so the redelivery runs it again; a finished one never.

Records older than the dedup window are swept with `purge` in bounded
batches, by the consuming application itself
(`spakky.outbox.inbox.sweeper`), unless they expire on their own where the
store has TTLs (``expires_by_itself``). Sync and async ports mirror each other.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class LeaseOutcome(StrEnum):
    """What `IAsyncInboxStorage.acquire_lease` found."""

    ACQUIRED = "acquired"
    """The caller holds the lease and runs the handler."""
    DONE = "done"
    """The message was handled already: skip it."""
    BUSY = "busy"
    """Another consumer instance holds a live lease: try again after it."""


@dataclass(frozen=True)
class InboxLease:
    """The answer of `IAsyncInboxStorage.acquire_lease`."""

    outcome: LeaseOutcome
    token: str | None = None
    """Fences `finish_lease` / `release_lease`: set only when ``ACQUIRED``."""


@dataclass(frozen=True)
class InboxStats:
    """Operator-facing counts of an inbox."""

    records: int
    """Records kept (done ones and leased ones)."""
    leased: int
    """Records whose handler has not finished (a lease, live or lapsed)."""
    oldest_recorded_at: datetime | None
    """When the oldest record was written; None for an empty inbox."""


class IInboxStorage(ABC):
    """Synchronous inbox storage."""

    @abstractmethod
    def record(self, consumer: str, message_id: str) -> bool:
        """Record the message for ``consumer`` in the current transaction.

        Returns:
            True when the record is new (the handler runs); False when it is
            already there, committed (a duplicate: skip the handler). A
            concurrent transaction holding the same record either makes this
            call wait for it (SQL) or fails one of the two commits with
            `spakky.outbox.inbox.error.InboxConflictError` (optimistic
            stores), so one of them only ever commits.

        Raises:
            OutboxTransactionRequiredError: No transaction is open.
        """

    @abstractmethod
    def acquire_lease(
        self, consumer: str, message_id: str, lease_seconds: float
    ) -> InboxLease:
        """Record the message with a lease of ``lease_seconds``, committed at once.

        A lapsed lease (a consumer that crashed mid-handler) is taken over.
        """

    @abstractmethod
    def finish_lease(self, consumer: str, message_id: str, token: str) -> bool:
        """Mark the leased record done; False when the lease was taken over."""

    @abstractmethod
    def release_lease(self, consumer: str, message_id: str, token: str) -> None:
        """Drop the leased record (the handler failed), so a redelivery runs at once."""

    @abstractmethod
    def purge(self, before: datetime, limit: int = 10_000) -> int:
        """Delete up to ``limit`` records written before ``before``.

        Returns:
            How many were deleted; call again until it returns less than ``limit``.
        """

    @abstractmethod
    def stats(self) -> InboxStats:
        """Count the records and find the oldest one."""

    @abstractmethod
    def location(self) -> str:
        """Where the inbox lives (URL without password and table, collection or prefix)."""

    @property
    def expires_by_itself(self) -> bool:
        """Whether the store deletes records past the window itself (TTLs); False: they wait for `purge`."""
        return False

    def defaulted(self) -> tuple[str, ...] | None:
        """The settings naming where the inbox lives that were left at their defaults.

        ``spakky-outbox inbox purge`` refuses such a location unless told. None
        (the default): the outbox storage's settings say where the inbox lives too.
        """
        return None


class IAsyncInboxStorage(ABC):
    """Asynchronous inbox storage; see `IInboxStorage` for each rule."""

    @abstractmethod
    async def record(self, consumer: str, message_id: str) -> bool:
        """Record the message for ``consumer`` in the current transaction; True when new."""

    @abstractmethod
    async def acquire_lease(
        self, consumer: str, message_id: str, lease_seconds: float
    ) -> InboxLease:
        """Record the message with a lease of ``lease_seconds``, committed at once."""

    @abstractmethod
    async def finish_lease(self, consumer: str, message_id: str, token: str) -> bool:
        """Mark the leased record done; False when the lease was taken over."""

    @abstractmethod
    async def release_lease(self, consumer: str, message_id: str, token: str) -> None:
        """Drop the leased record (the handler failed), so a redelivery runs at once."""

    @abstractmethod
    async def purge(self, before: datetime, limit: int = 10_000) -> int:
        """Delete up to ``limit`` records written before ``before``; returns how many."""

    @abstractmethod
    async def stats(self) -> InboxStats:
        """Count the records and find the oldest one."""

    @abstractmethod
    def location(self) -> str:
        """Where the inbox lives (URL without password and table, collection or prefix)."""

    @property
    def expires_by_itself(self) -> bool:
        """Whether the store deletes records past the window itself (TTLs); False: they wait for `purge`."""
        return False

    def defaulted(self) -> tuple[str, ...] | None:
        """The settings naming where the inbox lives that were left at their defaults.

        ``spakky-outbox inbox purge`` refuses such a location unless told. None
        (the default): the outbox storage's settings say where the inbox lives too.
        """
        return None
