# Sync twin generated from packages/spakky-outbox/src/spakky/outbox/ports/async_storage.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): 7c9a641ba2341a9271868716ca0eecfc350498816526786d2e741fcb2d1859a4
"""Sync outbox storage port and its optional capabilities.

The four abstract methods are the 6.x contract and ``mark_abandoned`` the 8.5
one; storages written against either keep working. Everything else is an
optional capability, a small separate interface the relay and the tools detect
with ``isinstance`` and fall back from when it is absent.

Per-key order is a capability too (``Capability.PARTITION_ORDERING`` in the
conformance suite, declared by every storage of this repository): a storage
written against the 6.x/8.5 docs may hand out a key's messages out of order,
and the relay then only keeps order within one batch.

Import the ports from `spakky.outbox.ports.storage`, which holds both flavours.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime, timedelta
from uuid import UUID

from spakky.outbox.common.figures import RELAY_FIGURES_READ_LIMIT, RelayFigures
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import (
    KeyHead,
    MessageDetail,
    OutboxStats,
    OutboxTarget,
    RelayClaims,
)
from spakky.outbox.error import (
    OutboxKeyHeadsUnsupportedError,
    OutboxMessageLookupUnsupportedError,
    OutboxRelayClaimsUnsupportedError,
)


class IOutboxStorage(ABC):
    """Synchronous outbox message storage abstraction."""

    @abstractmethod
    def save(self, message: OutboxMessage) -> None:
        """Save message within the current transaction."""

    @abstractmethod
    def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        """Claim up to ``limit`` unpublished messages for this instance, oldest first.

        A claim is a lease: no other instance receives the message until it is
        acknowledged, released, or the claim ends (``claim_timeout_seconds``
        after the claim, or sooner with `IOutboxLiveness`). Messages whose
        ``retry_count`` reached ``max_retry`` are never returned.

        With partition ordering (a capability every storage of this repository
        has; 6.x/8.5-style storages may lack it), a message with a partition
        key is only handed out together with its key's oldest message that is
        neither published nor abandoned, so one key is never relayed by two
        instances or out of order. Storages that also spread keys take runs of
        a few keys rather than the head of every key, leaving other keys for
        other instances.

        A stored message that cannot be decoded is not returned: the storage
        abandons it with the decoding error as its reason, so one damaged
        record never stalls a relay.
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


class IOutboxBatchAcknowledgement(ABC):
    """Capability: acknowledge a whole batch in one round trip (sync)."""

    @abstractmethod
    def mark_published_many(self, message_ids: Sequence[UUID]) -> int | None:
        """Mark every message this instance still holds among ``message_ids`` published.

        Fenced: a message whose claim lapsed and was taken over is left to its
        new owner.

        Returns:
            How many were marked (fewer than given: the rest were fenced off),
            or None when the storage cannot tell (storages written before the
            count; the relay then takes every message as marked).
        """


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


