"""SQLAlchemy outbox storages: `AsyncSqlAlchemyOutboxStorage` and its sync mirror.

``save`` writes through the business session that ``@Transactional()`` opened;
every other operation runs in its own short transaction on the engine, fenced
by the instance's owner token (one instance = one relay process). Only saving
and claiming create the table (with ``create_table``); administration never
does. A lost connection becomes `OutboxStorageUnavailableError` and is never
handed out by the pool again (see `outage`).
"""

import asyncio
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import override
from uuid import UUID

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.backend.wakeup import WakeUpHub, wake_up_hub
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.figures import RELAY_FIGURES_READ_LIMIT, RelayFigures
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import (
    KeyHead,
    MessageDetail,
    OutboxStats,
    OutboxTarget,
    RelayClaims,
    stats_timeout,
)
from spakky.outbox.ports.storage import (
    IAsyncOutboxFullStorage,
    IOutboxFullStorage,
)
from spakky.plugins.outbox_sqlalchemy.async_tables import AsyncTableRunner
from spakky.plugins.outbox_sqlalchemy.config import (
    STORAGE_NAME,
    TABLE_NAME_VARIABLE,
    SqlAlchemyOutboxConfig,
)
from spakky.plugins.outbox_sqlalchemy.error import OutboxTableNotFoundError
from spakky.plugins.outbox_sqlalchemy.figures import FiguresSql
from spakky.plugins.outbox_sqlalchemy.operations import DialectKind, OutboxSql
from spakky.plugins.outbox_sqlalchemy.outage import (
    connection_lost,
    is_outage,
    unavailable,
    watch_connection_loss,
)
from spakky.plugins.outbox_sqlalchemy.schema import create_table, outbox_table
from spakky.plugins.outbox_sqlalchemy.sync_tables import TableRunner
from spakky.plugins.outbox_sqlalchemy.tables import (
    TableKeeper,
    business_session,
    mark_table_created,
)
from spakky.plugins.outbox_sqlalchemy.wakeup import (
    AsyncDeferredNotify,
    DeferredNotifyThread,
    PgNotificationListener,
    PgNotificationThread,
    notify_channel,
    run_after_commit,
    signal_after_commit,
)
from spakky.plugins.sqlalchemy.persistency.connection_manager import (
    AsyncConnectionManager,
    ConnectionManager,
)
from spakky.plugins.sqlalchemy.persistency.session_manager import (
    AsyncSessionManager,
    SessionManager,
)
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine


def single_statement_engine[E: (Engine, AsyncEngine)](engine: E, kind: DialectKind) -> E:
    """The engine for writes of one statement (or of statements that each stand alone): ``engine`` in autocommit on PostgreSQL.

    Its drivers then begin no transaction (BEGIN and COMMIT are two round trips
    of the three such a write costs) and switch to it without a round trip;
    MySQL drivers pay one to switch, and SQLite claims need ``BEGIN IMMEDIATE``,
    so elsewhere it is ``engine`` itself. The pool resets the isolation level
    when the connection comes back, so business sessions never see it.
    """
    if kind is DialectKind.POSTGRESQL:
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


