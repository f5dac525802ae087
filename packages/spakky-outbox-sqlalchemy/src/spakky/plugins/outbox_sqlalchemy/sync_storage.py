# Sync twin generated from packages/spakky-outbox-sqlalchemy/src/spakky/plugins/outbox_sqlalchemy/async_storage.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): f9de1a7d27e15314603dffbe0861834e51ec3e5ea681267cec9e8d2b70ddfd6e
"""The SQLAlchemy outbox storage of the sync flavour; its twin ``sync_storage`` is generated (``make unasync``).

What the flavours do differently (the save on the business session, the
wake-up) is the hand-written pair in `storage_base`; every other operation is
one short transaction on the engine, run by the `TableRunner`.
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
from spakky.outbox.ports.storage import IOutboxFullStorage
from spakky.plugins.outbox_sqlalchemy.config import SqlAlchemyOutboxConfig
from spakky.plugins.outbox_sqlalchemy.outage import watch_connection_loss
from spakky.plugins.outbox_sqlalchemy.storage_base import (
    SYNC_STORAGE_POD_NAME,
    OutboxCore,
    SaveAndWakeUp,
    single_statement_engine,
)
from spakky.plugins.outbox_sqlalchemy.sync_tables import TableRunner
from spakky.plugins.outbox_sqlalchemy.tables import engine_of
from spakky.plugins.sqlalchemy.persistency.connection_manager import (
    ConnectionManager,
)
from spakky.plugins.sqlalchemy.persistency.session_manager import (
    SessionManager,
)
from sqlalchemy import Connection


@Pod(name=SYNC_STORAGE_POD_NAME)
class SqlAlchemyOutboxStorage(SaveAndWakeUp, IOutboxFullStorage):
    """Synchronous SQLAlchemy outbox storage (PostgreSQL, MariaDB/MySQL, SQLite)."""

    def __init__(
        self,
        session_manager: SessionManager,
        connection_manager: ConnectionManager,
        outbox_config: OutboxConfig,
        config: SqlAlchemyOutboxConfig,
    ) -> None:
        """Bind the storage to the business session manager and the engine."""
        super().__init__()
        self._session_manager = session_manager
        self._engine = watch_connection_loss(connection_manager.connection)
        self._core = OutboxCore(engine_of(self._engine), outbox_config, config)
        self._tables = TableRunner(self._engine, self._core)
        self._single = single_statement_engine(self._engine, self._core.kind)

    def _run[T](
        self,
        operation: Callable[[Connection], T],
        *,
        create: bool = False,
        single: bool = False,
    ) -> T:
        """Run ``operation`` in one transaction (``single``: statements that each stand alone, see `single_statement_engine`)."""
        if create:
            self._tables.ensure_table()
        return self._tables.guarded(operation, self._single if single else None)

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
        return self._run(lambda c: self._core.sql.requeue_abandoned(c, message_ids, limit))

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
