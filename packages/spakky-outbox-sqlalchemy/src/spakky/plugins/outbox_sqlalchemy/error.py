"""Errors raised by the SQLAlchemy outbox storage."""

from abc import abstractmethod
from typing import override

from spakky.outbox.error import AbstractOutboxDetailedError, InvalidOutboxConfigError
from spakky.outbox.inbox.error import InboxNotFoundError


class InvalidOutboxTableNameError(AbstractOutboxDetailedError):
    """Raised when the configured outbox table name is not a plain SQL identifier."""

    message = (
        "The outbox table name (SPAKKY_OUTBOX_SQLALCHEMY__TABLE_NAME) must be a "
        "letter or underscore followed by up to 62 letters, digits or underscores; "
        "reserved words and mixed case are fine, the name is quoted"
    )


class InvalidOutboxSqlAlchemyConfigError(InvalidOutboxConfigError):
    """Raised when an ``SPAKKY_OUTBOX_SQLALCHEMY__*`` setting has an invalid value."""

    message = "Invalid SQLAlchemy outbox configuration"


class UnsupportedOutboxDialectError(AbstractOutboxDetailedError):
    """Raised when the database dialect cannot host the outbox."""

    message = (
        "The SQLAlchemy outbox supports PostgreSQL, MariaDB 10.6+/MySQL 8.0.1+ "
        "and SQLite 3.35+"
    )


class _TableMissingError(AbstractOutboxDetailedError):
    """A table missing where it must exist, named with its database and what to do."""

    def __init__(self, url: str, table_name: str) -> None:
        """Name the database (URL without password) and the table."""
        self.url = url
        self.table_name = table_name
        super().__init__(f"table {table_name!r} at {url}. {self._advice()}")

    @abstractmethod
    def _advice(self) -> str:
        """How the table comes to exist, and which settings to check."""


class OutboxTableNotFoundError(_TableMissingError):
    """Raised when the outbox table is missing where it must already exist.

    Administration (stats, list, requeue, purge) and acknowledgements never
    create the table; only saving and claiming do, and only with
    ``SPAKKY_OUTBOX_SQLALCHEMY__CREATE_TABLE`` on.
    """

    message = "The outbox table does not exist"

    @override
    def _advice(self) -> str:
        return (
            "Create it in a migration with "
            "spakky.plugins.outbox_sqlalchemy.schema.create_outbox_table(engine, "
            f"{self.table_name!r}) (or create_outbox_table_async), or let a relay or a "
            "save create it with SPAKKY_OUTBOX_SQLALCHEMY__CREATE_TABLE=true (the "
            "default); check SPAKKY_SQLALCHEMY__CONNECTION_STRING and "
            "SPAKKY_OUTBOX_SQLALCHEMY__TABLE_NAME if it should exist"
        )


class InboxTableNotFoundError(InboxNotFoundError, _TableMissingError):
    """Raised when the inbox's status or purge finds no inbox table.

    Only a record (or a lease) creates the table, so ``spakky-outbox inbox``
    pointed at a mistyped database or table creates nothing there.
    """

    message = "The inbox table does not exist"

    @override
    def _advice(self) -> str:
        return (
            "The first message an @Idempotent handler "
            "records creates it (SPAKKY_OUTBOX_SQLALCHEMY__CREATE_TABLE=true, the default); "
            "check SPAKKY_SQLALCHEMY__CONNECTION_STRING and "
            "SPAKKY_OUTBOX_SQLALCHEMY__INBOX_TABLE_NAME if it should exist"
        )
