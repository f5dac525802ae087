"""The relay's spans and timings around each send and flush, shared by the sync and async relays.

Plain context managers: both relays enter them with ``with`` around the
transport call, so the generated sync relay uses the very same code.
"""

import time
from collections.abc import Generator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime

from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.ports.metrics import IOutboxMetrics
from spakky.outbox.ports.tracing import IOutboxTracer


class RelayTelemetry:
    """Times the relay's transport calls for the metrics port and opens the tracer's send spans."""

    def __init__(self, metrics: IOutboxMetrics | None, tracer: IOutboxTracer | None) -> None:
        self._metrics = metrics
        self._tracer = tracer

    def claimed(self, count: int) -> None:
        """A claim returned ``count`` messages."""
        if self._metrics is not None:
            self._metrics.record_batch_size(count)

    @contextmanager
    def sending(self, message: OutboxMessage) -> Generator[None]:
        """Around one ``transport.send``: its span, its duration, and the wait of a send that went through."""
        waited = max(0.0, (datetime.now(UTC) - message.created_at).total_seconds())
        span = (
            self._tracer.sending(message, message.retry_count + 1, waited)
            if self._tracer is not None
            else nullcontext()
        )
        started = time.perf_counter()
        with span:
            try:
                yield
            finally:
                if self._metrics is not None:
                    self._metrics.record_send_duration(time.perf_counter() - started)
        if self._metrics is not None:
            self._metrics.record_commit_to_send(waited)

    @contextmanager
    def flushing(self) -> Generator[None]:
        """Around one ``transport.flush``: its duration."""
        started = time.perf_counter()
        try:
            yield
        finally:
            if self._metrics is not None:
                self._metrics.record_flush_duration(time.perf_counter() - started)
