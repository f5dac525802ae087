"""``ListOutboxStorage``: the smallest storage that passes the base conformance level.

Messages live in a list in `Database`, shared by every storage instance; a
business transaction is a `UnitOfWork` that applies business writes and
messages together on commit. `ListTransaction` / `AsyncListTransaction` are the
Spakky transactions that ``@Transactional()`` opens, so ``save`` joins the
use case's unit of work: a storage brings its own transactions, because only
it knows what "the business transaction" is for its database.

Only the port's four required methods (plus ``mark_abandoned``) are
implemented, with per-key order, so the suite reports the base level plus
``partition_ordering`` and skips the other capabilities by name.
"""

import threading
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import override
from uuid import UUID, uuid4

from spakky.core.pod.annotations.pod import Pod
from spakky.data.persistency.transaction import (
    AbstractAsyncTransaction,
    AbstractTransaction,
)
from spakky.outbox.common.config import OutboxConfig
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
    depth: int = 0
    """Transactions opened inside this one (they join it)."""
    rollback_only: bool = False
    token: Token["UnitOfWork | None"] | None = None


CURRENT: ContextVar[UnitOfWork | None] = ContextVar("example_unit_of_work", default=None)


@Pod()
class Database:
    """The shared 'database': business records, outbox rows and units of work."""

    def __init__(self) -> None:
        """Start empty."""
        self.business: dict[str, object] = {}
        self.rows: list[Row] = []
        self.lock = threading.Lock()

    def begin(self) -> None:
        """Open a unit of work in this context, or join the one already open."""
        work = CURRENT.get()
        if work is not None:
            work.depth += 1
            return
        work = UnitOfWork()
        work.token = CURRENT.set(work)

    def write(self, key: str, value: object) -> None:
        """Write a business record in the open unit of work."""
        work = CURRENT.get()
        if work is None:
            raise OutboxTransactionRequiredError()
        work.business[key] = value

    def commit(self) -> None:
        """Apply the outermost unit of work: business records and messages at once."""
        work = CURRENT.get()
        if work is None or work.depth > 0 or work.rollback_only:
            return
        with self.lock:
            self.business.update(work.business)
            self.rows.extend(Row(m) for m in work.messages)

    def rollback(self) -> None:
        """Discard the unit of work; an inner rollback dooms the outer one."""
        work = CURRENT.get()
        if work is not None:
            work.rollback_only = True

    def end(self) -> None:
        """Leave the unit of work; the outermost one closes it."""
        work = CURRENT.get()
        if work is None:
            return
        if work.depth > 0:
            work.depth -= 1
        elif work.token is not None:
            CURRENT.reset(work.token)


@Pod()
class ListTransaction(AbstractTransaction):
    """The transaction a synchronous ``@Transactional()`` use case opens."""

    def __init__(self, database: Database) -> None:
        """Bind to the shared database."""
        super().__init__(autocommit=True)
        self._database = database

    @override
    def initialize(self) -> None:
        self._database.begin()

    @override
    def commit(self) -> None:
        self._database.commit()

    @override
    def rollback(self) -> None:
        self._database.rollback()

    @override
    def dispose(self) -> None:
        self._database.end()


@Pod()
class AsyncListTransaction(AbstractAsyncTransaction):
    """The transaction an asynchronous ``@Transactional()`` use case opens."""

    def __init__(self, database: Database) -> None:
        """Bind to the shared database."""
        super().__init__(autocommit=True)
        self._database = database

    @override
    async def initialize(self) -> None:
        self._database.begin()

    @override
    async def commit(self) -> None:
        self._database.commit()

    @override
    async def rollback(self) -> None:
        self._database.rollback()

    @override
    async def dispose(self) -> None:
        self._database.end()


@Pod()
class ListOutboxStorage(IAsyncOutboxStorage):
    """A storage over `Database`; each instance stands for one relay process."""

    def __init__(self, database: Database, config: OutboxConfig) -> None:
        """Share the database; get an owner token of our own."""
        self._db = database
        self._owner = uuid4()
        self._timeout = timedelta(seconds=config.claim_timeout_seconds)

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
