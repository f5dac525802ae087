"""Tests of the per-dialect outbox SQL (compiled text, no database)."""

import pytest
from spakky.plugins.outbox_sqlalchemy.error import UnsupportedOutboxDialectError
from spakky.plugins.outbox_sqlalchemy.operations import (
    MAX_UNION_KEYS,
    DialectKind,
    OutboxSql,
    dialect_kind,
)
from spakky.plugins.outbox_sqlalchemy.schema import default_outbox_table
from sqlalchemy.dialects import mssql, mysql, postgresql, sqlite


def _sql(kind: DialectKind) -> OutboxSql:
    return OutboxSql(default_outbox_table, kind, "owner", 1.5)


@pytest.mark.parametrize(
    ("dialect", "kind"),
    [
        (postgresql.dialect(), DialectKind.POSTGRESQL),
        (mysql.dialect(), DialectKind.MYSQL),
        (mysql.dialect(is_mariadb=True), DialectKind.MYSQL),
        (sqlite.dialect(), DialectKind.SQLITE),
    ],
)
def test_dialect_kind_supported_expect_family(
    dialect: object, kind: DialectKind
) -> None:
    """Every supported dialect maps to the family its SQL is written for."""
    assert dialect_kind(dialect) == kind  # type: ignore[arg-type]


def test_dialect_kind_unsupported_expect_error() -> None:
    """An unsupported dialect is refused with our error naming it."""
    with pytest.raises(UnsupportedOutboxDialectError) as raised:
        dialect_kind(mssql.dialect())
    assert "mssql" in str(raised.value)


def test_outbox_sql_seconds_expect_dialect_units() -> None:
    """Durations bind as seconds, microseconds or an SQLite date modifier."""
    assert _sql(DialectKind.POSTGRESQL).seconds("d", 1.5) == {"d": 1.5}
    assert _sql(DialectKind.MYSQL).seconds("d", 1.5) == {"d": 1_500_000}
    assert _sql(DialectKind.SQLITE).seconds("d", 1.5, sign=-1) == {
        "d": "-1.500000 seconds"
    }


def test_outbox_sql_candidates_postgresql_expect_one_lateral_probe() -> None:
    """On PostgreSQL the keyed lane is one LATERAL probe over an array of keys."""
    sql, params = _sql(DialectKind.POSTGRESQL)._candidates(["a", "b"], 10)
    assert "CROSS JOIN LATERAL" in sql and "UNION ALL SELECT * FROM (SELECT" not in sql
    assert (params["keys"], params["per_key"], params["batch"]) == (["a", "b"], 5, 10)


def test_outbox_sql_candidates_mysql_expect_generated_column_branches() -> None:
    """On MariaDB/MySQL each key is one UNION branch on the generated column."""
    sql, params = _sql(DialectKind.MYSQL)._candidates(["a", "b", "c"], 10)
    assert sql.count("pending_key = :k") == 3
    assert (params["k0"], params["k2"], params["per_key"]) == ("a", "c", 4)


def test_outbox_sql_candidates_no_keys_expect_keyless_lane_only() -> None:
    """With no pending keys only the keyless lane is queried."""
    sql, params = _sql(DialectKind.SQLITE)._candidates([], 10)
    assert "prefix_ok" not in sql and "per_key" not in params


def test_outbox_sql_key_limit_expect_capped_without_lateral() -> None:
    """Dialects without LATERAL visit at most `MAX_UNION_KEYS` keys per claim."""
    assert _sql(DialectKind.POSTGRESQL)._key_limit(100) == 200
    assert _sql(DialectKind.MYSQL)._key_limit(100) == MAX_UNION_KEYS
    assert _sql(DialectKind.SQLITE)._key_limit(5) == 10
