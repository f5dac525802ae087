"""Invoice each OrderPlaced once: the invoice row and the inbox record commit in one transaction."""

from spakky.core.common.mutability import immutable
from spakky.core.stereotype.usecase import UseCase
from spakky.data.aspects.transactional import Transactional
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.event.stereotype.event_handler import EventHandler, on_event
from spakky.outbox.inbox import Idempotent
from spakky.plugins.sqlalchemy.persistency.session_manager import AsyncSessionManager
from sqlalchemy import Column, Integer, MetaData, String, Table, insert

metadata = MetaData()
invoices = Table(
    "invoices",
    metadata,
    # Not keyed by the order: without the inbox a redelivery would bill twice.
    Column("invoice_id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False),
    Column("amount", Integer, nullable=False),
)


@immutable
class OrderPlaced(AbstractIntegrationEvent):
    """The shop's event as this service reads it (the queue is named after the class)."""

    order_id: str
    customer_id: str
    amount: int


@UseCase()
class InvoiceOrder:
    """Writes one invoice per order; `@Idempotent` makes a redelivered order a no-op."""

    def __init__(self, sessions: AsyncSessionManager) -> None:
        self._sessions = sessions  # the session @Transactional() opens, shared with the inbox

    @Transactional()
    @Idempotent(consumer="billing")  # records (consumer, message) in this transaction first
    async def execute(self, event: OrderPlaced) -> None:
        """Write the invoice; runs only for a message billing has not handled yet."""
        await self._sessions.session.execute(
            insert(invoices).values(order_id=event.order_id, amount=event.amount)
        )
        print(f"[billing] {event.order_id} invoiced ({event.amount})", flush=True)


@EventHandler()
class OrderPlacedHandler:
    """spakky-rabbitmq consumes the OrderPlaced queue and calls this for each delivery.

    No aspect here: Spakky 8.5's consumers subscribe only plain methods, and an
    aspect (``@Transactional()``, ``@Idempotent()``) on this class would hide
    the handler from them. The use case carries both.
    """

    def __init__(self, invoice_order: InvoiceOrder) -> None:
        self._invoice_order = invoice_order

    @on_event(OrderPlaced)
    async def on_order_placed(self, event: OrderPlaced) -> None:
        """Invoice the order (once, however often it is delivered)."""
        await self._invoice_order.execute(event)
