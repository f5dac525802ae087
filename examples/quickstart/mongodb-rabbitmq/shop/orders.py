"""Placing an order: the order document and its event commit in one MongoDB transaction."""

from spakky.core.stereotype.usecase import UseCase
from spakky.data.aspects.transactional import Transactional
from spakky.event.event_publisher import IAsyncEventPublisher
from spakky.plugins.outbox_mongodb.config import MongoOutboxConfig
from spakky.plugins.outbox_mongodb.transaction import current_async_session

from shop.events import OrderPlaced


class OrderRejectedError(Exception):
    """The order breaks a business rule; nothing of it is stored or sent."""


@UseCase()
class PlaceOrder:
    """Stores an order and publishes `OrderPlaced` in the same transaction."""

    def __init__(self, config: MongoOutboxConfig, events: IAsyncEventPublisher) -> None:
        self._database = config.database  # the shop's documents live beside the outbox
        self._events = events

    @Transactional()  # on a named method: a decorated __call__ is bypassed by place_order(...)
    async def execute(self, order_id: str, customer_id: str, amount: int) -> None:
        """Store the order and its event; an amount over 1000 rolls both back."""
        session = current_async_session()  # the ClientSession of this transaction
        orders = session.client[self._database]["orders"]
        await orders.insert_one(
            {"_id": order_id, "customer_id": customer_id, "amount": amount}, session=session
        )
        # Inserted into the outbox collection by this same transaction; relayed after commit.
        await self._events.publish(OrderPlaced(order_id=order_id, customer_id=customer_id, amount=amount))
        if amount > 1000:
            raise OrderRejectedError(f"{order_id}: {amount} is over the limit of 1000")
