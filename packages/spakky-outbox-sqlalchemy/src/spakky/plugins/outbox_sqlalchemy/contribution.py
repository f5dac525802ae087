"""Contribution to ``spakky-outbox``: offers the SQLAlchemy storages."""

from spakky.core.application.application import SpakkyApplication
from spakky.outbox.registry import register_storage
from spakky.plugins.outbox_sqlalchemy.config import STORAGE_NAME
from spakky.plugins.outbox_sqlalchemy.inbox import (
    AsyncSqlAlchemyInboxStorage,
    SqlAlchemyInboxStorage,
)
from spakky.plugins.outbox_sqlalchemy.storage import (
    AsyncSqlAlchemyOutboxStorage,
    SqlAlchemyOutboxStorage,
)


def initialize(app: SpakkyApplication) -> None:
    """Register the SQLAlchemy storages and inboxes when they are the selected outbox storage.

    Args:
        app: The Spakky application instance.
    """
    register_storage(
        app,
        STORAGE_NAME,
        SqlAlchemyOutboxStorage,
        AsyncSqlAlchemyOutboxStorage,
        inboxes=(SqlAlchemyInboxStorage, AsyncSqlAlchemyInboxStorage),
    )
