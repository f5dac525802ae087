"""Placing an order: the order hash and its event are written by one MULTI/EXEC."""

from spakky.core.stereotype.usecase import UseCase
from spakky.data.aspects.transactional import Transactional
from spakky.event.event_publisher import IAsyncEventPublisher
from spakky.plugins.outbox_redis.codec import RedisKeys
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.transaction import current_async_pipeline

from shop.events import OrderPlaced


class OrderRejectedError(Exception):
    """The order breaks a business rule; nothing of it is stored or sent."""


@UseCase()
class PlaceOrder:
    """Stores an order and publishes `OrderPlaced` in the same transaction."""

    def __init__(self, config: RedisOutboxConfig, events: IAsyncEventPublisher) -> None:
        self._keys = RedisKeys(config.key_prefix)  # business keys in the outbox's cluster slot
        self._events = events

    @Transactional()  # on a named method: a decorated __call__ is bypassed by place_order(...)
    async def execute(self, order_id: str, customer_id: str, amount: int) -> None:
        """Store the order and its event; an amount over 1000 rolls both back."""
        pipe = current_async_pipeline()  # the MULTI/EXEC of this transaction
        await pipe.hset(
            self._keys.business(f"order:{order_id}"),
            mapping={"customer_id": customer_id, "amount": amount},
        )
        # Queued on the same pipeline: EXEC writes the order and the message together.
        await self._events.publish(OrderPlaced(order_id=order_id, customer_id=customer_id, amount=amount))
        if amount > 1000:
            raise OrderRejectedError(f"{order_id}: {amount} is over the limit of 1000")
