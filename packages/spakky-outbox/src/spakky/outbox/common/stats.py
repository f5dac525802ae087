"""Operator-facing snapshot of an outbox's state."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from spakky.outbox.common.message import OutboxMessage

type CountName = Literal["pending", "claimed", "published", "abandoned"]
"""One of the counts of `OutboxStats`."""

COUNT_NAMES: tuple[CountName, ...] = ("pending", "claimed", "published", "abandoned")
"""Every count of `OutboxStats`, in the order operators read them."""

STATS_COUNT_CAP = 1_000
"""Where storages that count by reading index entries stop counting a state.

Counting reads one index entry per message, so a count past this would cost
O(table) on every health probe and metrics scrape; at the cap it reads
"at least this many" instead (`OutboxStats.count_cap`)."""

KEY_HEADS_WINDOW = 1_000
"""Most partition keys (or undelivered messages) one `key_heads` call looks at.

Finding the oldest heads means looking at every key; past this many a
storage stops, so the call costs O(window) whatever the backlog, and the page
holds the oldest heads among the keys it looked at."""

RELAY_CLAIMS_WINDOW = 1_000
"""Most pending messages of each lane (keyless, keyed) one `relay_claims` call looks at, oldest first.

Relays claim oldest first, so their claims sit at the front of the lanes;
the call costs O(window) whatever the backlog."""

DEFAULT_STATS_TIMEOUT_SECONDS = 5.0
"""How long a storage lets one `stats` read run on the server unless told otherwise."""


def stats_timeout(timeout_seconds: float | None) -> float:
    """The server-side limit of one `stats` read: ``timeout_seconds``, or the default."""
    return DEFAULT_STATS_TIMEOUT_SECONDS if timeout_seconds is None else max(0.0, timeout_seconds)


@dataclass(frozen=True)
class OutboxStats:
    """Counts of messages by state, and how old the oldest pending one is.

    A storage may bound its counts (`count_cap`): a count equal to the cap
    means "at least that many" (`at_least`, `shown`); below it, the count is
    exact. ``claimed`` is counted among the pending messages read, so it is
    exact whenever ``pending`` is.
    """

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
    count_cap: int | None = None
    """Where the storage stopped counting; None when every count is exact."""

    def count(self, name: CountName) -> int:
        """The count ``name``."""
        match name:
            case "pending":
                return self.pending
            case "claimed":
                return self.claimed
            case "published":
                return self.published
            case "abandoned":
                return self.abandoned

    def at_least(self, name: CountName) -> bool:
        """Whether the count ``name`` is a lower bound: it reached the cap (``claimed``: or ``pending`` did)."""
        if self.count_cap is None:
            return False
        return self.count(name) >= self.count_cap or (name == "claimed" and self.pending >= self.count_cap)

    def shown(self, name: CountName) -> str:
        """The count ``name`` for people: ``10000+`` when it is a lower bound."""
        count = self.count(name)
        return f"{count}+" if self.at_least(name) else str(count)

    @property
    def capped(self) -> tuple[CountName, ...]:
        """Names of the counts that are lower bounds (see `at_least`)."""
        return tuple(name for name in COUNT_NAMES if self.at_least(name))


@dataclass(frozen=True)
class OutboxTarget:
    """Where an outbox lives, told to operators before they change it; never a secret."""

    backend: str
    """Storage name, e.g. ``sqlalchemy``, ``redis``, ``mongodb``, ``in-memory``."""
    location: str
    """URL without password plus table, collection or key prefix."""
    defaulted: tuple[str, ...] = ()
    """Settings deciding the location that were left at their defaults (variable names)."""


@dataclass(frozen=True)
class MessageDetail:
    """One stored message as an operator inspects it, and what holds it now."""

    message: OutboxMessage
    """The message, as stored (attempts in ``retry_count``, the last failure in ``last_error``)."""
    claimed_by: str | None = None
    """Owner token of the relay instance whose claim on it holds now; None: no live claim."""
    lease_until: datetime | None = None
    """When that claim ends unless renewed (lease or claim timeout, whichever comes first)."""
    not_before: datetime | None = None
    """A scheduled retry: no relay claims it before then; None when it is not waiting for one."""


@dataclass(frozen=True)
class KeyHead(MessageDetail):
    """The head of one partition key (its oldest undelivered message) and what holds it now."""


@dataclass(frozen=True)
class RelayClaims:
    """One relay instance and the live claims it holds now."""

    owner: str
    """The relay instance's owner token."""
    held: int
    """Messages it holds (among those `relay_claims` looked at)."""
    until: datetime
    """When the last of those claims ends unless renewed."""


def relay_claims_of(claims: Iterable[tuple[str, datetime]]) -> list[RelayClaims]:
    """Live claims as (owner, end) pairs, grouped by relay instance: most held first, then by owner."""
    held: dict[str, int] = {}
    until: dict[str, datetime] = {}
    for owner, ends in claims:
        held[owner] = held.get(owner, 0) + 1
        until[owner] = max(ends, until.get(owner, ends))
    return sort_relay_claims(RelayClaims(owner, count, until[owner]) for owner, count in held.items())


def sort_relay_claims(relays: Iterable[RelayClaims]) -> list[RelayClaims]:
    """``relays`` in the order `relay_claims` returns them: most held first, then by owner."""
    return sorted(relays, key=lambda r: (-r.held, r.owner))
