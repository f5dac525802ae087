"""Traces and relay histograms through a real outbox: PostgreSQL, the async relay, RabbitMQ.

A Spakky application built with ``load_plugins()`` (SQLAlchemy outbox,
spakky-rabbitmq's transport) gets an OpenTelemetry SDK tracer provider and
meter provider as Pods, so the outbox's OpenTelemetry adapters record into the
SDK's in-memory exporter and reader (nothing global is set: other tests in the
process keep the no-op tracer). A use case runs in a business trace; the test
follows the event from the span that stored it to the span that sent it and to
the headers RabbitMQ delivered, and reads the relay's histograms.

With ``SPAKKY_OUTBOX_TRACE_OUTPUT=<path>`` set (``make trace``) the test also
writes the span tree it collected to that file: docs/operations.md shows that
run's file.
"""

import asyncio
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from uuid import UUID

import pytest
from aio_pika.abc import AbstractChannel
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.pod.annotations.pod import Pod
from spakky.tracing.context import TraceContext

from . import sql_shop
from .common import (
    SqlE2e,
    consume,
    patched_environ,
    rabbitmq_env,
    run_on_app_loop,
    wait_until,
)
from .orders import E2eOrderPlaced
from .relay_worker import RELAY_PLUGINS
from .sql_shop.service import E2eSqlPlaceOrderUseCase

ORDERS = 3
TRACE_OUTPUT_ENV = "SPAKKY_OUTBOX_TRACE_OUTPUT"
"""Where the test writes the span tree it collected, when set."""
SHOWN_ATTRIBUTES = (
    "messaging.message.id",
    "messaging.destination.name",
    "outbox.partition_key",
    "outbox.attempt",
    "outbox.wait_seconds",
)


