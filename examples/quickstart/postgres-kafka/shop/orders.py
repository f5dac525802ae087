"""Placing an order: the order row and its event commit in one transaction."""

from spakky.core.stereotype.usecase import UseCase
from spakky.data.aspects.transactional import Transactional
from spakky.event.event_publisher import IAsyncEventPublisher
from spakky.plugins.sqlalchemy.persistency.session_manager import AsyncSessionManager
from sqlalchemy import Column, Integer, MetaData, String, Table, insert

from shop.events import OrderPlaced

metadata = MetaData()
orders = Table(
    "orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("amount", Integer, nullable=False),
)


class OrderRejectedError(Exception):
    """The order breaks a business rule; nothing of it is stored or sent."""


@UseCase()
class PlaceOrder:
    """Stores an order and publishes `OrderPlaced` in the same transaction."""

    def __init__(self, sessions: AsyncSessionManager, events: IAsyncEventPublisher) -> None:
        self._sessions = sessions  # the session @Transactional() opens, shared with the outbox
        self._events = events

    @Transactional()
    async def execute(self, order_id: str, customer_id: str, amount: int) -> None:
        """Store the order and its event; an amount over 1000 rolls both back."""
        await self._sessions.session.execute(
            insert(orders).values(order_id=order_id, customer_id=customer_id, amount=amount)
        )
        # Stored in the outbox table by this same transaction; relayed after commit.
        await self._events.publish(OrderPlaced(order_id=order_id, customer_id=customer_id, amount=amount))
        if amount > 1000:
            raise OrderRejectedError(f"{order_id}: {amount} is over the limit of 1000")