class IOutboxWakeUp(ABC):
    """Capability: wait until new messages may be claimable (sync)."""

    @abstractmethod
    def wait_for_messages(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when woken by a committed save.

        A wake-up is a hint, never a guarantee: the relay polls anyway.
        """

    def close_wake_up(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what waiting holds (e.g. a LISTEN connection); the relay calls it on stop."""


class IOutboxAdministration(ABC):
    """Capability: inspect and repair an outbox (sync)."""

    def target(self) -> OutboxTarget:
        """Say where this outbox lives (backend, URL without password, table or prefix).

        The ``spakky-outbox`` command prints it before changing anything;
        storages override the default, which only names the class.
        """
        return OutboxTarget(backend=type(self).__name__, location="unknown")

    @abstractmethod
    def stats(self, timeout_seconds: float | None = None) -> OutboxStats:
        """Count messages by state and measure the oldest pending one, cheaply.

        It runs on every health probe and metrics scrape, so it must cost
        O(1)-ish whatever the table size: a storage that counts by reading
        index entries stops at `STATS_COUNT_CAP` and says so
        (`OutboxStats.count_cap`), and never scans delivered messages.

        Args:
            timeout_seconds: How long the read may run on the server; past
                it the server stops it (a probe that gave up leaves nothing
                running). None: `DEFAULT_STATS_TIMEOUT_SECONDS`.
        """

    @abstractmethod
    def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        """Return up to ``limit`` abandoned messages, oldest first, with their last error.

        A listing is for operators: a storage may leave the payload and headers
        out (``b""`` and ``{}``) rather than read them for every listed message
        (Redis does). Callers identify listed messages by ``id``.
        """

    @abstractmethod
    def requeue_abandoned(
        self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000
    ) -> int:
        """Make up to ``limit`` abandoned messages pending again with a fresh budget.

        ``message_ids`` picks which (None: the oldest abandoned ones). One call
        costs O(``limit``) whatever the number of abandoned messages, so an
        operator's "requeue everything" never blocks the store for long: call
        again until it returns less than ``limit``. A requeued keyed message
        takes its original place in its key's order.

        Returns:
            How many messages were requeued.
        """

    def key_heads(self, limit: int = 50, after: UUID | None = None) -> list[KeyHead]:
        """Return the heads of up to ``limit`` partition keys, oldest head first, with what holds each.

        A key's head is its oldest message neither published nor abandoned:
        while a relay holds it (a live claim) or it waits for a retry, the
        rest of the key waits too. ``after`` is the last head of the previous
        page: the page goes on with the heads saved after it. One call looks
        at no more than `KEY_HEADS_WINDOW` keys or undelivered messages, so it
        costs O(window) whatever the backlog; past that many the page holds
        the oldest heads among those looked at. The claim and the retry time
        are given only while they hold, by the storage's clock.

        The default (storages written before this method) raises
        `OutboxKeyHeadsUnsupportedError`.
        """
        raise OutboxKeyHeadsUnsupportedError(type(self).__name__)

    def get_message(self, message_id: UUID) -> MessageDetail | None:
        """Return one message in whatever state, with its payload and headers, and what holds it now.

        For an operator looking at one message (the console's detail page):
        one lookup by id, O(1) whatever the backlog. The claim and the retry
        time are given only while they hold, by the storage's clock, and
        only while the message is neither published nor abandoned.

        Returns:
            The message, or None when no message has that id (never stored,
            or purged).

        The default (storages written before this method) raises
        `OutboxMessageLookupUnsupportedError`.
        """
        raise OutboxMessageLookupUnsupportedError(type(self).__name__)

    def relay_claims(self) -> list[RelayClaims]:
        """Return each relay instance holding live claims now, how many messages it holds and until when.

        For operators (the console's overview): the live claims among the
        oldest `RELAY_CLAIMS_WINDOW` pending messages of each lane (keyless,
        keyed), grouped by owner token, most held first; O(window) whatever
        the backlog. Claims are judged by the storage's clock; an ended or
        released claim is no one's.

        The default (storages that cannot tell, or written before this
        method) raises `OutboxRelayClaimsUnsupportedError`.
        """
        raise OutboxRelayClaimsUnsupportedError(type(self).__name__)

    @abstractmethod
    def purge_published(self, before: datetime | timedelta, limit: int = 10_000) -> int:
        """Delete up to ``limit`` messages published before ``before``.

        Args:
            before: A moment (an operator's cutoff), or an age: a `timedelta`
                deletes what was published longer ago than that *by the
                storage's own clock* (the clock its ``published_at`` comes
                from, as leases use it), so a relay or host whose clock runs
                ahead never purges messages younger than the retention.
            limit: Most messages deleted by this call.

        Returns:
            How many were deleted; call again until it returns less than ``limit``.
        """


class IOutboxLiveness(ABC):
    """Capability: a claim lives only while its relay renews it (sync).

    A storage with liveness gives every claim a lease of
    ``OutboxConfig.claim_lease_seconds`` on its own clock, counted from the
    claim or its last renewal. A claim ends at whichever comes first: the lease
    lapsing unrenewed (a dead relay: its messages are free within seconds) or
    ``claim_timeout_seconds`` after the claim (the 8.5 bound, for a relay that
    is alive but stuck). Without this capability a claim lasts
    ``claim_timeout_seconds``. The relay renews every third of the lease while
    it works on a batch.
    """

    @abstractmethod
    def renew_claims(self, message_ids: Sequence[UUID]) -> int:
        """Extend the lease of each message among ``message_ids`` this instance still holds.

        Fenced like every acknowledgement: a claim that lapsed and was taken
        over, or that is older than ``claim_timeout_seconds``, is not renewed.

        Returns:
            How many of ``message_ids`` this instance still holds; fewer than
            given means the rest were lost to another instance or to time.
        """


class IOutboxRelayFigures(ABC):
    """Capability: keep the relays' own figures, a window per relay every few seconds (sync).

    Each relay writes what it delivered in the window just ended
    (`RelayFigures`); operators read every relay's windows back (the console's
    delivery rate and commit-to-send chart). Windows are kept
    `RELAY_FIGURES_RETENTION` (24 h): a write deletes those that ended that
    long before the window it writes.
    """

    @abstractmethod
    def write_relay_figures(self, figures: RelayFigures) -> None:
        """Store one window and delete the windows past retention, outside any business transaction."""

    @abstractmethod
    def relay_figures(self, since: datetime, limit: int = RELAY_FIGURES_READ_LIMIT) -> list[RelayFigures]:
        """Return up to ``limit`` windows of every relay that ended after ``since``, the latest end first.

        One read along an index of the windows' ends: O(``limit``) whatever
        the number kept.
        """


class IOutboxFullStorage(
    IOutboxStorage,
    IOutboxBatchAcknowledgement,
    IOutboxRetryScheduling,
    IOutboxWakeUp,
    IOutboxAdministration,
    IOutboxLiveness,
    IOutboxRelayFigures,
):
    """The sync port with every optional capability: one base for a storage that has them all."""
