"""Outbox storage port and its optional capabilities.

The four abstract methods are the 6.x contract and ``mark_abandoned`` the 8.5
one; storages written against either keep working. Everything else is an
optional capability, a small separate interface the relay and the tools detect
with ``isinstance`` and fall back from when it is absent.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import OutboxStats


class IOutboxStorage(ABC):
    """Synchronous outbox message storage abstraction."""

    @abstractmethod
    def save(self, message: OutboxMessage) -> None:
        """Save message within the current transaction."""

    @abstractmethod
    def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        """Claim up to ``limit`` unpublished messages for this instance, oldest first.

        A claim is a lease: no other instance receives the message until it is
        acknowledged or the claim times out. A message with a partition key is
        only handed out together with its key's oldest message that is neither
        published nor abandoned, so one key is never relayed by two instances.
        Messages whose ``retry_count`` reached ``max_retry`` are not returned.
        """

    @abstractmethod
    def mark_published(self, message_id: UUID) -> None:
        """Mark a message as published."""

    @abstractmethod
    def increment_retry(self, message_id: UUID) -> None:
        """Increment the retry count of a message."""

    def mark_abandoned(self, message_id: UUID) -> None:
        """Record that the relay gave up on a message after exhausting retries.

        The default spends the message's last retry, so it is never fetched
        again; storages that can should override it to keep the message
        readable with ``abandoned_at`` set.
        """
        self.increment_retry(message_id)


class IAsyncOutboxStorage(ABC):
    """Asynchronous outbox message storage abstraction."""

    @abstractmethod
    async def save(self, message: OutboxMessage) -> None:
        """Save message within the current transaction."""

    @abstractmethod
    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        """Claim up to ``limit`` unpublished messages for this instance, oldest first.

        See `IOutboxStorage.fetch_pending` for the claim and ordering rules.
        """

    @abstractmethod
    async def mark_published(self, message_id: UUID) -> None:
        """Mark a message as published."""

    @abstractmethod
    async def increment_retry(self, message_id: UUID) -> None:
        """Increment the retry count of a message."""

    async def mark_abandoned(self, message_id: UUID) -> None:
        """Record that the relay gave up on a message after exhausting retries.

        The default spends the message's last retry, so it is never fetched
        again; storages that can should override it to keep the message
        readable with ``abandoned_at`` set.
        """
        await self.increment_retry(message_id)


class IOutboxBatchAcknowledgement(ABC):
    """Capability: acknowledge a whole batch in one round trip (sync)."""

    @abstractmethod
    def mark_published_many(self, message_ids: Sequence[UUID]) -> None:
        """Mark every message this instance still holds among ``message_ids`` published."""


class IAsyncOutboxBatchAcknowledgement(ABC):
    """Capability: acknowledge a whole batch in one round trip (async)."""

    @abstractmethod
    async def mark_published_many(self, message_ids: Sequence[UUID]) -> None:
        """Mark every message this instance still holds among ``message_ids`` published."""


class IOutboxRetryScheduling(ABC):
    """Capability: release claims at once and schedule retries (sync)."""

    @abstractmethod
    def schedule_retry(self, message_id: UUID, delay_seconds: float, error: str) -> None:
        """Spend one retry, keep ``error``, and make the message claimable after ``delay_seconds``."""

    @abstractmethod
    def abandon(self, message_id: UUID, error: str) -> None:
        """Abandon the message, keeping ``error`` as the reason."""

    @abstractmethod
    def release(self, message_ids: Sequence[UUID]) -> None:
        """Give up this instance's claims without spending any retry budget."""


class IAsyncOutboxRetryScheduling(ABC):
    """Capability: release claims at once and schedule retries (async)."""

    @abstractmethod
    async def schedule_retry(
        self, message_id: UUID, delay_seconds: float, error: str
    ) -> None:
        """Spend one retry, keep ``error``, and make the message claimable after ``delay_seconds``."""

    @abstractmethod
    async def abandon(self, message_id: UUID, error: str) -> None:
        """Abandon the message, keeping ``error`` as the reason."""

    @abstractmethod
    async def release(self, message_ids: Sequence[UUID]) -> None:
        """Give up this instance's claims without spending any retry budget."""


class IOutboxWakeUp(ABC):
    """Capability: block until new messages may be claimable (sync)."""

    @abstractmethod
    def wait_for_messages(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when woken by a committed save.

        A wake-up is a hint, never a guarantee: the relay polls anyway.
        """

    def close_wake_up(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what waiting holds (e.g. a LISTEN connection); the relay calls it on stop."""


class IAsyncOutboxWakeUp(ABC):
    """Capability: wait until new messages may be claimable (async)."""

    @abstractmethod
    async def wait_for_messages(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when woken by a committed save.

        A wake-up is a hint, never a guarantee: the relay polls anyway.
        """

    async def close_wake_up(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what waiting holds (e.g. a LISTEN connection); the relay calls it on stop."""


class IOutboxAdministration(ABC):
    """Capability: inspect and repair an outbox (sync)."""

    @abstractmethod
    def stats(self) -> OutboxStats:
        """Count messages by state and measure the oldest pending one."""

    @abstractmethod
    def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        """Return up to ``limit`` abandoned messages, oldest first, with their last error."""

    @abstractmethod
    def requeue_abandoned(self, message_ids: Sequence[UUID] | None = None) -> int:
        """Make abandoned messages pending again with a fresh budget; None means all.

        Returns:
            How many messages were requeued.
        """

    @abstractmethod
    def purge_published(self, before: datetime, limit: int = 10_000) -> int:
        """Delete up to ``limit`` messages published before ``before``.

        Returns:
            How many were deleted; call again until it returns less than ``limit``.
        """


class IAsyncOutboxAdministration(ABC):
    """Capability: inspect and repair an outbox (async)."""

    @abstractmethod
    async def stats(self) -> OutboxStats:
        """Count messages by state and measure the oldest pending one."""

    @abstractmethod
    async def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        """Return up to ``limit`` abandoned messages, oldest first, with their last error."""

    @abstractmethod
    async def requeue_abandoned(
        self, message_ids: Sequence[UUID] | None = None
    ) -> int:
        """Make abandoned messages pending again with a fresh budget; None means all.

        Returns:
            How many messages were requeued.
        """

    @abstractmethod
    async def purge_published(self, before: datetime, limit: int = 10_000) -> int:
        """Delete up to ``limit`` messages published before ``before``.

        Returns:
            How many were deleted; call again until it returns less than ``limit``.
        """
