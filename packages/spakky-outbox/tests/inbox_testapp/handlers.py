"""Consumers of ``PaymentReceived``: transactional, named, lease-mode and sync handlers."""

from spakky.core.common.mutability import immutable
from spakky.data.aspects.transactional import Transactional
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.event.stereotype.event_handler import EventHandler, on_event
from spakky.outbox.inbox import Idempotent, InboxMode
from spakky.outbox.testing.memory import InMemoryOutboxState


@immutable
class PaymentReceived(AbstractIntegrationEvent):
    """A payment arrived for an order; ``fail`` makes every handler raise."""

    order_id: str
    fail: bool = False


class HandlerFailedError(Exception):
    """Raised by a handler asked to fail."""


@EventHandler()
class Payments:
    """Books each payment once (business write in the handler's transaction)."""

    def __init__(self, state: InMemoryOutboxState) -> None:
        """Write into the application's in-memory store."""
        self._state = state
        self.runs = 0

    @Transactional()
    @Idempotent()
    @on_event(PaymentReceived)
    async def book(self, event: PaymentReceived) -> None:
        """Write a booking row; raise after it when asked to fail."""
        self.runs += 1
        self._state.put_business(f"booking:{event.order_id}:{self.runs}", event.order_id)
        if event.fail:
            raise HandlerFailedError(event.order_id)

    @Transactional()
    @Idempotent(consumer="audit")
    @on_event(PaymentReceived)
    async def audit(self, event: PaymentReceived) -> None:
        """A second consumer of the same message under its own name."""
        self._state.put_business(f"audit:{event.order_id}", event.order_id)

    @Idempotent()
    @on_event(PaymentReceived)
    async def unguarded(self, event: PaymentReceived) -> None:
        """Transactional mode without ``@Transactional()``: a mistake the inbox reports."""


@EventHandler()
class Receipts:
    """Sends a receipt (an effect outside the database): lease mode."""

    def __init__(self) -> None:
        """Count the receipts sent."""
        self.sent: list[str] = []
        self.attempts = 0

    @Idempotent(mode=InboxMode.LEASE, lease_seconds=30)
    @on_event(PaymentReceived)
    async def send(self, event: PaymentReceived) -> None:
        """Send the receipt; raise before sending when asked to fail."""
        self.attempts += 1
        if event.fail:
            raise HandlerFailedError(event.order_id)
        self.sent.append(event.order_id)


@EventHandler()
class SyncPayments:
    """The sync flavour: a plain method under the sync aspect."""

    def __init__(self, state: InMemoryOutboxState) -> None:
        """Write into the application's in-memory store."""
        self._state = state
        self.runs = 0

    @Transactional()
    @Idempotent(consumer="sync-book")
    @on_event(PaymentReceived)
    def book(self, event: PaymentReceived) -> None:
        """Write a booking row."""
        self.runs += 1
        self._state.put_business(f"sync-booking:{event.order_id}:{self.runs}", event.order_id)
