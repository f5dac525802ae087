"""SQLAlchemy outbox storages: `AsyncSqlAlchemyOutboxStorage` and its sync mirror.

``save`` writes through the business session that ``@Transactional()`` opened;
every other operation runs in its own short transaction on the engine, fenced
by the instance's owner token (one instance = one relay process).
"""

import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import override
from uuid import UUID

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import OutboxStats
from spakky.outbox.error import (
    OutboxStorageUnavailableError,
    OutboxTransactionRequiredError,
)
from spakky.outbox.ports.storage import (
    IAsyncOutboxAdministration,
    IAsyncOutboxBatchAcknowledgement,
    IAsyncOutboxRetryScheduling,
    IAsyncOutboxStorage,
    IAsyncOutboxWakeUp,
    IOutboxAdministration,
    IOutboxBatchAcknowledgement,
    IOutboxRetryScheduling,
    IOutboxStorage,
    IOutboxWakeUp,
)
from spakky.plugins.outbox_sqlalchemy.config import SqlAlchemyOutboxConfig
from spakky.plugins.outbox_sqlalchemy.operations import (
    DialectKind,
    OutboxSql,
    dialect_kind,
)
from spakky.plugins.outbox_sqlalchemy.schema import outbox_table
from spakky.plugins.outbox_sqlalchemy.wakeup import (
    PgNotificationListener,
    PgNotificationThread,
    WakeUpHub,
    notify_channel,
    notify_throttle,
    signal_after_commit,
    wake_up_hub,
)
from spakky.plugins.sqlalchemy.persistency.connection_manager import (
    AsyncConnectionManager,
    ConnectionManager,
)
from spakky.plugins.sqlalchemy.persistency.session_manager import (
    AsyncSessionManager,
    SessionManager,
    SessionNotInitializedError,
)
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

_created: set[tuple[str, str]] = set()
_created_lock = threading.Lock()


def _created_key(engine: Engine, table_name: str) -> tuple[str, str]:
    return (engine.url.render_as_string(hide_password=True), table_name)


def mark_table_created(engine: Engine, table_name: str) -> None:
    """Record that ``table_name`` exists on ``engine`` (skips the startup check)."""
    with _created_lock:
        _created.add(_created_key(engine, table_name))


def _table_created(engine: Engine, table_name: str) -> bool:
    with _created_lock:
        return _created_key(engine, table_name) in _created


class _OutboxCore:
    """State shared by the sync and async storages."""

    def __init__(
        self,
        sync_engine: Engine,
        outbox_config: OutboxConfig,
        config: SqlAlchemyOutboxConfig,
    ) -> None:
        self.config = config
        self.table = outbox_table(config.table_name)
        self.kind = dialect_kind(sync_engine.dialect)
        self.owner = uuid.uuid4().hex
        """Owner token of this instance: one instance stands for one relay process."""
        self.sql = OutboxSql(
            table=self.table,
            kind=self.kind,
            owner=self.owner,
            claim_timeout_seconds=outbox_config.claim_timeout_seconds,
        )
        self.hub: WakeUpHub = wake_up_hub(config.table_name)
        self.seen = self.hub.generation
        self.channel = notify_channel(config.table_name)

    def should_notify(self) -> bool:
        return (
            self.config.notify
            and self.kind is DialectKind.POSTGRESQL
            and notify_throttle.allow(self.channel, self.config.notify_throttle_seconds)
        )

    def table_exists(self, connection: Connection) -> bool:
        """Whether the outbox table exists, as seen by ``connection``."""
        return inspect(connection).has_table(self.table.name)

    def creates_in_session(self) -> bool:
        """Whether ``save`` must create the table on the business connection."""
        return self.config.create_table and self.kind is DialectKind.SQLITE

    def create_in(self, connection: Connection) -> None:
        """Create the table on ``connection`` unless this process knows it exists."""
        if not _table_created(connection.engine, self.table.name):
            self.table.create(connection, checkfirst=True)

    def take_generation(self) -> int:
        seen, self.seen = self.seen, self.hub.generation
        return seen


def _unavailable(error: Exception) -> OutboxStorageUnavailableError:
    cause = error.orig if isinstance(error, DBAPIError) else error
    return OutboxStorageUnavailableError(f"{type(cause).__name__}: {cause}")


