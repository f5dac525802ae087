"""Orders service: an integration event for the outbox, a domain event handled in process."""

from dataclasses import field
from typing import Any

from spakky.core.common.mutability import immutable
from spakky.core.stereotype.usecase import UseCase
from spakky.data.aspects.transactional import Transactional
from spakky.domain.models.event import AbstractDomainEvent, AbstractIntegrationEvent
from spakky.event.event_publisher import IAsyncEventPublisher
from spakky.event.stereotype.event_handler import EventHandler, on_event
from spakky.outbox.testing.events import OrderPlaced
from spakky.outbox.testing.memory import InMemoryOutboxState


@immutable
class OrderNoted(AbstractDomainEvent):
    """Domain event: handled in process, never stored."""

    order_id: str


@immutable
class BadEvent(AbstractIntegrationEvent):
    """An event with a field pydantic cannot serialise."""

    order_id: str
    blob: Any = field(default_factory=object)


HANDLED: list[str] = []


@EventHandler()
class OrderNotes:
    """Records domain events handled in process."""

    @on_event(OrderNoted)
    async def on_noted(self, event: OrderNoted) -> None:
        """Remember the order id."""
        HANDLED.append(event.order_id)


@UseCase()
class PlaceOrderUseCase:
    """Writes the order and publishes both events in one transaction."""

    def __init__(self, publisher: IAsyncEventPublisher, state: InMemoryOutboxState) -> None:
        """Inject the publisher and the store standing for the database."""
        self._publisher = publisher
        self._state = state

    @Transactional()
    async def execute(self, order_id: str, customer_id: str, *, fail: bool = False, bad: bool = False) -> None:
        """Place an order; ``fail`` raises after publishing, ``bad`` publishes an unserialisable event."""
        self._state.put_business(f"order:{order_id}", customer_id)
        await self._publisher.publish(OrderNoted(order_id=order_id))
        if bad:
            await self._publisher.publish(BadEvent(order_id=order_id))
        await self._publisher.publish(OrderPlaced(order_id=order_id, customer_id=customer_id))
        if fail:
            raise RuntimeError("business rule failed after publishing")
