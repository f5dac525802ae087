# Sync twin generated from packages/spakky-outbox-sqlalchemy/src/spakky/plugins/outbox_sqlalchemy/async_inbox.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): 0fe14873e1a509c1a5182399729eee56882b1c7b1ec6d3613decc6ef7135a515
"""The SQLAlchemy inbox of the sync flavour; its twin ``sync_inbox`` is generated (``make unasync``)."""

from collections.abc import Callable
from datetime import datetime
from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.ports.inbox import IInboxStorage, InboxLease, InboxStats
from spakky.plugins.outbox_sqlalchemy.config import SqlAlchemyOutboxConfig
from spakky.plugins.outbox_sqlalchemy.inbox_base import (
    SYNC_INBOX_POD_NAME,
    InboxCore,
    InboxStorageBase,
)
from spakky.plugins.outbox_sqlalchemy.sync_tables import TableRunner
from spakky.plugins.outbox_sqlalchemy.tables import (
    business_session,
    engine_of,
    within_session,
)
from spakky.plugins.sqlalchemy.persistency.connection_manager import (
    ConnectionManager,
)
from spakky.plugins.sqlalchemy.persistency.session_manager import (
    SessionManager,
)
from sqlalchemy import Connection


@Pod(name=SYNC_INBOX_POD_NAME)
class SqlAlchemyInboxStorage(InboxStorageBase, IInboxStorage):
    """Synchronous SQLAlchemy inbox (PostgreSQL, MariaDB/MySQL, SQLite)."""

    def __init__(
        self,
        session_manager: SessionManager,
        connection_manager: ConnectionManager,
        config: SqlAlchemyOutboxConfig,
    ) -> None:
        """Bind the inbox to the business session manager and the engine."""
        self._session_manager = session_manager
        engine = connection_manager.connection
        self._core = InboxCore(engine_of(engine), config)
        self._tables = TableRunner(engine, self._core)

    def _run[T](self, operation: Callable[[Connection], T]) -> T:
        """Run a lease operation in one transaction, the table created on first use."""
        self._tables.ensure_table()
        return self._tables.run(operation)

    @override
    def record(self, consumer: str, message_id: str) -> bool:
        session = business_session(self._session_manager)
        core = self._core
        if core.creates_in_session():
            within_session(session, core.create_in_session)
        else:
            self._tables.ensure_table()
        return within_session(session, lambda c: core.sql.record(c, consumer, message_id))

    @override
    def acquire_lease(self, consumer: str, message_id: str, lease_seconds: float) -> InboxLease:
        return self._run(lambda c: self._core.sql.acquire(c, consumer, message_id, lease_seconds))

    @override
    def finish_lease(self, consumer: str, message_id: str, token: str) -> bool:
        return self._run(lambda c: self._core.sql.finish(c, consumer, message_id, token))

    @override
    def release_lease(self, consumer: str, message_id: str, token: str) -> None:
        self._run(lambda c: self._core.sql.release(c, consumer, message_id, token))

    @override
    def purge(self, before: datetime, limit: int = 10_000) -> int:
        # Status and purge never create the table.
        return self._tables.guarded(lambda c: self._core.sql.purge(c, before, limit))

    @override
    def stats(self) -> InboxStats:
        return self._tables.guarded(self._core.sql.stats)
