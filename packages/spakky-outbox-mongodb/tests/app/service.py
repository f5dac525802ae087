"""Orders service: writes the order document and publishes an integration event."""

import os

from spakky.core.common.mutability import immutable
from spakky.core.stereotype.usecase import UseCase
from spakky.data.aspects.transactional import Transactional
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.event.event_publisher import IAsyncEventPublisher
from spakky.plugins.outbox_mongodb.transaction import current_async_session


class OrderRejectedError(Exception):
    """Raised by the use case after publishing, to prove the rollback."""


@immutable
class OrderPlaced(AbstractIntegrationEvent):
    """Integration event leaving through the MongoDB outbox."""

    order_id: str
    customer_id: str

    @property
    def partition_key(self) -> str | None:
        """Orders of one customer stay in order."""
        return self.customer_id


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
