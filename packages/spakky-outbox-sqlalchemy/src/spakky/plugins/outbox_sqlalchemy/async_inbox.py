"""The SQLAlchemy inbox of the async flavour; its twin ``sync_inbox`` is generated (``make unasync``)."""

from collections.abc import Callable
from datetime import datetime
from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.ports.inbox import IAsyncInboxStorage, InboxLease, InboxStats
from spakky.plugins.outbox_sqlalchemy.async_tables import AsyncTableRunner
from spakky.plugins.outbox_sqlalchemy.config import SqlAlchemyOutboxConfig
from spakky.plugins.outbox_sqlalchemy.inbox_base import (
    ASYNC_INBOX_POD_NAME,
    InboxCore,
    InboxStorageBase,
)
from spakky.plugins.outbox_sqlalchemy.tables import (
    business_session,
    engine_of_async,
    within_session_async,
)
from spakky.plugins.sqlalchemy.persistency.connection_manager import (
    AsyncConnectionManager,
)
from spakky.plugins.sqlalchemy.persistency.session_manager import (
    AsyncSessionManager,
)
from sqlalchemy import Connection


@Pod(name=ASYNC_INBOX_POD_NAME)
class AsyncSqlAlchemyInboxStorage(InboxStorageBase, IAsyncInboxStorage):
    """Asynchronous SQLAlchemy inbox (PostgreSQL, MariaDB/MySQL, SQLite)."""

    def __init__(
        self,
        session_manager: AsyncSessionManager,
        connection_manager: AsyncConnectionManager,
        config: SqlAlchemyOutboxConfig,
    ) -> None:
        """Bind the inbox to the business session manager and the engine."""
        self._session_manager = session_manager
        engine = connection_manager.connection
        self._core = InboxCore(engine_of_async(engine), config)
        self._tables = AsyncTableRunner(engine, self._core)

    async def _run[T](self, operation: Callable[[Connection], T]) -> T:
        """Run a lease operation in one transaction, the table created on first use."""
        await self._tables.ensure_table()
        return await self._tables.run(operation)

    @override
    async def record(self, consumer: str, message_id: str) -> bool:
        session = business_session(self._session_manager)
        core = self._core
        if core.creates_in_session():
            await within_session_async(session, core.create_in_session)
        else:
            await self._tables.ensure_table()
        return await within_session_async(session, lambda c: core.sql.record(c, consumer, message_id))

    @override
    async def acquire_lease(self, consumer: str, message_id: str, lease_seconds: float) -> InboxLease:
        return await self._run(lambda c: self._core.sql.acquire(c, consumer, message_id, lease_seconds))

    @override
    async def finish_lease(self, consumer: str, message_id: str, token: str) -> bool:
        return await self._run(lambda c: self._core.sql.finish(c, consumer, message_id, token))

    @override
    async def release_lease(self, consumer: str, message_id: str, token: str) -> None:
        await self._run(lambda c: self._core.sql.release(c, consumer, message_id, token))

    @override
    async def purge(self, before: datetime, limit: int = 10_000) -> int:
        # Status and purge never create the table.
        return await self._tables.guarded(lambda c: self._core.sql.purge(c, before, limit))

    @override
    async def stats(self) -> InboxStats:
        return await self._tables.guarded(self._core.sql.stats)
