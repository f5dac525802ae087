"""Tests of the per-dialect outbox SQL (compiled text, no database)."""

import pytest
from spakky.plugins.outbox_sqlalchemy.error import UnsupportedOutboxDialectError
from spakky.plugins.outbox_sqlalchemy.operations import (
    DialectKind,
    OutboxSql,
    decode_headers,
    dialect_kind,
)
from spakky.plugins.outbox_sqlalchemy.schema import outbox_table
from sqlalchemy.dialects import mssql, mysql, postgresql, sqlite

_DIALECTS = {
    DialectKind.POSTGRESQL: postgresql.dialect(),
    DialectKind.MYSQL: mysql.dialect(is_mariadb=True),
    DialectKind.SQLITE: sqlite.dialect(),
}


def _sql(kind: DialectKind, table_name: str = "spakky_outbox_message") -> OutboxSql:
    return OutboxSql(outbox_table(table_name), _DIALECTS[kind], "owner", 3.0, 1.0)


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


def test_outbox_sql_durations_expect_dialect_units_and_span_capped() -> None:
    """Durations bind as seconds, microseconds or an SQLite modifier; the span is the lease."""
    assert _sql(DialectKind.POSTGRESQL)._durations() == {
        "claim_span": 1.0,
        "claim_lease": 1.0,
        "claim_timeout": 3.0,
    }
    assert _sql(DialectKind.MYSQL)._durations()["claim_timeout"] == 3_000_000
    assert _sql(DialectKind.SQLITE)._durations()["claim_span"] == "+1.000000 seconds"
    capped = OutboxSql(outbox_table(), _DIALECTS[DialectKind.SQLITE], "o", 2.0, 30.0)
    assert capped._durations()["claim_span"] == "+2.000000 seconds"


@pytest.mark.parametrize("kind", list(DialectKind))
@pytest.mark.parametrize("table_name", ["order", "Outbox"])
def test_outbox_sql_table_name_expect_quoted_for_dialect(
    kind: DialectKind, table_name: str
) -> None:
    """Reserved words and mixed case enter the SQL quoted the dialect's way."""
    quote = "`" if kind is DialectKind.MYSQL else '"'
    sql = _sql(kind, table_name)
    assert sql._name == f"{quote}{table_name}{quote}"
    index = f"ix_{table_name}_state"
    hint = (
        f" FORCE INDEX ({sql.dialect.identifier_preparer.quote(index)})"
        if kind is DialectKind.MYSQL
        else ""
    )
    assert f"FROM {quote}{table_name}{quote}{hint} WHERE" in sql._keyless_probe
    assert f" {table_name} " not in sql._keyless_probe


def test_outbox_sql_plain_table_name_expect_unquoted() -> None:
    """A plain lower-case name needs no quotes."""
    assert _sql(DialectKind.POSTGRESQL)._name == "spakky_outbox_message"


def test_outbox_sql_eligibility_expect_lease_and_backoff_by_database_clock() -> None:
    """A row is claimable without a live lease and past its backoff, on the server clock."""
    eligible = _sql(DialectKind.POSTGRESQL)._eligible
    assert "(lease_until IS NULL OR lease_until <= now())" in eligible
    assert "(not_before IS NULL OR not_before <= now())" in eligible


def test_decode_headers_object_expect_dict() -> None:
    """Stored JSON text of an object decodes to the headers."""
    assert decode_headers('{"traceparent": "00-1"}') == {"traceparent": "00-1"}
    assert decode_headers(b"{}") == {}


@pytest.mark.parametrize("raw", ["[1, 2]", '"text"', "{not json", "null"])
def test_decode_headers_not_an_object_expect_value_error(raw: str) -> None:
    """Anything but a JSON object is refused with ValueError (JSON errors are ones too)."""
    with pytest.raises(ValueError):
        decode_headers(raw)
