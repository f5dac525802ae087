"""The Redis business write of the shared inbox test application: bookings pushed in the handler's MULTI/EXEC."""

from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.testing.inbox_app import IBookings
from spakky.plugins.outbox_redis.codec import RedisKeys
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.transaction import (
    current_async_pipeline,
    current_pipeline,
)


@Pod()
class RedisBookings(IBookings):
    """Pushes the run number on the order's bookings list, under the outbox's prefix (its slot)."""

    def __init__(self, config: RedisOutboxConfig) -> None:
        """Write business keys under the outbox's prefix."""
        self.keys = RedisKeys(config.key_prefix)

    @override
    async def book(self, order_id: str, run: int) -> None:
        """Push an async booking."""
        await current_async_pipeline().rpush(self.keys.business(f"bookings:{order_id}"), run)

    @override
    def book_sync(self, order_id: str, run: int) -> None:
        """Push a sync booking."""
        current_pipeline().rpush(self.keys.business(f"sync-bookings:{order_id}"), run)
