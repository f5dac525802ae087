"""Events and use cases of the example orders service."""

from spakky.core.common.mutability import immutable
from spakky.core.stereotype.usecase import UseCase
from spakky.data.aspects.transactional import Transactional
from spakky.domain.models.event import AbstractDomainEvent, AbstractIntegrationEvent
from spakky.event.event_publisher import IAsyncEventPublisher
from spakky.event.stereotype.event_handler import EventHandler, on_event

from examples.orders.store import IOrderStore


@immutable
class OrderPlaced(AbstractIntegrationEvent):
    """Leaves the service through the outbox, keyed by customer."""

    order_id: str
    customer_id: str
    amount: int

    @property
    def partition_key(self) -> str | None:
        """One customer's orders stay in order on the broker."""
        return self.customer_id


@immutable
class OrderAccepted(AbstractDomainEvent):
    """Handled inside the service; never stored in the outbox."""

    order_id: str


class OrderRejectedError(Exception):
    """The business rule refused the order; the transaction rolls back."""


@EventHandler()
class OrderAcceptedLog:
    """Prints domain events as the service handles them in process."""

    @on_event(OrderAccepted)
    async def on_accepted(self, event: OrderAccepted) -> None:
        """Print the accepted order."""
        print(f"  [domain]  accepted {event.order_id} (handled in process, not stored)")


@UseCase()
class PlaceOrderUseCase:
    """Stores the order and its integration event in one transaction."""

    def __init__(self, publisher: IAsyncEventPublisher, orders: IOrderStore) -> None:
        """Inject the event publisher and the order store."""
        self._publisher = publisher
        self._orders = orders

    @Transactional()
    async def execute(self, order_id: str, customer_id: str, amount: int) -> None:
        """Place an order; amounts over 1000 are rejected after the event was published."""
        await self._orders.add(order_id, customer_id, amount)
        await self._publisher.publish(OrderAccepted(order_id=order_id))
        await self._publisher.publish(
            OrderPlaced(order_id=order_id, customer_id=customer_id, amount=amount)
        )
        if amount > 1000:
            raise OrderRejectedError(f"{order_id}: amount {amount} over the limit")
