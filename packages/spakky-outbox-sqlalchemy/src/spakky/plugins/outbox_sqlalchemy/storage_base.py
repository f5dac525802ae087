"""What both SQLAlchemy storage flavours share, and what each does its own way.

`AsyncSqlAlchemyOutboxStorage` is written once (`async_storage`) and
`SqlAlchemyOutboxStorage` generated from it (`sync_storage`, ``make unasync``);
both run their operations through one `OutboxCore`. What the drivers really do
differently, the save on the business session and the wake-up (a LISTEN task
or thread, the NOTIFY owed after a commit), is the hand-written pair
`AsyncSaveAndWakeUp` / `SaveAndWakeUp` the storages are built on.
"""

import asyncio
import threading
import uuid
from typing import override

from spakky.outbox.backend.wakeup import WakeUpHub, wake_up_hub
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import OutboxTarget
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
)
from spakky.plugins.outbox_sqlalchemy.schema import create_table, outbox_table
from spakky.plugins.outbox_sqlalchemy.sync_tables import TableRunner
from spakky.plugins.outbox_sqlalchemy.tables import TableKeeper, business_session
from spakky.plugins.outbox_sqlalchemy.wakeup import (
    AsyncDeferredNotify,
    DeferredNotifyThread,
    PgNotificationListener,
    PgNotificationThread,
    notify_channel,
    run_after_commit,
    signal_after_commit,
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


class OutboxCore(TableKeeper):
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
        """The wake-up generation last seen, the hub's current one kept as seen from now on."""
        seen, self.seen = self.seen, self.hub.generation
        return seen


ASYNC_STORAGE_POD_NAME = "spakky_outbox_sqlalchemy_async_storage"
"""Pod name of the async storage (spakky-sqlalchemy 8.5 has a class of the same name)."""
SYNC_STORAGE_POD_NAME = "spakky_outbox_sqlalchemy_storage"
"""Pod name of the sync storage (spakky-sqlalchemy 8.5 has a class of the same name)."""


class OutboxStorageBase:
    """What both storage flavours answer from their `OutboxCore` alone."""

    _core: OutboxCore

    @property
    def owner_token(self) -> str:
        """This instance's owner token."""
        return self._core.owner

    def target(self) -> OutboxTarget:
        """Backend ``sqlalchemy``, the URL without password, and the table."""
        return self._core.target()


class AsyncSaveAndWakeUp(OutboxStorageBase, IAsyncOutboxFullStorage):
    """What the async storage does its own way: the save on the business session, the wake-up over a LISTEN task."""

    _session_manager: AsyncSessionManager
    _engine: AsyncEngine
    _tables: AsyncTableRunner

    def __init__(self) -> None:
        """Start with no LISTEN connection and no NOTIFY owed."""
        self._listener: PgNotificationListener | None = None
        self._owed_notify: AsyncDeferredNotify | None = None

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


class SaveAndWakeUp(OutboxStorageBase, IOutboxFullStorage):
    """What the sync storage does its own way: the save on the business session, the wake-up.

    Wake-up: in-process after a local commit; on PostgreSQL through psycopg 3
    also a LISTEN thread, so saves committed by other processes wake it too.
    """

    _session_manager: SessionManager
    _engine: Engine
    _tables: TableRunner

    def __init__(self) -> None:
        """Start with no LISTEN thread and no NOTIFY owed."""
        self._listener: PgNotificationThread | None = None
        self._listener_lock = threading.Lock()
        self._owed_notify: DeferredNotifyThread | None = None

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
