"""Base plugin: MongoDB clients and configuration."""

from spakky.core.application.application import SpakkyApplication
from spakky.outbox.registry import announce_storage
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.config import STORAGE_NAME, MongoOutboxConfig


def initialize(app: SpakkyApplication) -> None:
    """Register the MongoDB outbox settings and clients; announce ``mongodb`` before contributions choose a storage."""
    announce_storage(app, STORAGE_NAME)
    app.add(MongoOutboxConfig)
    app.add(MongoOutboxConnectionManager)
