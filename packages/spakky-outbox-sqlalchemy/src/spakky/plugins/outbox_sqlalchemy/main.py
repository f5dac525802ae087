"""Base plugin of spakky-outbox-sqlalchemy: registers its configuration."""

from spakky.core.application.application import SpakkyApplication
from spakky.plugins.outbox_sqlalchemy.config import SqlAlchemyOutboxConfig


def initialize(app: SpakkyApplication) -> None:
    """Register the SQLAlchemy outbox configuration Pod.

    The storages themselves are added by the ``spakky.outbox`` contribution,
    and only when this storage is the selected one.

    Args:
        app: The Spakky application instance.
    """
    app.add(SqlAlchemyOutboxConfig)
