"""Orders service: writes the order row and publishes an integration event."""

from spakky.core.stereotype.usecase import UseCase
from spakky.data.aspects.transactional import Transactional
from spakky.event.event_publisher import IAsyncEventPublisher
from spakky.outbox.testing.events import OrderPlaced, OrderRejectedError
from spakky.plugins.sqlalchemy.persistency.session_manager import AsyncSessionManager
from sqlalchemy import text


@UseCase()
class PlaceOrderUseCase:
    """Stores the order and publishes `OrderPlaced` in one transaction."""

    def __init__(
        self, publisher: IAsyncEventPublisher, sessions: AsyncSessionManager
    ) -> None:
        """Inject the event publisher and the session manager."""
        self._publisher = publisher
        self._sessions = sessions

    @Transactional()
    async def execute(
        self, order_id: str, customer_id: str, *, fail: bool = False
    ) -> None:
        """Place an order; ``fail`` raises after publishing."""
        await self._sessions.session.execute(
            text("INSERT INTO orders (order_id, customer_id) VALUES (:o, :c)"),
            {"o": order_id, "c": customer_id},
        )
        await self._publisher.publish(
            OrderPlaced(order_id=order_id, customer_id=customer_id)
        )
        if fail:
            raise OrderRejectedError
