# Sync twin generated from packages/spakky-outbox/src/spakky/outbox/ports/async_inbox.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): ef70cb278b4b95857843b21ac5c69021028e65d3c170647613d3bf78f1f0430f
"""Sync inbox storage port.

Import the ports from `spakky.outbox.ports.inbox`, which holds both flavours
and tells the two modes (transactional, lease) apart.
"""

from abc import ABC, abstractmethod
from datetime import datetime

from spakky.outbox.ports.inbox_records import InboxLease, InboxStats


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
