"""Base plugin: MongoDB clients and configuration."""

from spakky.core.application.application import SpakkyApplication
from spakky.outbox.registry import announce_storage
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.config import MongoOutboxConfig

STORAGE_NAME = "mongodb"
"""Name of this storage for ``SPAKKY_OUTBOX__STORAGE``."""


def initialize(app: SpakkyApplication) -> None:
    """Register the MongoDB outbox configuration and clients.

    Also announces the ``mongodb`` storage as loaded, so the outbox can choose
    among every loaded storage before contributions register theirs.

    Args:
        app: The Spakky application instance.
    """
    announce_storage(app, STORAGE_NAME)
    app.add(MongoOutboxConfig)
    app.add(MongoOutboxConnectionManager)
