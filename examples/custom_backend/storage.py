"""``ListOutboxStorage``: the smallest storage that passes the base conformance level.

Messages live in a list shared by all instances; a business transaction is a
`UnitOfWork` that applies business writes and messages together on commit.
Only the port's required methods (plus ``mark_abandoned``) are implemented, so
the suite reports the base level and skips the extended capabilities by name.
"""

import threading
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import override
from uuid import UUID, uuid4

from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.error import OutboxTransactionRequiredError
from spakky.outbox.ports.storage import IAsyncOutboxStorage


@dataclass
class Row:
    """One stored message and its delivery state."""

    message: OutboxMessage
    owner: UUID | None = None
    claimed_at: datetime | None = None
    retries: int = 0
    published: bool = False
    abandoned: bool = False


@dataclass
class UnitOfWork:
    """A business transaction: writes are applied together on commit."""

    business: dict[str, object] = field(default_factory=dict[str, object])
    messages: list[OutboxMessage] = field(default_factory=list[OutboxMessage])


CURRENT: ContextVar[UnitOfWork | None] = ContextVar("example_unit_of_work", default=None)


class Database:
    """The shared 'database': business records and outbox rows."""

    def __init__(self) -> None:
        """Start empty."""
        self.business: dict[str, object] = {}
        self.rows: list[Row] = []
        self.lock = threading.Lock()

    def commit(self, work: UnitOfWork) -> None:
        """Apply a unit of work atomically."""
        with self.lock:
            self.business.update(work.business)
            self.rows.extend(Row(m) for m in work.messages)


class ListOutboxStorage(IAsyncOutboxStorage):
    """A storage over `Database`; each instance stands for one relay process."""

    def __init__(self, database: Database, claim_timeout: float) -> None:
        """Share the database; get an owner token of our own."""
        self._db = database
        self._owner = uuid4()
        self._timeout = timedelta(seconds=claim_timeout)

    @override
    async def save(self, message: OutboxMessage) -> None:
        work = CURRENT.get()
        if work is None:
            raise OutboxTransactionRequiredError()
        work.messages.append(message)

    @override
    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        now = datetime.now(UTC)
        claimed: list[OutboxMessage] = []
        blocked: set[str] = set()
        with self._db.lock:
            for row in self._db.rows:
                if row.published or row.abandoned or len(claimed) >= limit:
                    continue
                key = row.message.partition_key
                free = row.claimed_at is None or row.claimed_at + self._timeout <= now
                if key in blocked or not free or row.retries >= max_retry:
                    if key is not None:
                        blocked.add(key)  # nothing later of this key may overtake
                    continue
                row.owner, row.claimed_at = self._owner, now
                claimed.append(replace(row.message, retry_count=row.retries, claimed_at=now))
        return claimed

    def _mine(self, message_id: UUID) -> Row | None:
        for row in self._db.rows:
            if row.message.id == message_id and row.owner == self._owner:
                return row
        return None

    @override
    async def mark_published(self, message_id: UUID) -> None:
        with self._db.lock:
            if row := self._mine(message_id):
                row.published = True

    @override
    async def increment_retry(self, message_id: UUID) -> None:
        with self._db.lock:
            if row := self._mine(message_id):
                row.retries += 1

    @override
    async def mark_abandoned(self, message_id: UUID) -> None:
        with self._db.lock:
            if row := self._mine(message_id):
                row.abandoned = True
