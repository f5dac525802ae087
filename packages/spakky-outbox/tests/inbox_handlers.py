"""The in-memory business writes of the shared test applications, and a named and an unguarded inbox consumer."""

from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.data.aspects.transactional import Transactional
from spakky.event.stereotype.event_handler import EventHandler, on_event
from spakky.outbox.inbox import Idempotent
from spakky.outbox.testing.events import OrderPlaced
from spakky.outbox.testing.inbox_app import IBookings, PaymentReceived
from spakky.outbox.testing.memory import InMemoryOutboxState
from spakky.outbox.testing.outbox_app import IOrders


class _WritesInMemory:
    """A consumer whose business writes go into the application's in-memory store (committed with its inbox record)."""

    def __init__(self, state: InMemoryOutboxState) -> None:
        """Write into the application's in-memory store."""
        self._state = state


@Pod()
class MemoryBookings(IOrders, IBookings, _WritesInMemory):
    """Writes order and booking rows into the application's in-memory store."""

    @override
    async def add(self, order: OrderPlaced) -> None:
        """Write the order row: its customer under ``order:<id>``."""
        self._state.put_business(f"order:{order.order_id}", order.customer_id)

    @override
    async def book(self, order_id: str, run: int) -> None:
        """Write an async booking row."""
        self._state.put_business(f"booking:{order_id}:{run}", order_id)

    @override
    def book_sync(self, order_id: str, run: int) -> None:
        """Write a sync booking row."""
        self._state.put_business(f"sync-booking:{order_id}:{run}", order_id)


@EventHandler()
class Audits(_WritesInMemory):
    """A second consumer of the same message under its own name, and one missing its transaction."""

    @Transactional()
    @Idempotent(consumer="audit")
    @on_event(PaymentReceived)
    async def audit(self, event: PaymentReceived) -> None:
        """Write an audit row."""
        self._state.put_business(f"audit:{event.order_id}", event.order_id)

    @Idempotent()
    @on_event(PaymentReceived)
    async def unguarded(self, event: PaymentReceived) -> None:
        """Transactional mode without ``@Transactional()``: a mistake the inbox reports."""
