"""The SQLAlchemy inbox's table, its SQL and what both inbox flavours share.

`AsyncSqlAlchemyInboxStorage` is written once (`async_inbox`) and
`SqlAlchemyInboxStorage` generated from it (`sync_inbox`, ``make unasync``);
`spakky.plugins.outbox_sqlalchemy.inbox` names them both.
"""

import uuid
from datetime import datetime
from typing import override

from spakky.outbox.inbox.identity import inbox_key
from spakky.outbox.ports.inbox import (
    InboxLease,
    InboxStats,
    LeaseOutcome,
)
from spakky.plugins.outbox_sqlalchemy.config import (
    DEFAULT_INBOX_TABLE_NAME,
    INBOX_TABLE_NAME_VARIABLE,
    SqlAlchemyOutboxConfig,
    validate_table_name,
)
from spakky.plugins.outbox_sqlalchemy.error import InboxTableNotFoundError
from spakky.plugins.outbox_sqlalchemy.operations import (
    DialectKind,
    _Clock,
    dialect_kind,
)
from spakky.plugins.outbox_sqlalchemy.schema import NamedTables, UtcDateTime, index_name
from spakky.plugins.outbox_sqlalchemy.tables import (
    TableKeeper,
    mark_table_created,
)
from sqlalchemy import (
    Column,
    Connection,
    Dialect,
    Engine,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    bindparam,
    column,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import DBAPIError

_MYSQL = ("mysql", "mariadb")


def define_inbox_table(name: str, metadata: MetaData) -> Table:
    """Define the inbox table called ``name`` in ``metadata``.

    Raises:
        InvalidOutboxTableNameError: ``name`` is not a plain SQL identifier.
    """
    validate_table_name(name)
    # Keys compare byte-wise on MySQL/MariaDB as elsewhere ("A" and "a" differ).
    key = String(255).with_variant(mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), *_MYSQL)
    table = Table(
        name,
        metadata,
        Column("consumer", key, nullable=False),
        Column("message_id", key, nullable=False),
        Column("recorded_at", UtcDateTime(), nullable=False),
        Column("lease_until", UtcDateTime(), nullable=True, comment="Lease mode: set until the handler finished"),
        Column("lease_owner", String(32), nullable=True, comment="Lease mode: token of the lease holder"),
        PrimaryKeyConstraint("consumer", "message_id"),
    )
    # The sweep deletes the oldest records in bounded batches.
    Index(index_name(name, "recorded"), table.c.recorded_at)
    return table


inbox_metadata = MetaData()
"""Alembic-friendly metadata holding the inbox table under its default name."""
default_inbox_table: Table = define_inbox_table(DEFAULT_INBOX_TABLE_NAME, inbox_metadata)
_inbox_tables = NamedTables(define_inbox_table, default_inbox_table)


def inbox_table(name: str = DEFAULT_INBOX_TABLE_NAME) -> Table:
    """Return the inbox table called ``name`` (each name has its own MetaData)."""
    return _inbox_tables.get(name)


def create_inbox_table(connection: Connection, table: Table) -> None:
    """Create the inbox table and its index unless it exists.

    Unlike the outbox table no relay depends on the index being there the
    moment the table is: the key is in the CREATE TABLE itself.
    """
    table.create(connection, checkfirst=True)