def _is_outage(error: Exception) -> bool:
    """Whether ``error`` means the database could not be reached or was lost."""
    if isinstance(error, DBAPIError):
        return error.connection_invalidated or isinstance(
            error, (OperationalError, InterfaceError)
        )
    return isinstance(error, OSError)  # asyncpg raises OSError when refused


def _claim_engine[E: (Engine, AsyncEngine)](engine: E, kind: DialectKind) -> E:
    """MariaDB/MySQL claims run at READ COMMITTED to avoid gap locks."""
    if kind is DialectKind.MYSQL:
        return engine.execution_options(isolation_level="READ COMMITTED")
    return engine


ASYNC_STORAGE_POD_NAME = "spakky_outbox_sqlalchemy_async_storage"
"""Pod name of the async storage (spakky-sqlalchemy 8.5 has a class of the same name)."""
SYNC_STORAGE_POD_NAME = "spakky_outbox_sqlalchemy_storage"
"""Pod name of the sync storage (spakky-sqlalchemy 8.5 has a class of the same name)."""


@Pod(name=ASYNC_STORAGE_POD_NAME)
class AsyncSqlAlchemyOutboxStorage(
    IAsyncOutboxStorage,
    IAsyncOutboxBatchAcknowledgement,
    IAsyncOutboxRetryScheduling,
    IAsyncOutboxWakeUp,
    IAsyncOutboxAdministration,
):
    """Asynchronous SQLAlchemy outbox storage (PostgreSQL, MariaDB/MySQL, SQLite)."""

    def __init__(
        self,
        session_manager: AsyncSessionManager,
        connection_manager: AsyncConnectionManager,
        outbox_config: OutboxConfig,
        config: SqlAlchemyOutboxConfig,
    ) -> None:
        """Bind the storage to the business session manager and the engine."""
        self._session_manager = session_manager
        self._engine = connection_manager.connection
        self._core = _OutboxCore(self._engine.sync_engine, outbox_config, config)
        self._claim_engine = _claim_engine(self._engine, self._core.kind)
        self._listener: PgNotificationListener | None = None

    @property
    def owner_token(self) -> str:
        """This instance's owner token."""
        return self._core.owner

    async def _ensure_table(self) -> None:
        core = self._core
        if not core.config.create_table or _table_created(
            self._engine.sync_engine, core.table.name
        ):
            return
        try:
            async with self._engine.begin() as connection:
                await connection.run_sync(
                    lambda c: core.table.create(c, checkfirst=True)
                )
        except (DBAPIError, OSError) as error:
            # Another instance may have created it between check and CREATE.
            try:
                async with self._engine.connect() as connection:
                    exists = await connection.run_sync(core.table_exists)
            except (DBAPIError, OSError):
                exists = False
            if not exists:
                if _is_outage(error):
                    raise _unavailable(error) from error
                raise
        mark_table_created(self._engine.sync_engine, core.table.name)

    async def _run[T](
        self, operation: Callable[[Connection], T], *, claim: bool = False
    ) -> T:
        await self._ensure_table()
        engine = self._claim_engine if claim else self._engine
        try:
            async with engine.begin() as connection:
                return await connection.run_sync(operation)
        except (DBAPIError, OSError) as error:
            if _is_outage(error):
                raise _unavailable(error) from error
            raise

    @override
    async def save(self, message: OutboxMessage) -> None:
        try:
            session = self._session_manager.session
        except SessionNotInitializedError:
            raise OutboxTransactionRequiredError() from None
        core = self._core
        if self._core.creates_in_session():
            # SQLite: the business transaction may already hold the only write
            # lock, so DDL from another connection would wait on it forever.
            await session.run_sync(lambda s: core.create_in(s.connection()))
        else:
            await self._ensure_table()
        # Core-level execution on the session's connection: same transaction,
        # without the ORM execution path a Session.execute takes.
        connection = await session.connection()
        await connection.execute(*core.sql.insert(message))
        if core.should_notify():
            await connection.execute(
                text("SELECT pg_notify(:channel, '')"), {"channel": core.channel}
            )
        signal_after_commit(session.sync_session, core.hub)

    @override
    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        sql = self._core.sql
        return await self._run(lambda c: sql.claim(c, limit, max_retry), claim=True)

    @override
    async def mark_published(self, message_id: UUID) -> None:
        sql = self._core.sql
        await self._run(lambda c: sql.mark_published(c, message_id))

    @override
    async def mark_published_many(self, message_ids: Sequence[UUID]) -> None:
        sql = self._core.sql
        await self._run(lambda c: sql.mark_published_many(c, message_ids))

    @override
    async def increment_retry(self, message_id: UUID) -> None:
        sql = self._core.sql
        await self._run(lambda c: sql.increment_retry(c, message_id))

    @override
    async def mark_abandoned(self, message_id: UUID) -> None:
        sql = self._core.sql
        await self._run(lambda c: sql.abandon(c, message_id, None))

    @override
    async def schedule_retry(
        self, message_id: UUID, delay_seconds: float, error: str
    ) -> None:
        sql = self._core.sql
        await self._run(
            lambda c: sql.schedule_retry(c, message_id, delay_seconds, error)
        )

    @override
    async def abandon(self, message_id: UUID, error: str) -> None:
        sql = self._core.sql
        await self._run(lambda c: sql.abandon(c, message_id, error))

    @override
    async def release(self, message_ids: Sequence[UUID]) -> None:
        sql = self._core.sql
        await self._run(lambda c: sql.release(c, message_ids))

    @override
    async def wait_for_messages(self, timeout: float) -> bool:
        core = self._core
        if (
            self._listener is None
            and core.config.notify
            and core.kind is DialectKind.POSTGRESQL
        ):
            self._listener = PgNotificationListener(
                self._engine, core.channel, core.hub
            )
            self._listener.start()
        seen = core.take_generation()
        woke = await core.hub.wait_async(seen, timeout)
        core.seen = core.hub.generation
        return woke

    async def start_listening(self) -> None:
        """Open the LISTEN connection now and wait until it is in place (PostgreSQL)."""
        core = self._core
        if not core.config.notify or core.kind is not DialectKind.POSTGRESQL:
            return
        if self._listener is None:
            self._listener = PgNotificationListener(
                self._engine, core.channel, core.hub
            )
            self._listener.start()
        await self._listener.ready.wait()

    @override
    async def close_wake_up(self) -> None:
        """Stop the LISTEN connection, if one was opened."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()

    @override
    async def stats(self) -> OutboxStats:
        return await self._run(self._core.sql.stats)

    @override
    async def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        sql = self._core.sql
        return await self._run(lambda c: sql.list_abandoned(c, limit))

    @override
    async def requeue_abandoned(self, message_ids: Sequence[UUID] | None = None) -> int:
        sql = self._core.sql
        return await self._run(lambda c: sql.requeue_abandoned(c, message_ids))

    @override
    async def purge_published(self, before: datetime, limit: int = 10_000) -> int:
        sql = self._core.sql
        return await self._run(lambda c: sql.purge_published(c, before, limit))


@Pod(name=SYNC_STORAGE_POD_NAME)
class SqlAlchemyOutboxStorage(
    IOutboxStorage,
    IOutboxBatchAcknowledgement,
    IOutboxRetryScheduling,
    IOutboxWakeUp,
    IOutboxAdministration,
):
    """Synchronous SQLAlchemy outbox storage (PostgreSQL, MariaDB/MySQL, SQLite).

    Wake-up: in-process after a local commit; on PostgreSQL through psycopg 3
    also a LISTEN thread, so saves committed by other processes wake it too.
    """

    def __init__(
        self,
        session_manager: SessionManager,
        connection_manager: ConnectionManager,
        outbox_config: OutboxConfig,
        config: SqlAlchemyOutboxConfig,
    ) -> None:
        """Bind the storage to the business session manager and the engine."""
        self._session_manager = session_manager
        self._engine = connection_manager.connection
        self._core = _OutboxCore(self._engine, outbox_config, config)
        self._claim_engine = _claim_engine(self._engine, self._core.kind)
        self._listener: PgNotificationThread | None = None
        self._listener_lock = threading.Lock()

    @property
    def owner_token(self) -> str:
        """This instance's owner token."""
        return self._core.owner

    def _ensure_table(self) -> None:
        core = self._core
        if not core.config.create_table or _table_created(
            self._engine, core.table.name
        ):
            return
        try:
            core.table.create(self._engine, checkfirst=True)
        except (DBAPIError, OSError) as error:
            # Another instance may have created it between check and CREATE.
            try:
                with self._engine.connect() as connection:
                    exists = core.table_exists(connection)
            except (DBAPIError, OSError):
                exists = False
            if not exists:
                if _is_outage(error):
                    raise _unavailable(error) from error
                raise
        mark_table_created(self._engine, core.table.name)

    def _run[T](
        self, operation: Callable[[Connection], T], *, claim: bool = False
    ) -> T:
        self._ensure_table()
        engine = self._claim_engine if claim else self._engine
        try:
            with engine.begin() as connection:
                return operation(connection)
        except (DBAPIError, OSError) as error:
            if _is_outage(error):
                raise _unavailable(error) from error
            raise

    @override
    def save(self, message: OutboxMessage) -> None:
        try:
            session: Session = self._session_manager.session
        except SessionNotInitializedError:
            raise OutboxTransactionRequiredError() from None
        core = self._core
        if core.creates_in_session():
            core.create_in(session.connection())  # see the async save
        else:
            self._ensure_table()
        session.execute(*core.sql.insert(message))
        if core.should_notify():
            session.execute(
                text("SELECT pg_notify(:channel, '')"), {"channel": core.channel}
            )
        signal_after_commit(session, core.hub)

    @override
    def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        sql = self._core.sql
        return self._run(lambda c: sql.claim(c, limit, max_retry), claim=True)

    @override
    def mark_published(self, message_id: UUID) -> None:
        self._run(lambda c: self._core.sql.mark_published(c, message_id))

    @override
    def mark_published_many(self, message_ids: Sequence[UUID]) -> None:
        self._run(lambda c: self._core.sql.mark_published_many(c, message_ids))

    @override
    def increment_retry(self, message_id: UUID) -> None:
        self._run(lambda c: self._core.sql.increment_retry(c, message_id))

    @override
    def mark_abandoned(self, message_id: UUID) -> None:
        self._run(lambda c: self._core.sql.abandon(c, message_id, None))

    @override
    def schedule_retry(
        self, message_id: UUID, delay_seconds: float, error: str
    ) -> None:
        self._run(
            lambda c: self._core.sql.schedule_retry(c, message_id, delay_seconds, error)
        )

    @override
    def abandon(self, message_id: UUID, error: str) -> None:
        self._run(lambda c: self._core.sql.abandon(c, message_id, error))

    @override
    def release(self, message_ids: Sequence[UUID]) -> None:
        self._run(lambda c: self._core.sql.release(c, message_ids))

    def start_listening(self, timeout: float = 10.0) -> bool:
        """Open the LISTEN thread (PostgreSQL via psycopg 3) and wait until it listens.

        Returns:
            Whether a LISTEN is in place.
        """
        core = self._core
        if not (core.config.notify and PgNotificationThread.supported(self._engine)):
            return False
        with self._listener_lock:
            if self._listener is None:
                self._listener = PgNotificationThread(
                    self._engine, core.channel, core.hub
                )
                self._listener.start()
            listener = self._listener
        return listener.ready.wait(timeout)

    @override
    def close_wake_up(self) -> None:
        """Stop the LISTEN thread, if one was started."""
        with self._listener_lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()

    @override
    def wait_for_messages(self, timeout: float) -> bool:
        core = self._core
        if self._listener is None:
            self.start_listening(timeout=0.0)
        seen = core.take_generation()
        woke = core.hub.wait(seen, timeout)
        core.seen = core.hub.generation
        return woke

    @override
    def stats(self) -> OutboxStats:
        return self._run(self._core.sql.stats)

    @override
    def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        return self._run(lambda c: self._core.sql.list_abandoned(c, limit))

    @override
    def requeue_abandoned(self, message_ids: Sequence[UUID] | None = None) -> int:
        return self._run(lambda c: self._core.sql.requeue_abandoned(c, message_ids))

    @override
    def purge_published(self, before: datetime, limit: int = 10_000) -> int:
        return self._run(lambda c: self._core.sql.purge_published(c, before, limit))


__all__ = [
    "AsyncSqlAlchemyOutboxStorage",
    "SqlAlchemyOutboxStorage",
    "mark_table_created",
]
