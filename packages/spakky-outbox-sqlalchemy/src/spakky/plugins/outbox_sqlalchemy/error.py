"""Errors raised by the SQLAlchemy outbox storage."""

from spakky.outbox.error import AbstractSpakkyOutboxError


class InvalidOutboxTableNameError(AbstractSpakkyOutboxError):
    """Raised when the configured outbox table name is not a plain SQL identifier."""

    message = (
        "Outbox table name must be a plain SQL identifier: a letter or underscore "
        "followed by up to 62 letters, digits or underscores"
    )


class InvalidOutboxSqlAlchemyConfigError(AbstractSpakkyOutboxError):
    """Raised when an ``SPAKKY_OUTBOX_SQLALCHEMY__*`` setting has an invalid value."""

    message = "Invalid SQLAlchemy outbox configuration"


class UnsupportedOutboxDialectError(AbstractSpakkyOutboxError):
    """Raised when the database dialect cannot host the outbox."""

    message = (
        "The SQLAlchemy outbox supports PostgreSQL, MariaDB 10.6+/MySQL 8.0.1+ "
        "and SQLite 3.35+"
    )
