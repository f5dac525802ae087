"""Orders service: writes the order to Redis and publishes an integration event."""

import os

from spakky.core.stereotype.usecase import UseCase
from spakky.data.aspects.transactional import Transactional
from spakky.event.event_publisher import IAsyncEventPublisher
from spakky.outbox.testing.events import OrderPlaced, OrderRejectedError
from spakky.plugins.outbox_redis.codec import RedisKeys
from spakky.plugins.outbox_redis.transaction import current_async_pipeline


@UseCase()
class PlaceOrderUseCase:
    """Stores the order and publishes `OrderPlaced` in one MULTI/EXEC."""

    def __init__(self, publisher: IAsyncEventPublisher) -> None:
        """Inject the event publisher."""
        self._publisher = publisher

    @Transactional()
    async def execute(
        self, order_id: str, customer_id: str, *, fail: bool = False
    ) -> None:
        """Place an order; ``fail`` raises after publishing."""
        keys = RedisKeys(os.environ["SPAKKY_OUTBOX_REDIS__KEY_PREFIX"])
        await current_async_pipeline().set(keys.business(f"order:{order_id}"), customer_id)
        await self._publisher.publish(
            OrderPlaced(order_id=order_id, customer_id=customer_id)
        )
        if fail:
            raise OrderRejectedError
