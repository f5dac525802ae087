"""Consumers of ``PaymentReceived`` writing MongoDB documents: transactional, lease and sync handlers."""

from spakky.core.common.mutability import immutable
from spakky.data.aspects.transactional import Transactional
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.event.stereotype.event_handler import EventHandler, on_event
from spakky.outbox.inbox import Idempotent, InboxMode
from spakky.plugins.outbox_mongodb.config import MongoOutboxConfig
from spakky.plugins.outbox_mongodb.transaction import (
    current_async_session,
    current_session,
)


@immutable
class PaymentReceived(AbstractIntegrationEvent):
    """A payment arrived for an order; ``fail`` makes every handler raise after its write."""

    order_id: str
    fail: bool = False


class HandlerFailedError(Exception):
    """Raised by a handler asked to fail."""


@EventHandler()
class Payments:
    """Books each payment once: a booking document in the handler's MongoDB transaction."""

    def __init__(self, config: MongoOutboxConfig) -> None:
        """Write beside the outbox, in its database."""
        self._database = config.database
        self.runs = 0

    @Transactional()
    @Idempotent()
    @on_event(PaymentReceived)
    async def book(self, event: PaymentReceived) -> None:
        """Insert a booking; raise after it when asked to fail."""
        self.runs += 1
        session = current_async_session()
        bookings = session.client[self._database]["bookings"]
        await bookings.insert_one({"order_id": event.order_id, "run": self.runs}, session=session)
        if event.fail:
            raise HandlerFailedError(event.order_id)


@EventHandler()
class Receipts:
    """Sends a receipt (an effect outside the database): lease mode."""

    def __init__(self) -> None:
        """Count the receipts sent."""
        self.sent: list[str] = []

    @Idempotent(mode=InboxMode.LEASE, lease_seconds=30)
    @on_event(PaymentReceived)
    async def send(self, event: PaymentReceived) -> None:
        """Send the receipt; raise before sending when asked to fail."""
        if event.fail:
            raise HandlerFailedError(event.order_id)
        self.sent.append(event.order_id)


@EventHandler()
class SyncPayments:
    """The sync flavour: a plain method, the sync transaction and inbox."""

    def __init__(self, config: MongoOutboxConfig) -> None:
        """Write beside the outbox, in its database."""
        self._database = config.database

    @Transactional()
    @Idempotent(consumer="sync-book")
    @on_event(PaymentReceived)
    def book(self, event: PaymentReceived) -> None:
        """Insert a sync booking."""
        session = current_session()
        session.client[self._database]["sync_bookings"].insert_one({"order_id": event.order_id}, session=session)
