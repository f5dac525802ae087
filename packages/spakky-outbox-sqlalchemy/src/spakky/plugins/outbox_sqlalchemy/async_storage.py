"""The SQLAlchemy outbox storage of the async flavour; its twin ``sync_storage`` is generated (``make unasync``).

What the flavours do differently (the save on the business session, the
wake-up) is the hand-written pair in `storage_base`; every other operation is
one short transaction on the engine, run by the `AsyncTableRunner`.
"""

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import override
from uuid import UUID

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.figures import RELAY_FIGURES_READ_LIMIT, RelayFigures
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import (
    KeyHead,
    MessageDetail,
    OutboxStats,
    RelayClaims,
    stats_timeout,
)
from spakky.outbox.ports.storage import IAsyncOutboxFullStorage
from spakky.plugins.outbox_sqlalchemy.async_tables import AsyncTableRunner
from spakky.plugins.outbox_sqlalchemy.config import SqlAlchemyOutboxConfig
from spakky.plugins.outbox_sqlalchemy.outage import watch_connection_loss
from spakky.plugins.outbox_sqlalchemy.storage_base import (
    ASYNC_STORAGE_POD_NAME,
    AsyncSaveAndWakeUp,
    OutboxCore,
    single_statement_engine,
)
from spakky.plugins.outbox_sqlalchemy.tables import engine_of_async
from spakky.plugins.sqlalchemy.persistency.connection_manager import (
    AsyncConnectionManager,
)
from spakky.plugins.sqlalchemy.persistency.session_manager import (
    AsyncSessionManager,
)
from sqlalchemy import Connection


@Pod(name=ASYNC_STORAGE_POD_NAME)
class AsyncSqlAlchemyOutboxStorage(AsyncSaveAndWakeUp, IAsyncOutboxFullStorage):
    """Asynchronous SQLAlchemy outbox storage (PostgreSQL, MariaDB/MySQL, SQLite)."""

    def __init__(
        self,
        session_manager: AsyncSessionManager,
        connection_manager: AsyncConnectionManager,
        outbox_config: OutboxConfig,
        config: SqlAlchemyOutboxConfig,
    ) -> None:
        """Bind the storage to the business session manager and the engine."""
        super().__init__()
        self._session_manager = session_manager
        self._engine = watch_connection_loss(connection_manager.connection)
        self._core = OutboxCore(engine_of_async(self._engine), outbox_config, config)
        self._tables = AsyncTableRunner(self._engine, self._core)
        self._single = single_statement_engine(self._engine, self._core.kind)

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
        return await self._run(lambda c: self._core.sql.renew(c, message_ids), single=True)

    @override
    async def mark_published(self, message_id: UUID) -> None:
        await self._run(lambda c: self._core.sql.mark_published(c, message_id), single=True)

    @override
    async def mark_published_many(self, message_ids: Sequence[UUID]) -> int:
        return await self._run(lambda c: self._core.sql.mark_published_many(c, message_ids), single=True)

    @override
    async def increment_retry(self, message_id: UUID) -> None:
        await self._run(lambda c: self._core.sql.increment_retry(c, message_id))

    @override
    async def mark_abandoned(self, message_id: UUID) -> None:
        await self._run(lambda c: self._core.sql.abandon(c, message_id, None))

    @override
    async def schedule_retry(
        self, message_id: UUID, delay_seconds: float, error: str
    ) -> None:
        await self._run(
            lambda c: self._core.sql.schedule_retry(c, message_id, delay_seconds, error)
        )

    @override
    async def abandon(self, message_id: UUID, error: str) -> None:
        await self._run(lambda c: self._core.sql.abandon(c, message_id, error))

    @override
    async def release(self, message_ids: Sequence[UUID]) -> None:
        await self._run(lambda c: self._core.sql.release(c, message_ids))

    @override
    async def stats(self, timeout_seconds: float | None = None) -> OutboxStats:
        sql, timeout = self._core.sql, stats_timeout(timeout_seconds)
        return await self._run(lambda c: sql.stats(c, timeout))

    @override
    async def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        return await self._run(lambda c: self._core.sql.list_abandoned(c, limit))

    @override
    async def requeue_abandoned(
        self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000
    ) -> int:
        return await self._run(lambda c: self._core.sql.requeue_abandoned(c, message_ids, limit))

    @override
    async def key_heads(self, limit: int = 50, after: UUID | None = None) -> list[KeyHead]:
        return await self._run(lambda c: self._core.sql.key_heads(c, limit, after))

    @override
    async def get_message(self, message_id: UUID) -> MessageDetail | None:
        return await self._run(lambda c: self._core.sql.get_message(c, message_id))

    @override
    async def relay_claims(self) -> list[RelayClaims]:
        return await self._run(self._core.sql.relay_claims)

    @override
    async def purge_published(self, before: datetime | timedelta, limit: int = 10_000) -> int:
        return await self._run(lambda c: self._core.sql.purge_published(c, before, limit))

    @override
    async def write_relay_figures(self, figures: RelayFigures) -> None:
        await self._run(lambda c: self._core.figures.write(c, figures), create=True, single=True)

    @override
    async def relay_figures(self, since: datetime, limit: int = RELAY_FIGURES_READ_LIMIT) -> list[RelayFigures]:
        return await self._run(lambda c: self._core.figures.read(c, since, limit))
