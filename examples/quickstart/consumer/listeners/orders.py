"""Print each OrderPlaced that arrives from RabbitMQ."""

from spakky.core.common.mutability import immutable
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.event.stereotype.event_handler import EventHandler, on_event
from spakky.tracing.context import TraceContext


@immutable
class OrderPlaced(AbstractIntegrationEvent):
    """The shop's event as this service reads it (the queue is named after the class)."""

    order_id: str
    customer_id: str
    amount: int


@EventHandler()
class OrderPlacedPrinter:
    """spakky-rabbitmq consumes the OrderPlaced queue and calls this for each event."""

    @on_event(OrderPlaced)
    async def on_order_placed(self, event: OrderPlaced) -> None:
        """Print the order and the trace it belongs to."""
        trace = TraceContext.get()  # continued from the traceparent header the event carried
        print(
            f"[consumer] {event.order_id} from {event.customer_id} ({event.amount})"
            f" trace {trace.trace_id if trace else '-'}",
            flush=True,
        )
