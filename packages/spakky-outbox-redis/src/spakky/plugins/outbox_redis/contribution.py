"""Contribution to spakky-outbox: registers the Redis storages and inboxes when selected."""

from spakky.core.application.application import SpakkyApplication
from spakky.outbox.registry import register_storage
from spakky.plugins.outbox_redis.config import STORAGE_NAME
from spakky.plugins.outbox_redis.inbox import AsyncRedisInboxStorage, RedisInboxStorage
from spakky.plugins.outbox_redis.storage import (
    AsyncRedisOutboxStorage,
    RedisOutboxStorage,
)
from spakky.plugins.outbox_redis.transaction import (
    AsyncRedisTransaction,
    RedisTransaction,
)


def initialize(app: SpakkyApplication) -> None:
    """Register the Redis storages, inboxes and transactions when ``redis`` is selected.

    The Redis transactions are bound as the application's transactions then,
    so ``@Transactional()`` queues business writes and ``save`` in one
    MULTI/EXEC; atomicity covers business data kept in the same Redis only.

    Args:
        app: The Spakky application instance.
    """
    register_storage(
        app,
        STORAGE_NAME,
        RedisOutboxStorage,
        AsyncRedisOutboxStorage,
        transactions=(RedisTransaction, AsyncRedisTransaction),
        inboxes=(RedisInboxStorage, AsyncRedisInboxStorage),
    )
