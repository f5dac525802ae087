"""An `@EventHandler` recording every `E2eOrderPlaced` it is given, with the trace it came in."""

from spakky.event.stereotype.event_handler import EventHandler, on_event
from spakky.tracing.context import TraceContext

from ..orders import E2eOrderPlaced

RECEIVED: list[tuple[E2eOrderPlaced, str | None]] = []
"""(event, trace id the consumer restored from the message headers), in arrival order."""


@EventHandler()
class E2eOrderPlacedConsumer:
    """Appends each event to `RECEIVED`."""

    @on_event(E2eOrderPlaced)
    async def on_placed(self, event: E2eOrderPlaced) -> None:
        """Record the event and its trace id."""
        trace = TraceContext.get()
        RECEIVED.append((event, trace.trace_id if trace is not None else None))