class _OutboxCore(TableKeeper):
    """State shared by the sync and async storages."""

    def __init__(
        self,
        sync_engine: Engine,
        outbox_config: OutboxConfig,
        config: SqlAlchemyOutboxConfig,
    ) -> None:
        super().__init__(sync_engine, outbox_table(config.table_name), config.create_table)
        self.config = config
        self.owner = uuid.uuid4().hex
        """Owner token of this instance: one instance stands for one relay process."""
        self.sql = OutboxSql(
            table=self.table,
            dialect=sync_engine.dialect,
            owner=self.owner,
            claim_timeout_seconds=outbox_config.claim_timeout_seconds,
            claim_lease_seconds=outbox_config.claim_lease_seconds,
            batch_max_bytes=outbox_config.batch_max_bytes,
        )
        self.kind = self.sql.kind
        self.figures = FiguresSql(config.table_name)
        self.hub: WakeUpHub = wake_up_hub(config.table_name)
        self.seen = self.hub.generation
        self.channel = notify_channel(config.table_name)

    def notifies(self) -> bool:
        """Whether saves announce themselves with NOTIFY (PostgreSQL, ``notify`` on)."""
        return self.config.notify and self.kind is DialectKind.POSTGRESQL

    def creates_in_session(self) -> bool:
        """Whether ``save`` must create the table on the business connection."""
        return self.config.create_table and self.kind is DialectKind.SQLITE

    @override
    def _create(self, connection: Connection) -> None:
        create_table(connection, self.table)

    def missing(self) -> OutboxTableNotFoundError:
        """Our error for the missing table, naming the database and the table."""
        return OutboxTableNotFoundError(self.url, self.table.name)

    @override
    def failure(self, error: Exception, exists: bool | None) -> Exception:
        if connection_lost(error):
            return unavailable(error)
        if exists is False:
            return self.missing()
        return unavailable(error) if is_outage(error) else error

    @override
    def checks_table(self, error: Exception) -> bool:
        return isinstance(error, DBAPIError) and not connection_lost(error)

    def target(self) -> OutboxTarget:
        """Backend, URL without password and table; the table variable when defaulted."""
        defaulted = () if "table_name" in self.config.model_fields_set else (TABLE_NAME_VARIABLE,)
        return OutboxTarget(
            backend=STORAGE_NAME,
            location=self.location(),
            defaulted=defaulted,
        )

    def take_generation(self) -> int:
        seen, self.seen = self.seen, self.hub.generation
        return seen


ASYNC_STORAGE_POD_NAME = "spakky_outbox_sqlalchemy_async_storage"
"""Pod name of the async storage (spakky-sqlalchemy 8.5 has a class of the same name)."""
SYNC_STORAGE_POD_NAME = "spakky_outbox_sqlalchemy_storage"
"""Pod name of the sync storage (spakky-sqlalchemy 8.5 has a class of the same name)."""


class _OutboxStorageBase:
    """What both storage flavours answer from their `_OutboxCore` alone."""

    _core: _OutboxCore

    @property
    def owner_token(self) -> str:
        """This instance's owner token."""
        return self._core.owner

    def target(self) -> OutboxTarget:
        """Backend ``sqlalchemy``, the URL without password, and the table."""
        return self._core.target()


