"""OpenTelemetry adapter of the tracing port, after OpenTelemetry's messaging conventions (needs ``opentelemetry-api``).

Two spans per event. ``create <event>`` (kind PRODUCER, ``messaging.operation.type``
``create``) wraps the save in the use case's transaction, as a child of the
business trace: the current OpenTelemetry span, or else the ``traceparent``
Spakky's propagator wrote into the headers. Its context replaces that
``traceparent`` in the stored headers: it is the message's creation context,
which the consumer continues from. ``send <event>`` (kind CLIENT,
``messaging.operation.type`` ``send``) wraps each relay send; it is linked to the
creation context and, since every transport sends the stored headers on (so
the consumer continues that trace), parented to it too, so one trace runs from
the commit to the broker. A message stored without a trace gets a root send span.
"""

from collections.abc import Generator
from contextlib import contextmanager
from typing import override

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue
from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.ports.tracing import IOutboxTracer

_W3C = TraceContextTextMapPropagator()
"""Only the W3C trace context goes into stored headers (no baggage: it may hold personal data)."""


@Pod()
class OpenTelemetryOutboxTracer(IOutboxTracer):
    """Spans ``create <event>`` where the use case stores an event and ``send <event>`` per relay send."""

    def __init__(self, config: OutboxConfig, tracer_provider: trace.TracerProvider | None = None) -> None:
        """Trace on ``tracer_provider`` (default: the global one, also when it is set later)."""
        self._tracer = trace.get_tracer("spakky.outbox", tracer_provider=tracer_provider)
        # The broker is known only when the outbox's own delivery adapter sends.
        self._system = None if config.delivery is None else str(config.delivery)

    def _attributes(self, message: OutboxMessage, operation: str) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {
            "messaging.operation.type": operation,
            "messaging.operation.name": operation,
            "messaging.destination.name": message.event_name,
            "messaging.message.id": str(message.id),
            "messaging.message.body.size": len(message.payload),
        }
        if self._system is not None:
            attributes["messaging.system"] = self._system
        if message.partition_key is not None:
            attributes["outbox.partition_key"] = message.partition_key
        return attributes

    @override
    @contextmanager
    def storing(self, message: OutboxMessage) -> Generator[None]:
        business = trace.get_current_span().get_span_context()
        parent = None if business.is_valid else _W3C.extract(message.headers)
        with self._tracer.start_as_current_span(
            f"create {message.event_name}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes=self._attributes(message, "create"),
        ) as span:
            if span.get_span_context().is_valid:
                _W3C.inject(message.headers)
            yield

    @override
    @contextmanager
    def sending(self, message: OutboxMessage, attempt: int, waited_seconds: float) -> Generator[None]:
        created = _W3C.extract(message.headers)
        creation = trace.get_current_span(created).get_span_context()
        attributes = self._attributes(message, "send")
        attributes["outbox.attempt"] = attempt
        attributes["outbox.wait_seconds"] = waited_seconds
        with self._tracer.start_as_current_span(
            f"send {message.event_name}",
            context=created,
            kind=SpanKind.CLIENT,
            links=[Link(creation)] if creation.is_valid else [],
            attributes=attributes,
        ) as span:
            try:
                yield
            except BaseException as error:
                span.set_attribute("error.type", type(error).__qualname__)
                raise
