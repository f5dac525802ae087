"""OpenTelemetry tracing through the outbox: the tracer adapter alone, and the sync relay in a real application."""

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from memory_app import build_app
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from outbox_testapp.service import PlaceOrderUseCase
from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.common.config import DeliveryChoice, OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.testing.transport import RecordingEventTransport
from spakky.outbox.testing.waiting import wait_for
from spakky.outbox.tracing.opentelemetry import OpenTelemetryOutboxTracer
from spakky.tracing.context import TraceContext


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """An SDK tracer provider exporting into memory (never the global one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _message(headers: dict[str, str] | None = None) -> OutboxMessage:
    return OutboxMessage(uuid4(), "OrderPlaced", b"{}", headers or {}, datetime.now(UTC), partition_key="c-1")


def _only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def test_tracer_storing_in_current_span_expect_child_and_headers_moved_to_it(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Inside an OpenTelemetry span the create span is its child, and the stored traceparent becomes the create span's."""
    provider, exporter = spans
    tracer = OpenTelemetryOutboxTracer(OutboxConfig(), provider)
    message = _message({"traceparent": TraceContext.new_root().to_traceparent()})
    with provider.get_tracer("test").start_as_current_span("checkout") as business, tracer.storing(message):
        pass
    create = _only(exporter, "create OrderPlaced")
    assert create.parent is not None and create.parent.span_id == business.get_span_context().span_id
    context = create.get_span_context()
    assert context is not None
    assert message.headers["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def test_tracer_sending_untraced_message_expect_root_span_without_link(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A message stored without a trace is sent in a root span with no link; a failed send names its error type."""
    provider, exporter = spans
    tracer = OpenTelemetryOutboxTracer(OutboxConfig().model_copy(update={"delivery": DeliveryChoice.KAFKA}), provider)
    with pytest.raises(TimeoutError), tracer.sending(_message(), 3, 1.5):
        raise TimeoutError
    send = _only(exporter, "send OrderPlaced")
    assert (send.parent, list(send.links)) == (None, [])
    assert send.attributes is not None
    assert {k: send.attributes[k] for k in ("outbox.attempt", "outbox.wait_seconds", "messaging.system", "error.type")} == {
        "outbox.attempt": 3,
        "outbox.wait_seconds": 1.5,
        "messaging.system": "kafka",
        "error.type": "TimeoutError",
    }
    assert not send.status.is_ok


def test_tracing_sync_relay_in_application_expect_send_span_linked_to_create_span(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """In an application with the sync relay, the event's send span is linked to and parented by its create span, in the use case's trace."""
    provider, exporter = spans

    @Pod()
    def tracer_provider() -> trace.TracerProvider:
        return provider

    saved = dict(os.environ)
    os.environ.update({"SPAKKY_OUTBOX__RELAY": "sync", "SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS": "0.05"})
    try:
        app = build_app().add(tracer_provider).start()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    business = TraceContext.new_root()
    try:
        context = app.application_context
        TraceContext.set(business)
        context.get(ApplicationEventLoop).run(context.get(PlaceOrderUseCase).execute("o-t", "c-t"), timeout=10)
        delivered = wait_for(lambda: context.get(RecordingEventTransport).delivered, timeout=10)
    finally:
        TraceContext.clear()
        app.stop()
    create = _only(exporter, "create OrderPlaced")
    send = _only(exporter, "send OrderPlaced")
    created = create.get_span_context()
    assert created is not None and created.trace_id == int(business.trace_id, 16)
    assert send.parent is not None and send.parent.span_id == created.span_id
    assert [link.context.span_id for link in send.links] == [created.span_id]
    assert delivered[0].headers["traceparent"] == f"00-{created.trace_id:032x}-{created.span_id:016x}-01"
