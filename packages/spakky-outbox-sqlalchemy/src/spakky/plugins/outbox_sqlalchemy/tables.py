"""What the storage and the inbox know of their table, without I/O, for both flavours.

A `TableKeeper` knows its table, where it lives (the URL without password), how
it is created and which error a failure becomes; `AsyncTableRunner` and its
generated twin `TableRunner` run operations on the engine with it. The
process-wide record of tables known to exist (`mark_table_created`) spares a
save or a claim the catalog lookup once the table is there.
"""

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import overload

from spakky.outbox.common.config import redact_url
from spakky.outbox.error import OutboxTransactionRequiredError
from spakky.plugins.outbox_sqlalchemy.outage import is_outage, unavailable
from spakky.plugins.sqlalchemy.persistency.session_manager import (
    AsyncSessionManager,
    SessionManager,
    SessionNotInitializedError,
)
from sqlalchemy import Connection, Engine, Table, inspect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

_created: set[tuple[str, str]] = set()
_created_lock = threading.Lock()


def _created_key(engine: Engine, table_name: str) -> tuple[str, str]:
    return (engine.url.render_as_string(hide_password=True), table_name)


def mark_table_created(engine: Engine, table_name: str) -> None:
    """Record that ``table_name`` exists on ``engine`` (skips the startup check)."""
    with _created_lock:
        _created.add(_created_key(engine, table_name))


def table_created(engine: Engine, table_name: str) -> bool:
    """Whether this process recorded ``table_name`` as existing on ``engine``."""
    with _created_lock:
        return _created_key(engine, table_name) in _created


def creation_failure(error: Exception, exists: bool | None) -> Exception | None:
    """What a failed CREATE TABLE raises; None when another instance made the table.

    ``exists`` is asked afterwards on a fresh connection (None: that failed too).
    Two processes creating a table at once is the normal start of a service with
    several instances; on PostgreSQL the loser's ``CREATE TABLE IF NOT EXISTS``
    fails on the catalog's unique index rather than finding the table.
    """
    if exists:
        return None
    return unavailable(error) if is_outage(error) else error


class TableKeeper(ABC):
    """One table as both flavours see it: where it lives, how it is made, what its failures raise."""

    def __init__(self, engine: Engine, table: Table, create: bool) -> None:
        """Keep ``table`` of ``engine``; ``create``: first uses may create it."""
        self.table = table
        self.url = redact_url(engine.url.render_as_string(hide_password=False))
        """The engine's URL as it may be printed (no password, in the user part or the query)."""
        self.create = create
        self.ready = False
        """Whether this process is known to have the table (see `must_create`)."""

    def must_create(self, engine: Engine) -> bool:
        """Whether a first use has to make sure the table exists first."""
        if self.ready or not self.create:
            return False
        # The process-wide record never forgets a table, so once it holds this
        # one the answer is kept here: a save then skips the lookup (and the
        # URL it is keyed by) altogether.
        self.ready = table_created(engine, self.table.name)
        return not self.ready

    def table_exists(self, connection: Connection) -> bool:
        """Whether the table exists, as seen by ``connection``."""
        return inspect(connection).has_table(self.table.name)

    def create_in(self, connection: Connection) -> None:
        """Create the table on ``connection`` unless this process knows it exists."""
        if not table_created(connection.engine, self.table.name):
            self._create(connection)

    def created_elsewhere(self, engine: Engine, error: Exception, exists: bool | None) -> None:
        """After a failed CREATE: carry on (the table recorded) when another instance made it, else raise."""
        failure = creation_failure(error, exists)
        if failure is error:
            raise error
        if failure is not None:
            raise failure from error
        mark_table_created(engine, self.table.name)

    def location(self) -> str:
        """The URL without password and the table, as operators read it."""
        return f"{self.url} table {self.table.name}"

    @abstractmethod
    def _create(self, connection: Connection) -> None:
        """Create the table (and its indexes) on ``connection``."""

    @abstractmethod
    def checks_table(self, error: Exception) -> bool:
        """Whether ``error`` may come from a missing table (worth a catalog check)."""

    @abstractmethod
    def failure(self, error: Exception, exists: bool | None) -> Exception:
        """What to raise for ``error``; ``exists`` is the table check (None: not made)."""


async def within_async[T](
    context: AbstractAsyncContextManager[AsyncConnection], operation: Callable[[Connection], T]
) -> T:
    """Run ``operation`` on the connection ``context`` opens (``engine.begin()``, ``engine.connect()``)."""
    async with context as connection:
        return await connection.run_sync(operation)


def within[T](context: AbstractContextManager[Connection], operation: Callable[[Connection], T]) -> T:
    """The sync twin of `within_async`: ``operation`` called on the connection itself."""
    with context as connection:
        return operation(connection)


async def within_session_async[T](session: AsyncSession, operation: Callable[[Connection], T]) -> T:
    """Run ``operation`` on the connection of the business ``session`` (in its transaction)."""
    return await session.run_sync(lambda s: operation(s.connection()))


def within_session[T](session: Session, operation: Callable[[Connection], T]) -> T:
    """The sync twin of `within_session_async`: ``operation`` on ``session.connection()``."""
    return operation(session.connection())


def engine_of_async(engine: AsyncEngine) -> Engine:
    """The synchronous engine behind ``engine`` (the table record and the dialect live there)."""
    return engine.sync_engine


def engine_of(engine: Engine) -> Engine:
    """The sync twin of `engine_of_async`: ``engine`` itself."""
    return engine


@overload
def business_session(manager: AsyncSessionManager) -> AsyncSession: ...
@overload
def business_session(manager: SessionManager) -> Session: ...
def business_session(manager: AsyncSessionManager | SessionManager) -> AsyncSession | Session:
    """The session of the ``@Transactional()`` use case running here.

    Raises:
        OutboxTransactionRequiredError: No use case transaction is open.
    """
    try:
        return manager.session
    except SessionNotInitializedError:
        raise OutboxTransactionRequiredError() from None
