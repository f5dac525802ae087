"""Operator-facing snapshot of an outbox's state."""

from dataclasses import dataclass


@dataclass(frozen=True)
class OutboxStats:
    """Counts of messages by state, and how old the oldest pending one is."""

    pending: int
    """Messages neither published nor abandoned (claimed ones included)."""
    claimed: int
    """Pending messages currently held by a live claim."""
    published: int
    """Messages delivered and not yet purged."""
    abandoned: int
    """Messages the relay gave up on; they stay until requeued or purged."""
    oldest_pending_age_seconds: float | None
    """Age of the oldest pending message; None when nothing is pending."""
