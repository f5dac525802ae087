"""Tests of the outbox table definition and its per-dialect DDL."""

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from uuid import uuid4

import pytest
from spakky.plugins.outbox_sqlalchemy.error import InvalidOutboxTableNameError
from spakky.plugins.outbox_sqlalchemy.schema import (
    UtcDateTime,
    copy_legacy_messages,
    create_outbox_table,
    default_outbox_table,
    drop_outbox_table,
    metadata,
    outbox_table,
)
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    Uuid,
    create_engine,
    inspect,
    select,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable


def _ddl(dialect: Dialect) -> str:
    return str(CreateTable(default_outbox_table).compile(dialect=dialect))


def _index(name: str) -> Index:
    return next(i for i in default_outbox_table.indexes if i.name == name)


_DIALECT_DDL: dict[str, tuple[Dialect, tuple[str, ...]]] = {
    "mysql_longblob_datetime6_binary_keys": (
        mysql.dialect(is_mariadb=True),
        (
            "payload LONGBLOB NOT NULL",
            "created_at DATETIME(6) NOT NULL",
            "partition_key VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            "AUTO_INCREMENT",
        ),
    ),
    "postgresql_bytea_timestamptz_native_uuid": (
        postgresql.dialect(),
        (
            "payload BYTEA NOT NULL",
            "created_at TIMESTAMP WITH TIME ZONE NOT NULL",
            "id UUID NOT NULL",
            "seq BIGSERIAL NOT NULL",
        ),
    ),
    "sqlite_integer_primary_key_seq": (sqlite.dialect(), ("seq INTEGER NOT NULL", "PRIMARY KEY (seq)")),
}
"""Per dialect, what its DDL must say: on MySQL/MariaDB payloads are LONGBLOB, times DATETIME(6), keys byte-wise;
on PostgreSQL payloads are BYTEA, times timestamptz, ids native UUIDs; on SQLite ``seq`` is the INTEGER PRIMARY
KEY, so it autoincrements."""


@pytest.mark.parametrize("case", list(_DIALECT_DDL), ids=list(_DIALECT_DDL))
def test_outbox_table_dialect_expect_its_column_types(case: str) -> None:
    """Each dialect's DDL holds its own column types and key (payload, times, ids, ``seq``)."""
    dialect, expected = _DIALECT_DDL[case]
    ddl = _ddl(dialect)
    assert [fragment for fragment in expected if fragment not in ddl] == []


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()])
def test_outbox_indexes_partial_dialects_expect_where_undelivered(
    dialect: Dialect,
) -> None:
    """The claim indexes cover only undelivered rows where the dialect allows it."""
    keyless = str(
        CreateIndex(_index("ix_spakky_outbox_message_keyless")).compile(dialect=dialect)
    )
    keyed = str(
        CreateIndex(_index("ix_spakky_outbox_message_keyed")).compile(dialect=dialect)
    )
    assert keyless.endswith(
        "(seq) WHERE published_at IS NULL AND abandoned_at IS NULL "
        "AND partition_key IS NULL"
    )
    assert "(partition_key, seq) WHERE published_at IS NULL" in keyed


def test_outbox_indexes_created_per_dialect_expect_only_their_own(
    tmp_path: Path,
) -> None:
    """SQLite gets the partial indexes and none of the MySQL generated-column ones."""
    engine = create_engine(f"sqlite:///{tmp_path}/schema.db")
    create_outbox_table(engine, "schema_check")
    names = {i["name"] for i in inspect(engine).get_indexes("schema_check")}
    drop_outbox_table(engine, "schema_check")
    engine.dispose()
    assert names == {
        "ix_schema_check_keyless",
        "ix_schema_check_keyed",
        "ix_schema_check_published",
        "ix_schema_check_abandoned",
    }


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()])
def test_outbox_abandoned_index_expect_partial_in_requeue_order(dialect: Dialect) -> None:
    """Requeue walks abandoned rows oldest first through the partial index, no sort."""
    ddl = str(
        CreateIndex(_index("ix_spakky_outbox_message_abandoned")).compile(dialect=dialect)
    )
    assert ddl.endswith("(abandoned_at, seq) WHERE abandoned_at IS NOT NULL")


