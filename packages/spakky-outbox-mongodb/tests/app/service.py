"""Orders service: writes the order document and publishes an integration event."""

import os

from spakky.core.stereotype.usecase import UseCase
from spakky.data.aspects.transactional import Transactional
from spakky.event.event_publisher import IAsyncEventPublisher
from spakky.outbox.testing.events import OrderPlaced, OrderRejectedError
from spakky.plugins.outbox_mongodb.transaction import current_async_session


@UseCase()
class PlaceOrderUseCase:
    """Stores the order and publishes `OrderPlaced` in one MongoDB transaction."""

    def __init__(self, publisher: IAsyncEventPublisher) -> None:
        """Inject the event publisher."""
        self._publisher = publisher

    @Transactional()
    async def execute(self, order_id: str, customer_id: str, *, fail: bool = False) -> None:
        """Place an order; ``fail`` raises after publishing."""
        session = current_async_session()
        orders = session.client[os.environ["SPAKKY_OUTBOX_MONGODB__DATABASE"]]["orders"]
        await orders.insert_one({"_id": order_id, "customer_id": customer_id}, session=session)
        await self._publisher.publish(OrderPlaced(order_id=order_id, customer_id=customer_id))
        if fail:
            raise OrderRejectedError
