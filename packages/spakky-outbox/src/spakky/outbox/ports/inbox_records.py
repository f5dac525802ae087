"""The values the inbox ports hand back: a lease's outcome and an inbox's counts."""

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
