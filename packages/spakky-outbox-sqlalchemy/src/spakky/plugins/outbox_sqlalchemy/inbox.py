"""SQLAlchemy inbox: one row per (consumer, message id), unique, on every dialect.

`AsyncSqlAlchemyInboxStorage.record` inserts through the business session of
``@Transactional()`` (PostgreSQL and SQLite ``ON CONFLICT DO NOTHING`` /
``OR IGNORE``, MySQL/MariaDB ``INSERT IGNORE``), so the row commits or rolls
back with the handler's writes. A concurrent insert of the same key waits on
the unique index until the other transaction ends, then inserts (it rolled
back) or does nothing (it committed): only one handler's writes commit. Lease
operations run in their own short transaction on the engine, on the database
clock. The table is created on first use like the outbox table.
"""

from spakky.plugins.outbox_sqlalchemy.async_inbox import AsyncSqlAlchemyInboxStorage
from spakky.plugins.outbox_sqlalchemy.inbox_base import (
    InboxSql,
    create_inbox_table,
    define_inbox_table,
    inbox_table,
)
from spakky.plugins.outbox_sqlalchemy.sync_inbox import SqlAlchemyInboxStorage

__all__ = [
    "AsyncSqlAlchemyInboxStorage",
    "InboxSql",
    "SqlAlchemyInboxStorage",
    "create_inbox_table",
    "define_inbox_table",
    "inbox_table",
]
