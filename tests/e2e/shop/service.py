"""Orders use case: the order goes to Redis, its event to the outbox, in one EXEC."""

import os

from spakky.core.stereotype.usecase import UseCase
from spakky.data.aspects.transactional import Transactional
from spakky.event.event_publisher import IAsyncEventPublisher
from spakky.plugins.outbox_redis.transaction import current_async_pipeline

from ..orders import E2eOrderPlaced, E2eOrderRejectedError


@UseCase()
class E2ePlaceOrderUseCase:
    """Stores the order in Redis and publishes `E2eOrderPlaced`."""

    def __init__(self, publisher: IAsyncEventPublisher) -> None:
        """Inject the event publisher."""
        self._publisher = publisher

    @Transactional()
    async def execute(
        self, order_id: str, customer_id: str, *, fail: bool = False
    ) -> None:
        """Place an order; ``fail`` raises after publishing so nothing commits."""
        prefix = os.environ["SPAKKY_OUTBOX_REDIS__KEY_PREFIX"]
        await current_async_pipeline().hset(
            f"{prefix}:order:{order_id}", mapping={"customer_id": customer_id}
        )
        await self._publisher.publish(
            E2eOrderPlaced(order_id=order_id, customer_id=customer_id)
        )
        if fail:
            raise E2eOrderRejectedError
