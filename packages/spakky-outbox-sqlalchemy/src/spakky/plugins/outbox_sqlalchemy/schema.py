"""Outbox table definition, its indexes, and DDL helpers.

`metadata` holds the table under its default name, so Alembic's
``target_metadata`` can include it; `outbox_table` builds the same table under
another name in its own `MetaData`.
"""

import hashlib
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast, override

from spakky.outbox.common.figures import RELAY_NAME_MAX
from spakky.plugins.outbox_sqlalchemy.config import (
    DEFAULT_OUTBOX_TABLE_NAME,
    validate_table_name,
)
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Computed,
    Connection,
    DateTime,
    Dialect,
    Double,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    Uuid,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import TypeEngine

MESSAGE_COLUMNS: tuple[str, ...] = (
    "seq",
    "id",
    "event_name",
    "payload",
    "headers",
    "created_at",
    "published_at",
    "retry_count",
    "claimed_at",
    "partition_key",
    "abandoned_at",
    "last_error",
)
"""The columns a message is read from, in this order (claims build messages by position)."""

_MYSQL = ("mysql", "mariadb")
_PARTIAL = ("postgresql", "sqlite")
_PENDING_SQL = "published_at IS NULL AND abandoned_at IS NULL"
# ``ddl_if`` accepts a tuple of dialect names; its annotation only says ``str``.
_PARTIAL_DIALECTS = cast(str, _PARTIAL)
_MYSQL_DIALECTS = cast(str, _MYSQL)


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; a naive one is taken to be UTC already."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return aware.astimezone(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetime on every dialect.

    PostgreSQL stores ``timestamptz``; MySQL/MariaDB ``DATETIME(6)`` and SQLite
    text hold naive UTC. Values read back are always aware and in UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    @override
    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in _MYSQL:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    @override
    def process_bind_param(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        utc = as_utc(value)
        return utc if dialect.name == "postgresql" else utc.replace(tzinfo=None)

    @override
    def process_result_value(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        return None if value is None else as_utc(value)


def _key_type() -> TypeEngine[str]:
    """Partition keys compare byte-wise on MySQL/MariaDB, like on the others."""
    return String(255).with_variant(
        mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), *_MYSQL
    )


_MAX_IDENTIFIER = 63
"""Longest identifier every supported dialect accepts (PostgreSQL's limit)."""


def index_name(table_name: str, suffix: str) -> str:
    """Name of one of the outbox table's indexes, short enough for every dialect.

    ``ix_<table>_<suffix>``; a long table name is cut and completed with a
    hash of the full name, so names stay distinct.
    """
    name = f"ix_{table_name}_{suffix}"
    if len(name) <= _MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(table_name.encode()).hexdigest()[:8]
    keep = _MAX_IDENTIFIER - len(f"ix__{digest}_{suffix}")
    return f"ix_{table_name[:keep]}_{digest}_{suffix}"


def define_outbox_table(name: str, metadata: MetaData) -> Table:
    """Define the outbox table called ``name`` in ``metadata``.

    Any plain identifier works, reserved words (``order``) and mixed case
    (``Outbox``) included: SQLAlchemy quotes it wherever the dialect needs.

    Raises:
        InvalidOutboxTableNameError: ``name`` is not a plain SQL identifier.
    """
    return _define(name, metadata, name)


def _define(name: str, metadata: MetaData, indexes_of: str) -> Table:
    """The outbox table ``name`` with the indexes of the table ``indexes_of``."""
    validate_table_name(name)
    table = Table(
        name,
        metadata,
        Column(
            "seq",
            BigInteger().with_variant(Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
            comment="Insertion order; the claim order and tie-breaker",
        ),
        Column("id", Uuid(), nullable=False, unique=True),
        Column("event_name", String(255), nullable=False),
        Column(
            "payload",
            LargeBinary().with_variant(mysql.LONGBLOB(), *_MYSQL),
            nullable=False,
        ),
        Column("headers", JSON(), nullable=False),
        Column("created_at", UtcDateTime(), nullable=False),
        Column("published_at", UtcDateTime(), nullable=True),
        Column("retry_count", Integer(), nullable=False, default=0),
        Column("claimed_at", UtcDateTime(), nullable=True),
        Column("claimed_by", String(32), nullable=True, comment="Owner token"),
        Column("not_before", UtcDateTime(), nullable=True, comment="Retry backoff"),
        Column(
            "lease_until",
            UtcDateTime(),
            nullable=True,
            comment="When the claim ends: its lease or the claim timeout, if sooner",
        ),
        Column("partition_key", _key_type(), nullable=True),
        Column("abandoned_at", UtcDateTime(), nullable=True),
        Column("last_error", Text(), nullable=True),
        Column(
            "pending_key",
            _key_type(),
            Computed(
                f"CASE WHEN {_PENDING_SQL} THEN partition_key END", persisted=True
            ),
            comment="Partition key of undelivered rows (indexed on MySQL/MariaDB)",
        ),
    )
    # PostgreSQL / SQLite: partial indexes over undelivered rows only.
    partial = (
        ("keyless", (table.c.seq,), f"{_PENDING_SQL} AND partition_key IS NULL"),
        ("keyed", (table.c.partition_key, table.c.seq), f"{_PENDING_SQL} AND partition_key IS NOT NULL"),
        ("published", (table.c.published_at,), "published_at IS NOT NULL"),
        ("abandoned", (table.c.abandoned_at, table.c.seq), "abandoned_at IS NOT NULL"),
    )
    for suffix, columns, where in partial:
        Index(
            index_name(indexes_of, suffix),
            *columns,
            postgresql_where=text(where),
            sqlite_where=text(where),
        ).ddl_if(dialect=_PARTIAL_DIALECTS)
    # MySQL / MariaDB: no partial indexes; a generated column stands in. InnoDB
    # appends the primary key to each index, so (abandoned_at) orders by seq too.
    Index(
        index_name(indexes_of, "state"),
        table.c.published_at,
        table.c.abandoned_at,
        table.c.partition_key,
        table.c.seq,
    ).ddl_if(dialect=_MYSQL_DIALECTS)
    Index(index_name(indexes_of, "pending_key"), table.c.pending_key, table.c.seq).ddl_if(
        dialect=_MYSQL_DIALECTS
    )
    Index(index_name(indexes_of, "abandoned_at"), table.c.abandoned_at).ddl_if(
        dialect=_MYSQL_DIALECTS
    )
    return table


def figures_table_name(outbox_table_name: str) -> str:
    """Name of the table of the relays' figures beside the outbox table ``outbox_table_name``.

    ``<outbox>_figures``; a long outbox name is cut and completed with a hash
    of the full name, as index names are.
    """
    name = f"{outbox_table_name}_figures"
    if len(name) <= _MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(outbox_table_name.encode()).hexdigest()[:8]
    return f"{outbox_table_name[: _MAX_IDENTIFIER - len(f'_{digest}_figures')]}_{digest}_figures"


def define_figures_table(name: str, metadata: MetaData) -> Table:
    """Define the table of the relays' figures called ``name`` (`figures_table_name` of its outbox table).

    One row per relay window (`spakky.outbox.common.figures.RelayFigures`),
    indexed by its end: reads take the latest windows along it and each
    write deletes the windows past retention along it.
    """
    validate_table_name(name)
    table = Table(
        name,
        metadata,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
        Column("relay", String(RELAY_NAME_MAX), nullable=False),
        Column("started_at", UtcDateTime(), nullable=False),
        Column("ended_at", UtcDateTime(), nullable=False),
        Column("sent", BigInteger(), nullable=False),
        Column("refused", BigInteger(), nullable=False),
        Column("abandoned", BigInteger(), nullable=False),
        Column("batches", BigInteger(), nullable=False),
        Column("commit_to_send", String(400), nullable=False, comment="Sends per wait bucket, comma-separated"),
        Column("commit_to_send_max", Double[float](), nullable=False),
    )
    Index(index_name(name, "ended_at"), table.c.ended_at)
    return table


metadata = MetaData()
"""Alembic-friendly metadata holding the outbox table and its figures table under their default names."""

default_outbox_table: Table = define_outbox_table(DEFAULT_OUTBOX_TABLE_NAME, metadata)
"""The outbox table under its default name."""


class NamedTables:
    """The tables of one definition by name, each built once in a `MetaData` of its own."""

    def __init__(self, define: Callable[[str, MetaData], Table], default: Table) -> None:
        """Build tables with ``define``; ``default`` stands under its own name."""
        self._define = define
        self._tables = {default.name: default}
        self._lock = threading.Lock()

    def get(self, name: str) -> Table:
        """The table called ``name``, built on first use.

        Raises:
            InvalidOutboxTableNameError: ``name`` is not a plain SQL identifier.
        """
        with self._lock:
            table = self._tables.get(name)
            if table is None:
                table = self._tables[name] = self._define(name, MetaData())
            return table


_outbox_tables = NamedTables(define_outbox_table, default_outbox_table)

default_figures_table: Table = define_figures_table(figures_table_name(DEFAULT_OUTBOX_TABLE_NAME), metadata)
"""The relays' figures table of the outbox table under its default name."""

_figures_tables = NamedTables(define_figures_table, default_figures_table)


def outbox_table(name: str = DEFAULT_OUTBOX_TABLE_NAME) -> Table:
    """Return the outbox table called ``name`` (each name has its own MetaData).

    Raises:
        InvalidOutboxTableNameError: ``name`` is not a plain SQL identifier.
    """
    return _outbox_tables.get(name)


def figures_table(outbox_table_name: str = DEFAULT_OUTBOX_TABLE_NAME) -> Table:
    """Return the relays' figures table of the outbox table ``outbox_table_name``."""
    return _figures_tables.get(figures_table_name(outbox_table_name))


def create_table(connection: Connection, table: Table) -> None:
    """Create ``table`` (an outbox table) with its indexes, and its figures table, unless they exist.

    MySQL/MariaDB get a table and its indexes in separate statements, so a
    relay could see the table before its indexes, which claims name: there it
    is built whole under another name and renamed into place (one atomic step;
    when another relay was first, the copy is dropped). The figures table is
    only written and read along its index, so it is created plainly.
    """
    _create_figures_table(connection, figures_table(table.name))
    if connection.dialect.name not in _MYSQL:
        table.create(connection, checkfirst=True)
        return
    if inspect(connection).has_table(table.name):
        return
    staging = _define(f"{table.name[:48]}_new_{uuid.uuid4().hex[:8]}", MetaData(), table.name)
    staging.create(connection)
    preparer = connection.dialect.identifier_preparer
    try:
        connection.exec_driver_sql(
            f"RENAME TABLE {preparer.format_table(staging)} TO {preparer.format_table(table)}"
        )
    except DBAPIError:
        staging.drop(connection)
        if not inspect(connection).has_table(table.name):
            raise


def _create_figures_table(connection: Connection, figures: Table) -> None:
    """Create ``figures`` unless it exists, letting another instance win the race.

    SQLite and MySQL/MariaDB commit each CREATE on its own, so a relay starting
    beside another can lose on this table while the outbox table is not there
    yet: it must carry on when the figures table exists after its failure.
    """
    try:
        figures.create(connection, checkfirst=True)
    except DBAPIError:
        if not inspect(connection).has_table(figures.name):
            raise


def _drop(connection: Connection, table: Table) -> None:
    table.drop(connection, checkfirst=True)
    figures_table(table.name).drop(connection, checkfirst=True)


def _apply(
    engine: Engine | Connection, ddl: Callable[[Connection, Table], None], name: str
) -> Table:
    """Run ``ddl`` on the outbox table ``name``: on ``engine`` itself when it is a connection, else in a transaction of its own."""
    table = outbox_table(name)
    if isinstance(engine, Connection):
        ddl(engine, table)
    else:
        with engine.begin() as connection:
            ddl(connection, table)
    return table


async def _apply_async(
    engine: AsyncEngine, ddl: Callable[[Connection, Table], None], name: str
) -> Table:
    """Run ``ddl`` on the outbox table ``name`` in a transaction of ``engine``."""
    table = outbox_table(name)
    async with engine.begin() as connection:
        await connection.run_sync(ddl, table)
    return table


def create_outbox_table(
    engine: Engine | Connection, name: str = DEFAULT_OUTBOX_TABLE_NAME
) -> Table:
    """Create the outbox table and its indexes (and the relays' figures table) when missing; return the table."""
    return _apply(engine, create_table, name)


async def create_outbox_table_async(
    engine: AsyncEngine, name: str = DEFAULT_OUTBOX_TABLE_NAME
) -> Table:
    """Create the outbox table and its indexes (and the relays' figures table) when missing (async engine)."""
    return await _apply_async(engine, create_table, name)


def drop_outbox_table(
    engine: Engine | Connection, name: str = DEFAULT_OUTBOX_TABLE_NAME
) -> None:
    """Drop the outbox table and its figures table when they exist."""
    _apply(engine, _drop, name)


async def drop_outbox_table_async(
    engine: AsyncEngine, name: str = DEFAULT_OUTBOX_TABLE_NAME
) -> None:
    """Drop the outbox table and its figures table when they exist (async engine)."""
    await _apply_async(engine, _drop, name)


LEGACY_OUTBOX_TABLE_NAME = "spakky_event_outbox"
"""Table of the outbox built into spakky-sqlalchemy 8.5."""

_LEGACY_COLUMNS = tuple(
    name for name in MESSAGE_COLUMNS if name not in ("seq", "claimed_at", "last_error")
)
"""Columns of the 8.5 table: ours but the sequence, the claim and the last error."""


def copy_legacy_messages(
    connection: Connection,
    name: str = DEFAULT_OUTBOX_TABLE_NAME,
    *,
    legacy_name: str = LEGACY_OUTBOX_TABLE_NAME,
    include_published: bool = False,
) -> int:
    """Copy the messages of spakky-sqlalchemy 8.5's outbox table into this one.

    Run it once, with the 8.5 relays stopped, inside a migration (e.g. an
    Alembic ``op.get_bind()``). Messages keep their ids, retry counts and
    states and are ordered by ``created_at`` then ``id``; claims are dropped.
    Columns the 8.5 table gained late (``partition_key``, ``abandoned_at``)
    may be missing and are then left empty.

    Returns:
        How many messages were copied.
    """
    table = create_outbox_table(connection, name)
    legacy = Table(
        validate_table_name(legacy_name), MetaData(), autoload_with=connection
    )
    columns = [c for c in _LEGACY_COLUMNS if c in legacy.c]
    query = select(*(legacy.c[c] for c in columns)).order_by(
        legacy.c.created_at, legacy.c.id
    )
    if not include_published:
        query = query.where(legacy.c.published_at.is_(None))
    result = connection.execute(
        insert(table).from_select([table.c[c] for c in columns], query)
    )
    return result.rowcount
