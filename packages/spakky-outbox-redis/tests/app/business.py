"""The Redis business writes of the shared test applications, in the transaction's MULTI/EXEC under the outbox's prefix."""

from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.testing.events import OrderPlaced
from spakky.outbox.testing.inbox_app import IBookings
from spakky.outbox.testing.outbox_app import IOrders
from spakky.plugins.outbox_redis.codec import RedisKeys
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.transaction import (
    current_async_pipeline,
    current_pipeline,
)


@Pod()
class RedisBusiness(IOrders, IBookings):
    """Writes business keys under the outbox's prefix (its slot): an order's customer, a booking's run numbers."""

    def __init__(self, config: RedisOutboxConfig) -> None:
        """Write business keys under the outbox's prefix."""
        self.keys = RedisKeys(config.key_prefix)

    @override
    async def add(self, order: OrderPlaced) -> None:
        """Set ``order:<id>`` to the customer."""
        await current_async_pipeline().set(self.keys.business(f"order:{order.order_id}"), order.customer_id)

    @override
    async def book(self, order_id: str, run: int) -> None:
        """Push an async booking on the order's bookings list."""
        await current_async_pipeline().rpush(self.keys.business(f"bookings:{order_id}"), run)

    @override
    def book_sync(self, order_id: str, run: int) -> None:
        """Push a sync booking."""
        current_pipeline().rpush(self.keys.business(f"sync-bookings:{order_id}"), run)
