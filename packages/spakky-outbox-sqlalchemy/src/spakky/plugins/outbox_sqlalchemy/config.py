"""SQLAlchemy outbox configuration, read from ``SPAKKY_OUTBOX_SQLALCHEMY__*``."""

import re
from typing import Annotated, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from spakky.core.stereotype.configuration import Configuration
from spakky.outbox.common.config import settings_config, settings_errors
from spakky.plugins.outbox_sqlalchemy.error import (
    InvalidOutboxSqlAlchemyConfigError,
    InvalidOutboxTableNameError,
)

STORAGE_NAME = "sqlalchemy"
"""Value of ``SPAKKY_OUTBOX__STORAGE`` that selects this storage."""
SPAKKY_OUTBOX_SQLALCHEMY_CONFIG_ENV_PREFIX: str = "SPAKKY_OUTBOX_SQLALCHEMY__"
TABLE_NAME_VARIABLE = f"{SPAKKY_OUTBOX_SQLALCHEMY_CONFIG_ENV_PREFIX}TABLE_NAME"
"""Environment variable naming the outbox table."""
INBOX_TABLE_NAME_VARIABLE = f"{SPAKKY_OUTBOX_SQLALCHEMY_CONFIG_ENV_PREFIX}INBOX_TABLE_NAME"
"""Environment variable naming the inbox table."""
DEFAULT_OUTBOX_TABLE_NAME: str = "spakky_outbox_message"
"""Table used when ``SPAKKY_OUTBOX_SQLALCHEMY__TABLE_NAME`` is unset."""
DEFAULT_INBOX_TABLE_NAME: str = "spakky_outbox_inbox"
"""Inbox table used when ``SPAKKY_OUTBOX_SQLALCHEMY__INBOX_TABLE_NAME`` is unset."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def validate_table_name(name: str) -> str:
    """Return ``name`` when it is a plain SQL identifier.

    Reserved words and mixed case are accepted: the outbox SQL quotes the name.

    Raises:
        InvalidOutboxTableNameError: The name is not a plain identifier.
    """
    if _IDENTIFIER.fullmatch(name) is None:
        raise InvalidOutboxTableNameError(repr(name))
    return name


@Configuration()
class SqlAlchemyOutboxConfig(BaseSettings):
    """Settings of the SQLAlchemy outbox storage."""

    model_config: ClassVar[SettingsConfigDict] = settings_config(SPAKKY_OUTBOX_SQLALCHEMY_CONFIG_ENV_PREFIX)

    table_name: str = DEFAULT_OUTBOX_TABLE_NAME
    """Name of the outbox table: a plain SQL identifier, quoted where needed."""
    inbox_table_name: str = DEFAULT_INBOX_TABLE_NAME
    """Name of the inbox table (idempotent consumers): a plain SQL identifier."""
    create_table: bool = True
    """Create the tables (outbox and inbox) and their indexes on first use when they are missing."""
    notify: bool = True
    """On PostgreSQL, send a NOTIFY after each saving commit (coalesced) and LISTEN for it."""
    notify_throttle_seconds: Annotated[float, Field(ge=0)] = 0.02
    """Shortest gap between two NOTIFYs sent by one process."""

    @field_validator("table_name", "inbox_table_name")
    @classmethod
    def _check_table_name(cls, value: str) -> str:
        return validate_table_name(value)

    def __init__(self) -> None:
        """Load the settings from environment variables.

        Raises:
            InvalidOutboxSqlAlchemyConfigError: A variable has a wrong type or range.
            InvalidOutboxTableNameError: The table name is not a plain identifier.
        """
        with settings_errors(SPAKKY_OUTBOX_SQLALCHEMY_CONFIG_ENV_PREFIX, InvalidOutboxSqlAlchemyConfigError):
            super().__init__()
