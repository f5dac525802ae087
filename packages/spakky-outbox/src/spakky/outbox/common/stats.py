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


@dataclass(frozen=True)
class OutboxTarget:
    """Where an outbox lives, told to operators before they change it; never a secret."""

    backend: str
    """Storage name, e.g. ``sqlalchemy``, ``redis``, ``mongodb``, ``in-memory``."""
    location: str
    """URL without password plus table, collection or key prefix."""
    defaulted: tuple[str, ...] = ()
    """Settings deciding the location that were left at their defaults (variable names)."""
