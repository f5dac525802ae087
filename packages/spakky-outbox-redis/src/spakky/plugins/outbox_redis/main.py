"""Base plugin: Redis clients and configuration."""

from spakky.core.application.application import SpakkyApplication
from spakky.outbox.registry import announce_storage
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import STORAGE_NAME, RedisOutboxConfig


def initialize(app: SpakkyApplication) -> None:
    """Register the Redis outbox settings and clients; announce ``redis`` before contributions choose a storage."""
    announce_storage(app, STORAGE_NAME)
    app.add(RedisOutboxConfig)
    app.add(RedisOutboxConnectionManager)