def test_outbox_table_lease_until_expect_nullable_utc_time() -> None:
    """Each claim's end is a nullable UTC time (DATETIME(6) on MariaDB/MySQL)."""
    column = default_outbox_table.c.lease_until
    assert column.nullable and isinstance(column.type, UtcDateTime)
    assert "lease_until DATETIME(6)" in _ddl(mysql.dialect(is_mariadb=True))


def test_outbox_table_same_name_expect_same_table_own_metadata() -> None:
    """Each name maps to one table; custom names live outside the shared metadata."""
    custom = outbox_table("custom_outbox")
    assert outbox_table("custom_outbox") is custom
    assert outbox_table() is default_outbox_table
    assert default_outbox_table.metadata is metadata
    assert custom.metadata is not metadata


def test_outbox_table_bad_name_expect_error() -> None:
    """A name that is not a plain identifier is refused."""
    with pytest.raises(InvalidOutboxTableNameError):
        outbox_table("outbox; DROP TABLE users")


def test_utc_datetime_bind_expect_utc_naive_outside_postgresql() -> None:
    """Aware values are stored as UTC: naive on MySQL/SQLite, aware on PostgreSQL."""
    value = datetime(2026, 1, 2, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    kind = UtcDateTime()
    assert kind.process_bind_param(value, mysql.dialect()) == datetime(
        2026, 1, 2, 10, 0
    )
    assert kind.process_bind_param(value, postgresql.dialect()) == datetime(
        2026, 1, 2, 10, 0, tzinfo=UTC
    )
    assert kind.process_bind_param(None, sqlite.dialect()) is None


def test_utc_datetime_result_expect_aware_utc() -> None:
    """Values read back are always aware and in UTC."""
    kind = UtcDateTime()
    naive = datetime(2026, 1, 2, 10, 0)
    assert kind.process_result_value(naive, sqlite.dialect()) == naive.replace(
        tzinfo=UTC
    )
    other = datetime(2026, 1, 2, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert kind.process_result_value(other, postgresql.dialect()) == naive.replace(
        tzinfo=UTC
    )
    assert kind.process_result_value(None, sqlite.dialect()) is None


def test_copy_legacy_messages_expect_undelivered_copied_in_order(
    tmp_path: Path,
) -> None:
    """Messages of the 8.5 ``spakky_event_outbox`` table move over, oldest first."""
    engine = create_engine(f"sqlite:///{tmp_path}/legacy.db")
    legacy = Table(
        "spakky_event_outbox",
        MetaData(),
        Column("id", Uuid(), primary_key=True),
        Column("event_name", Text()),
        Column("payload", LargeBinary()),
        Column("headers", JSON()),
        Column("created_at", DateTime(timezone=True)),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Column("retry_count", Integer()),
        Column("claimed_at", DateTime(timezone=True), nullable=True),
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {
            "id": uuid4(),
            "event_name": "E",
            "payload": b"p",
            "headers": {"h": "v"},
            "created_at": now + timedelta(seconds=offset),
            "published_at": now if offset == 1 else None,
            "retry_count": offset,
            "claimed_at": now,
        }
        for offset in (2, 1, 0)
    ]
    with engine.begin() as connection:
        legacy.create(connection)
        connection.execute(legacy.insert(), rows)
        copied = copy_legacy_messages(connection, "migrated")
        table = outbox_table("migrated")
        stored = (
            connection.execute(select(table).order_by(table.c.seq)).mappings().all()
        )
    engine.dispose()
    assert copied == 2
    assert [r["id"] for r in stored] == [rows[2]["id"], rows[0]["id"]]
    assert [r["retry_count"] for r in stored] == [0, 2]
    assert all(r["claimed_by"] is None and r["partition_key"] is None for r in stored)
