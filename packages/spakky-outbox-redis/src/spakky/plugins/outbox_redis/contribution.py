"""Contribution to spakky-outbox: registers the Redis storages when selected."""

from spakky.core.application.application import SpakkyApplication
from spakky.outbox.common.registry import register_storage
from spakky.plugins.outbox_redis.main import STORAGE_NAME
from spakky.plugins.outbox_redis.storage import (
    AsyncRedisOutboxStorage,
    RedisOutboxStorage,
)


def initialize(app: SpakkyApplication) -> None:
    """Register the Redis storages when ``redis`` is the selected outbox storage.

    Args:
        app: The Spakky application instance.
    """
    register_storage(app, STORAGE_NAME, RedisOutboxStorage, AsyncRedisOutboxStorage)
