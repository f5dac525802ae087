"""Base plugin: Redis clients and configuration."""

from spakky.core.application.application import SpakkyApplication
from spakky.outbox.registry import announce_storage
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import RedisOutboxConfig

STORAGE_NAME = "redis"
"""Name of this storage for ``SPAKKY_OUTBOX__STORAGE``."""


def initialize(app: SpakkyApplication) -> None:
    """Register the Redis outbox configuration and clients.

    Also announces the ``redis`` storage as loaded, so the outbox can choose
    among every loaded storage before contributions register theirs.

    Args:
        app: The Spakky application instance.
    """
    announce_storage(app, STORAGE_NAME)
    app.add(RedisOutboxConfig)
    app.add(RedisOutboxConnectionManager)
