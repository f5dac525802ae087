"""Outbox message model."""

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True)
class OutboxMessage:
    """Persistence-agnostic Outbox message model.

    Field order is part of the public contract: storages written for 6.x and
    8.5 construct messages positionally, so new fields are only ever appended.
    """

    id: UUID
    event_name: str
    payload: bytes
    headers: dict[str, str]
    created_at: datetime
    published_at: datetime | None = field(default=None)
    retry_count: int = field(default=0)
    claimed_at: datetime | None = field(default=None)
    partition_key: str | None = field(default=None)
    """Key pinning the message to one broker partition. None spreads round-robin."""
    abandoned_at: datetime | None = field(default=None)
    """When the relay gave up on this message. None means it is still pending."""
    last_error: str | None = field(default=None)
    """Text of the last delivery failure, kept for operators."""