class InboxSql:
    """The inbox statements of one table on one dialect; both storage flavours run them."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        """Build the dialect's statements for ``table``."""
        self.table = table
        kind = self.kind = dialect_kind(dialect)
        clock = _Clock(kind)
        name = dialect.identifier_preparer.format_table(table)
        columns = "(consumer, message_id, recorded_at, lease_until, lease_owner)"
        values = f"VALUES (:consumer, :message_id, {clock.now}, {{until}}, {{owner}})"
        into = {
            DialectKind.POSTGRESQL: f"INSERT INTO {name} {columns} {values} ON CONFLICT (consumer, message_id) DO NOTHING",
            DialectKind.MYSQL: f"INSERT IGNORE INTO {name} {columns} {values}",
            DialectKind.SQLITE: f"INSERT OR IGNORE INTO {name} {columns} {values}",
        }[kind]
        key = "consumer = :consumer AND message_id = :message_id"
        self._clock = clock
        self._record = text(into.format(until="NULL", owner="NULL"))
        self._lease = text(into.format(until=clock.after("lease"), owner=":owner"))
        self._take_over = text(
            f"UPDATE {name} SET lease_owner = :owner, lease_until = {clock.after('lease')}, "
            f"recorded_at = {clock.now} WHERE {key} AND lease_until IS NOT NULL AND lease_until <= {clock.now}"
        )
        self._state = text(f"SELECT lease_until FROM {name} WHERE {key}")
        self._finish = text(
            f"UPDATE {name} SET lease_until = NULL, lease_owner = NULL, recorded_at = {clock.now} "
            f"WHERE {key} AND lease_owner = :owner"
        )
        self._release = text(f"DELETE FROM {name} WHERE {key} AND lease_owner = :owner")
        purge = {
            DialectKind.POSTGRESQL: f"DELETE FROM {name} WHERE ctid IN "
            f"(SELECT ctid FROM {name} WHERE recorded_at < :before LIMIT :limit)",
            DialectKind.MYSQL: f"DELETE FROM {name} WHERE recorded_at < :before ORDER BY recorded_at LIMIT :limit",
            DialectKind.SQLITE: f"DELETE FROM {name} WHERE rowid IN "
            f"(SELECT rowid FROM {name} WHERE recorded_at < :before LIMIT :limit)",
        }[kind]
        self._purge = text(purge).bindparams(bindparam("before", type_=UtcDateTime()))
        self._stats = text(
            f"SELECT COUNT(*) AS records, COALESCE(SUM(CASE WHEN lease_until IS NOT NULL "
            f"THEN 1 ELSE 0 END), 0) AS leased, MIN(recorded_at) AS oldest FROM {name}"
        ).columns(column("records", Integer()), column("leased", Integer()), column("oldest", UtcDateTime()))

    def record(self, conn: Connection, consumer: str, message_id: str) -> bool:
        """Insert the record in ``conn``'s transaction; True when it is new."""
        consumer, message_id = inbox_key(consumer, message_id)
        result = conn.execute(self._record, {"consumer": consumer, "message_id": message_id})
        return result.rowcount == 1

    def acquire(self, conn: Connection, consumer: str, message_id: str, lease_seconds: float) -> InboxLease:
        """Insert a leased record, or take over a lapsed lease; else say why not."""
        consumer, message_id = inbox_key(consumer, message_id)
        owner = uuid.uuid4().hex
        params = {"consumer": consumer, "message_id": message_id, "owner": owner, **self._clock.seconds("lease", lease_seconds)}
        if conn.execute(self._lease, params).rowcount == 1:
            return InboxLease(LeaseOutcome.ACQUIRED, owner)
        if conn.execute(self._take_over, params).rowcount == 1:
            return InboxLease(LeaseOutcome.ACQUIRED, owner)
        row = conn.execute(self._state, params).first()
        # No row: a holder released it a moment ago; its redelivery decides.
        done = row is not None and row.lease_until is None
        return InboxLease(LeaseOutcome.DONE if done else LeaseOutcome.BUSY)

    def finish(self, conn: Connection, consumer: str, message_id: str, token: str) -> bool:
        """Mark the leased record done when ``token`` still holds it."""
        params = {"consumer": consumer, "message_id": message_id, "owner": token}
        return conn.execute(self._finish, params).rowcount == 1

    def release(self, conn: Connection, consumer: str, message_id: str, token: str) -> None:
        """Delete the leased record when ``token`` still holds it."""
        conn.execute(self._release, {"consumer": consumer, "message_id": message_id, "owner": token})

    def purge(self, conn: Connection, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` records written before ``before``."""
        return conn.execute(self._purge, {"before": before, "limit": limit}).rowcount

    def stats(self, conn: Connection) -> InboxStats:
        """Count the records."""
        row = conn.execute(self._stats).one()
        return InboxStats(records=row.records, leased=row.leased, oldest_recorded_at=row.oldest)


class InboxCore(TableKeeper):
    """What both flavours share: the table, its statements, where it lives."""

    def __init__(self, engine: Engine, config: SqlAlchemyOutboxConfig) -> None:
        super().__init__(engine, inbox_table(config.inbox_table_name), config.create_table)
        self.config = config
        self.sql = InboxSql(self.table, engine.dialect)

    def creates_in_session(self) -> bool:
        """Whether ``record`` must create the table on the business connection."""
        # SQLite: the business transaction may hold the only write lock already.
        return self.config.create_table and self.sql.kind is DialectKind.SQLITE

    def create_in_session(self, connection: Connection) -> None:
        """SQLite: create the table in the business transaction (it may hold the only write lock)."""
        try:
            self.create_in(connection)
            mark_table_created(connection.engine, self.table.name)
        except Exception as error:
            # A concurrent first transaction committed the table after this one
            # looked; SQLite fails just the statement, the transaction goes on.
            self.created_elsewhere(connection.engine, error, self.table_exists(connection))

    @override
    def _create(self, connection: Connection) -> None:
        create_inbox_table(connection, self.table)

    @override
    def checks_table(self, error: Exception) -> bool:
        return isinstance(error, DBAPIError)

    @override
    def failure(self, error: Exception, exists: bool | None) -> Exception:
        """Our error for the missing table (status, purge); any other error as it is."""
        if exists is False:
            return InboxTableNotFoundError(self.url, self.table.name)
        return error


class InboxStorageBase:
    """What both inbox flavours answer from their `InboxCore` alone."""

    _core: InboxCore

    def location(self) -> str:
        """The URL without password and the table."""
        return self._core.location()

    def defaulted(self) -> tuple[str, ...]:
        """The table variable, when the table name is the default."""
        core = self._core
        return () if "inbox_table_name" in core.config.model_fields_set else (INBOX_TABLE_NAME_VARIABLE,)


ASYNC_INBOX_POD_NAME = "spakky_outbox_sqlalchemy_async_inbox"
"""Pod name of the async inbox."""
SYNC_INBOX_POD_NAME = "spakky_outbox_sqlalchemy_inbox"
"""Pod name of the sync inbox."""
