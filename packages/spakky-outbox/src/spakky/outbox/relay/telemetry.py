"""The relay's spans and timings around each send and flush, shared by the sync and async relays.

Plain context managers: both relays enter them with ``with`` around the
transport call, so the generated sync relay uses the very same code. A relay
with neither metrics nor a tracer gets one shared no-op context for every
call, so a message costs no context manager of its own; a relay whose only
metrics are its own figures (the default) times nothing: it only counts each
send's commit-to-send wait (`RelayTelemetry.waits_only`).
"""

import time
from collections.abc import Generator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from types import TracebackType
from typing import override

from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.ports.metrics import IOutboxMetrics
from spakky.outbox.ports.tracing import IOutboxTracer
from spakky.outbox.relay.figures import FiguresRecorder

_UNOBSERVED: AbstractContextManager[None] = nullcontext()
"""The context of every send and flush when nothing observes them (``nullcontext`` is reusable)."""


class RelayTelemetry:
    """Times the relay's transport calls for the metrics port and opens the tracer's send spans."""

    def __init__(self, metrics: IOutboxMetrics | None, tracer: IOutboxTracer | None) -> None:
        self._metrics = metrics
        self._tracer = tracer
        # The figures alone keep no durations: with no metrics behind them, a send is not timed.
        self.waits_only = metrics if tracer is None and isinstance(metrics, FiguresRecorder) and not metrics.forwards else None
        """The relay's figures when they alone observe its sends (the default): the relay then
        counts each send's commit-to-send wait there itself, with no context around the send."""

    def claimed(self, count: int) -> None:
        """A claim returned ``count`` messages."""
        if self._metrics is not None:
            self._metrics.record_batch_size(count)

    def sending(self, message: OutboxMessage) -> AbstractContextManager[None]:
        """Around one ``transport.send``: its span, its duration, and the wait of a send that went through."""
        if self._tracer is not None:
            return self._sending(message)
        if self._metrics is not None:
            return _TimedSend(self._metrics, message)
        return _UNOBSERVED

    def flushing(self) -> AbstractContextManager[None]:
        """Around one ``transport.flush``: its duration."""
        return self._flushing() if self._metrics is not None and self.waits_only is None else _UNOBSERVED

    @contextmanager
    def _sending(self, message: OutboxMessage) -> Generator[None]:
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
    def _flushing(self) -> Generator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self._metrics is not None:
                self._metrics.record_flush_duration(time.perf_counter() - started)


class _TimedSend(AbstractContextManager[None]):
    """One send timed for the metrics when there is no tracer: what ``_sending`` does, without a generator.

    The relay's own figures (`spakky.outbox.relay.figures`) are metrics, so at
    defaults every send comes here: a slotted object and two clock reads.
    """

    __slots__ = ("_metrics", "_started", "_waited")

    def __init__(self, metrics: IOutboxMetrics, message: OutboxMessage) -> None:
        self._metrics = metrics
        # The same wait as ``datetime.now(UTC) - created_at``, without building either.
        self._waited = max(0.0, time.time() - message.created_at.timestamp())
        self._started = time.perf_counter()

    @override
    def __enter__(self) -> None:
        return None

    @override
    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._metrics.record_send_duration(time.perf_counter() - self._started)
        if kind is None:  # a send that went through
            self._metrics.record_commit_to_send(self._waited)