@Pod(name=ASYNC_STORAGE_POD_NAME)
class AsyncSqlAlchemyOutboxStorage(
    _OutboxStorageBase,
    IAsyncOutboxFullStorage,
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
        self._engine = watch_connection_loss(connection_manager.connection)
        self._core = _OutboxCore(self._engine.sync_engine, outbox_config, config)
        self._tables = AsyncTableRunner(self._engine, self._core)
        self._single = single_statement_engine(self._engine, self._core.kind)
        self._listener: PgNotificationListener | None = None
        self._owed_notify: AsyncDeferredNotify | None = None

    async def _run[T](
        self,
        operation: Callable[[Connection], T],
        *,
        create: bool = False,
        single: bool = False,
    ) -> T:
        """Run ``operation`` in one transaction (``single``: statements that each stand alone, see `single_statement_engine`)."""
        if create:
            await self._tables.ensure_table()
        return await self._tables.guarded(operation, self._single if single else None)

    @override
    async def save(self, message: OutboxMessage) -> None:
        session = business_session(self._session_manager)
        core = self._core
        if self._core.creates_in_session():
            # SQLite: the business transaction may already hold the only write
            # lock, so DDL from another connection would wait on it forever.
            await session.run_sync(lambda s: core.create_in(s.connection()))
        else:
            await self._tables.ensure_table()
        # Core-level execution on the session's connection: same transaction,
        # without the ORM execution path a Session.execute takes.
        connection = await session.connection()
        direct = core.sql.driver_insert(message)
        if direct is not None:
            await connection.exec_driver_sql(*direct)
        else:
            await connection.execute(*core.sql.insert(message))
        if core.notifies():
            # Announced after the commit, off the use case's path: no extra round
            # trip in the business transaction, and nothing announced that rolls back.
            owed = self._owed()
            loop = asyncio.get_running_loop()
            run_after_commit(session.sync_session, owed, lambda: owed.committed(loop))
        signal_after_commit(session.sync_session, core.hub)

    def _owed(self) -> AsyncDeferredNotify:
        if self._owed_notify is None:
            self._owed_notify = AsyncDeferredNotify(
                self._engine, self._core.channel, self._core.config.notify_throttle_seconds
            )
        return self._owed_notify

    @override
    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        sql = self._core.sql
        alone = not sql.claim_needs_transaction()
        if not sql.claims_keyless_first():
            return await self._run(lambda c: sql.claim(c, limit, max_retry), create=True, single=alone)
        messages, room = await self._run(
            lambda c: sql.claim_keyless(c, limit, max_retry), create=True, single=True
        )
        if room:
            messages += await self._run(lambda c: sql.claim(c, room, max_retry, messages), single=alone)
        return messages

    @override
    async def renew_claims(self, message_ids: Sequence[UUID]) -> int:
        sql = self._core.sql
        return await self._run(lambda c: sql.renew(c, message_ids), single=True)

    @override
    async def mark_published(self, message_id: UUID) -> None:
        sql = self._core.sql
        await self._run(lambda c: sql.mark_published(c, message_id), single=True)

    @override
    async def mark_published_many(self, message_ids: Sequence[UUID]) -> int:
        sql = self._core.sql
        return await self._run(lambda c: sql.mark_published_many(c, message_ids), single=True)

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
        if self._listener is None and core.notifies():
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
        if not core.notifies():
            return
        if self._listener is None:
            self._listener = PgNotificationListener(
                self._engine, core.channel, core.hub
            )
            self._listener.start()
        await self._listener.ready.wait()

    @override
    async def close_wake_up(self) -> None:
        """Send a NOTIFY still owed, stop the LISTEN connection, close the pool's idle connections.

        The relay calls this last, on the application's event loop, which closes
        next: the engine's pooled connections belong to that loop, and left in
        the pool they are closed by the garbage collector after it closed, which
        aiomysql reports with an "Event loop is closed" traceback at every exit
        (issue 17.21). The engine stays usable: it opens new connections on demand.
        """
        owed, self._owed_notify = self._owed_notify, None
        if owed is not None:
            await owed.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()
        await self._engine.dispose()

    @override
    async def stats(self, timeout_seconds: float | None = None) -> OutboxStats:
        sql, timeout = self._core.sql, stats_timeout(timeout_seconds)
        return await self._run(lambda c: sql.stats(c, timeout))

    @override
    async def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        sql = self._core.sql
        return await self._run(lambda c: sql.list_abandoned(c, limit))

    @override
    async def requeue_abandoned(
        self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000
    ) -> int:
        sql = self._core.sql
        return await self._run(lambda c: sql.requeue_abandoned(c, message_ids, limit))

    @override
    async def key_heads(self, limit: int = 50, after: UUID | None = None) -> list[KeyHead]:
        sql = self._core.sql
        return await self._run(lambda c: sql.key_heads(c, limit, after))

    @override
    async def get_message(self, message_id: UUID) -> MessageDetail | None:
        sql = self._core.sql
        return await self._run(lambda c: sql.get_message(c, message_id))

    @override
    async def relay_claims(self) -> list[RelayClaims]:
        sql = self._core.sql
        return await self._run(sql.relay_claims)

    @override
    async def purge_published(self, before: datetime | timedelta, limit: int = 10_000) -> int:
        sql = self._core.sql
        return await self._run(lambda c: sql.purge_published(c, before, limit))

    @override
    async def write_relay_figures(self, figures: RelayFigures) -> None:
        sql = self._core.figures
        await self._run(lambda c: sql.write(c, figures), create=True, single=True)

    @override
    async def relay_figures(self, since: datetime, limit: int = RELAY_FIGURES_READ_LIMIT) -> list[RelayFigures]:
        sql = self._core.figures
        return await self._run(lambda c: sql.read(c, since, limit))


@Pod(name=SYNC_STORAGE_POD_NAME)
class SqlAlchemyOutboxStorage(
    _OutboxStorageBase,
    IOutboxFullStorage,
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
        self._engine = watch_connection_loss(connection_manager.connection)
        self._core = _OutboxCore(self._engine, outbox_config, config)
        self._tables = TableRunner(self._engine, self._core)
        self._single = single_statement_engine(self._engine, self._core.kind)
        self._listener: PgNotificationThread | None = None
        self._listener_lock = threading.Lock()
        self._owed_notify: DeferredNotifyThread | None = None

    def _run[T](
        self,
        operation: Callable[[Connection], T],
        *,
        create: bool = False,
        single: bool = False,
    ) -> T:
        """Run ``operation`` in one transaction (see the async storage's `_run`)."""
        if create:
            self._tables.ensure_table()
        return self._tables.guarded(operation, self._single if single else None)

    @override
    def save(self, message: OutboxMessage) -> None:
        session = business_session(self._session_manager)
        core = self._core
        if core.creates_in_session():
            core.create_in(session.connection())  # see the async save
        else:
            self._tables.ensure_table()
        session.execute(*core.sql.insert(message))
        if core.notifies():
            owed = self._owed()  # sent after the commit, as in the async save
            run_after_commit(session, owed, owed.committed)
        signal_after_commit(session, core.hub)

    def _owed(self) -> DeferredNotifyThread:
        with self._listener_lock:
            if self._owed_notify is None:
                self._owed_notify = DeferredNotifyThread(
                    self._engine,
                    self._core.channel,
                    self._core.config.notify_throttle_seconds,
                )
            return self._owed_notify

    @override
    def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        sql = self._core.sql
        alone = not sql.claim_needs_transaction()
        if not sql.claims_keyless_first():
            return self._run(lambda c: sql.claim(c, limit, max_retry), create=True, single=alone)
        messages, room = self._run(
            lambda c: sql.claim_keyless(c, limit, max_retry), create=True, single=True
        )
        if room:
            messages += self._run(lambda c: sql.claim(c, room, max_retry, messages), single=alone)
        return messages

    @override
    def renew_claims(self, message_ids: Sequence[UUID]) -> int:
        return self._run(lambda c: self._core.sql.renew(c, message_ids), single=True)

    @override
    def mark_published(self, message_id: UUID) -> None:
        self._run(lambda c: self._core.sql.mark_published(c, message_id), single=True)

    @override
    def mark_published_many(self, message_ids: Sequence[UUID]) -> int:
        return self._run(lambda c: self._core.sql.mark_published_many(c, message_ids), single=True)

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
        """Send a NOTIFY still owed, and stop the LISTEN thread if one was started."""
        with self._listener_lock:
            listener, self._listener = self._listener, None
            owed, self._owed_notify = self._owed_notify, None
        if owed is not None:
            owed.close()
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
    def stats(self, timeout_seconds: float | None = None) -> OutboxStats:
        sql, timeout = self._core.sql, stats_timeout(timeout_seconds)
        return self._run(lambda c: sql.stats(c, timeout))

    @override
    def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        return self._run(lambda c: self._core.sql.list_abandoned(c, limit))

    @override
    def requeue_abandoned(
        self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000
    ) -> int:
        return self._run(
            lambda c: self._core.sql.requeue_abandoned(c, message_ids, limit)
        )

    @override
    def key_heads(self, limit: int = 50, after: UUID | None = None) -> list[KeyHead]:
        return self._run(lambda c: self._core.sql.key_heads(c, limit, after))

    @override
    def get_message(self, message_id: UUID) -> MessageDetail | None:
        return self._run(lambda c: self._core.sql.get_message(c, message_id))

    @override
    def relay_claims(self) -> list[RelayClaims]:
        return self._run(self._core.sql.relay_claims)

    @override
    def purge_published(self, before: datetime | timedelta, limit: int = 10_000) -> int:
        return self._run(lambda c: self._core.sql.purge_published(c, before, limit))

    @override
    def write_relay_figures(self, figures: RelayFigures) -> None:
        self._run(lambda c: self._core.figures.write(c, figures), create=True, single=True)

    @override
    def relay_figures(self, since: datetime, limit: int = RELAY_FIGURES_READ_LIMIT) -> list[RelayFigures]:
        return self._run(lambda c: self._core.figures.read(c, since, limit))


__all__ = [
    "AsyncSqlAlchemyOutboxStorage",
    "SqlAlchemyOutboxStorage",
    "mark_table_created",
]