class Telemetry:
    """An SDK tracer provider and meter provider recording in memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self, name: str) -> list[ReadableSpan]:
        """The finished spans called ``name``."""
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def histograms(self) -> dict[str, HistogramDataPoint]:
        """The histogram points recorded so far, by instrument name."""
        data = self.reader.get_metrics_data()
        assert data is not None
        return {
            metric.name: point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            for point in metric.data.data_points
            if isinstance(point, HistogramDataPoint)
        }


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """In-memory telemetry, shut down afterwards."""
    recorded = Telemetry()
    try:
        yield recorded
    finally:
        recorded.tracer_provider.shutdown()
        recorded.meter_provider.shutdown()


def _app(telemetry: Telemetry) -> SpakkyApplication:
    """The service: SQLAlchemy outbox and spakky-rabbitmq by ``load_plugins``, the SDK providers as Pods."""

    @Pod()
    def tracer_provider() -> trace.TracerProvider:
        return telemetry.tracer_provider

    @Pod()
    def meter_provider() -> metrics.MeterProvider:
        return telemetry.meter_provider

    return (
        SpakkyApplication(ApplicationContext())
        .load_plugins(include=set(RELAY_PLUGINS["sqlalchemy"]))
        .add(tracer_provider)
        .add(meter_provider)
        .scan(sql_shop)
        .start()
    )


def span_tree(spans: Sequence[ReadableSpan], delivered: Sequence[dict[str, object]], telemetry: Telemetry) -> str:
    """The spans as a tree (name, kind, span id, parent, link, duration, key attributes), what the broker got, the histograms."""
    ids = {span.get_span_context().span_id for span in spans}  # type: ignore[union-attr]
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def show(span: ReadableSpan, depth: int) -> None:
        context = span.get_span_context()
        assert context is not None and span.start_time is not None and span.end_time is not None
        indent = "    " * depth
        parent = f"{span.parent.span_id:016x}" if span.parent is not None else "none"
        links = "".join(f"  link={link.context.span_id:016x}" for link in span.links)
        lines.append(
            f"{indent}{span.name}  kind={span.kind.name}  span={context.span_id:016x}  parent={parent}"
            f"{links}  duration={(span.end_time - span.start_time) / 1e6:.2f} ms"
        )
        attributes = span.attributes or {}
        for name in SHOWN_ATTRIBUTES:
            if name in attributes:
                lines.append(f"{indent}    {name} = {attributes[name]!r}")
        for child in children.get(context.span_id, []):
            show(child, depth + 1)

    for parent, roots in children.items():
        if parent is not None and parent in ids:
            continue
        if parent is None:
            lines.append("(no parent)")
        else:
            trace_id = roots[0].get_span_context().trace_id  # type: ignore[union-attr]
            lines.append(f"trace={trace_id:032x}  use case span={parent:016x} (Spakky TraceContext, not exported)")
        for root in roots:
            show(root, 1)
    for headers in delivered:
        shown = {name: headers[name] for name in ("spakky-outbox-message-id", "traceparent") if name in headers}
        lines.append(f"RabbitMQ delivered headers: {shown}")
    for name, point in sorted(telemetry.histograms().items()):
        lines.append(f"{name}: count={point.count} sum={point.sum:.6f} max={point.max:.6f}")
    return "\n".join(lines) + "\n"


def _traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


async def test_tracing_committed_events_expect_create_span_in_business_trace_send_span_linked_and_parented(
    sql_e2e: SqlE2e, rabbitmq_url: str, rabbit: AbstractChannel, telemetry: Telemetry
) -> None:
    """Each stored event has a create span under the use case's trace; its relay send span is linked to and parented by it; RabbitMQ gets the create span's traceparent; the histograms count the sends."""
    queue, collector = await consume(rabbit, E2eOrderPlaced.__name__)
    business = TraceContext.new_root()
    app: SpakkyApplication | None = None
    try:
        with patched_environ({**rabbitmq_env(rabbitmq_url), "SPAKKY_OUTBOX__RELAY": "async"}):
            app = _app(telemetry)
        use_case = app.application_context.get(E2eSqlPlaceOrderUseCase)

        def place(order_id: str) -> None:
            TraceContext.set(business)
            run_on_app_loop(app, use_case.execute(order_id, "c-traced"))

        for index in range(ORDERS):
            await asyncio.to_thread(place, f"traced-{index}")
        await wait_until(
            lambda: len(collector.received) >= ORDERS and len(telemetry.finished("send E2eOrderPlaced")) >= ORDERS,
            60.0,
            lambda: f"{len(collector.received)} delivered, {len(telemetry.finished('send E2eOrderPlaced'))} send spans",
        )
    finally:
        if app is not None:
            await asyncio.to_thread(app.stop)
        await queue.delete(if_unused=False, if_empty=False)

    stored = {UUID(str(row[0])) for row in sql_e2e.rows(f"SELECT id FROM {sql_e2e.outbox_table}")}
    creates = {span.attributes["messaging.message.id"]: span for span in telemetry.finished("create E2eOrderPlaced")}  # type: ignore[index]
    sends = {span.attributes["messaging.message.id"]: span for span in telemetry.finished("send E2eOrderPlaced")}  # type: ignore[index]
    assert set(creates) == set(sends) == {str(message_id) for message_id in stored}
    delivered = [headers.get("traceparent") for _, headers in collector.received]
    for message_id, create in creates.items():
        create_context = create.get_span_context()
        assert create_context is not None and create.parent is not None
        # The create span is a child of the span the use case ran in.
        assert (create_context.trace_id, create.parent.span_id) == (int(business.trace_id, 16), int(business.span_id, 16))
        assert create.kind is SpanKind.PRODUCER
        assert create.attributes is not None and create.attributes["messaging.operation.type"] == "create"
        send = sends[message_id]
        assert send.kind is SpanKind.CLIENT
        assert send.parent is not None and send.parent.span_id == create_context.span_id
        assert [link.context.span_id for link in send.links] == [create_context.span_id]
        assert send.get_span_context().trace_id == create_context.trace_id  # type: ignore[union-attr]
        attributes = send.attributes
        assert attributes is not None
        assert attributes["messaging.operation.type"] == "send"
        assert attributes["messaging.destination.name"] == E2eOrderPlaced.__name__
        assert attributes["outbox.partition_key"] == "c-traced"
        assert attributes["outbox.attempt"] == 1
        assert isinstance(attributes["outbox.wait_seconds"], float) and attributes["outbox.wait_seconds"] >= 0
        # What the broker delivered carries the creation context: the consumer continues from the create span.
        assert _traceparent(create) in delivered
    histograms = telemetry.histograms()
    output = os.environ.get(TRACE_OUTPUT_ENV)
    if output:
        Path(output).write_text(
            span_tree(telemetry.spans.get_finished_spans(), [headers for _, headers in collector.received], telemetry)
        )
    assert histograms["outbox.send.duration"].count == ORDERS
    assert histograms["outbox.commit_to_send"].count == ORDERS
    assert histograms["outbox.flush.duration"].count >= 1
    batches = histograms["outbox.batch.size"]
    assert (batches.count >= 1, batches.sum) == (True, ORDERS)
