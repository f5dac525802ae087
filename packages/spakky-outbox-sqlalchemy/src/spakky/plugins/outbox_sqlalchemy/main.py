"""Base plugin of spakky-outbox-sqlalchemy: registers its configuration."""

from spakky.core.application.application import SpakkyApplication
from spakky.outbox.registry import announce_storage
from spakky.plugins.outbox_sqlalchemy.config import (
    STORAGE_NAME,
    SqlAlchemyOutboxConfig,
)


def initialize(app: SpakkyApplication) -> None:
    """Register the SQLAlchemy outbox configuration Pod and announce the storage.

    The storages themselves are added by the ``spakky.outbox`` contribution,
    and only when this storage is the selected one; announcing here lets that
    choice see every storage package loaded into the application.

    Args:
        app: The Spakky application instance.
    """
    app.add(SqlAlchemyOutboxConfig)
    announce_storage(app, STORAGE_NAME)
