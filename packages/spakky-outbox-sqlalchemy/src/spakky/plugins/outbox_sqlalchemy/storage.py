"""SQLAlchemy outbox storages: `AsyncSqlAlchemyOutboxStorage` and its sync twin `SqlAlchemyOutboxStorage`.

``save`` writes through the business session that ``@Transactional()`` opened;
every other operation runs in its own short transaction on the engine, fenced
by the instance's owner token (one instance = one relay process). Only saving
and claiming create the table (with ``create_table``); administration never
does. A lost connection becomes `OutboxStorageUnavailableError` and is never
handed out by the pool again (see `outage`).

The async storage is written once (`spakky.plugins.outbox_sqlalchemy.async_storage`);
the sync one (`spakky.plugins.outbox_sqlalchemy.sync_storage`) is generated from it.
"""

from spakky.plugins.outbox_sqlalchemy.async_storage import AsyncSqlAlchemyOutboxStorage
from spakky.plugins.outbox_sqlalchemy.sync_storage import SqlAlchemyOutboxStorage
from spakky.plugins.outbox_sqlalchemy.tables import mark_table_created

__all__ = [
    "AsyncSqlAlchemyOutboxStorage",
    "SqlAlchemyOutboxStorage",
    "mark_table_created",
]
