"""Tests of the SQLAlchemy outbox configuration and table-name validation."""

import pytest
from spakky.plugins.outbox_sqlalchemy.config import (
    DEFAULT_OUTBOX_TABLE_NAME,
    SqlAlchemyOutboxConfig,
    validate_table_name,
)
from spakky.plugins.outbox_sqlalchemy.error import (
    InvalidOutboxSqlAlchemyConfigError,
    InvalidOutboxTableNameError,
)
from spakky_outbox_testservices.environ import scoped_environ, settings_of


def test_sqlalchemy_outbox_config_defaults_expect_documented_values() -> None:
    """Without variables the defaults apply."""
    config = SqlAlchemyOutboxConfig()
    assert config.table_name == DEFAULT_OUTBOX_TABLE_NAME == "spakky_outbox_message"
    assert (config.create_table, config.notify, config.notify_throttle_seconds) == (
        True,
        True,
        0.02,
    )


def test_sqlalchemy_outbox_config_env_expect_values_read() -> None:
    """Settings come from ``SPAKKY_OUTBOX_SQLALCHEMY__*`` variables."""
    values = {"TABLE_NAME": "orders_outbox", "CREATE_TABLE": "false", "NOTIFY": "0"}
    with scoped_environ(settings_of("SPAKKY_OUTBOX_SQLALCHEMY", values)):
        config = SqlAlchemyOutboxConfig()
    assert (config.table_name, config.create_table, config.notify) == ("orders_outbox", False, False)


@pytest.mark.parametrize(
    "name", ["", "1outbox", "outbox;drop", "out box", "ou\u00e9tbox", "x" * 64, '"q"']
)
def test_sqlalchemy_outbox_config_bad_table_name_expect_error(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A table name that is not a plain identifier is refused with our error."""
    monkeypatch.setenv("SPAKKY_OUTBOX_SQLALCHEMY__TABLE_NAME", name)
    with pytest.raises(InvalidOutboxTableNameError) as raised:
        SqlAlchemyOutboxConfig()
    assert repr(name) in str(raised.value)
    assert "SPAKKY_OUTBOX_SQLALCHEMY__TABLE_NAME" in str(raised.value)


def test_sqlalchemy_outbox_config_bad_throttle_expect_error_naming_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A value of the wrong type or range names the variable in the error."""
    monkeypatch.setenv("SPAKKY_OUTBOX_SQLALCHEMY__NOTIFY_THROTTLE_SECONDS", "-1")
    with pytest.raises(InvalidOutboxSqlAlchemyConfigError) as raised:
        SqlAlchemyOutboxConfig()
    assert "SPAKKY_OUTBOX_SQLALCHEMY__NOTIFY_THROTTLE_SECONDS" in str(raised.value)


@pytest.mark.parametrize("name", ["a", "_x", "Outbox_2", "order", "user", "x" * 63])
def test_validate_table_name_identifier_expect_returned(name: str) -> None:
    """Plain identifiers up to 63 characters are accepted unchanged."""
    assert validate_table_name(name) == name
