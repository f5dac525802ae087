"""OpenTelemetry adapter of the metrics port (needs ``opentelemetry-api``)."""

import logging
import threading
import time
from collections.abc import Iterable
from typing import override

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.common.figures import COMMIT_TO_SEND_BUCKETS
from spakky.outbox.ports.metrics import BacklogRead, IOutboxMetrics

logger = logging.getLogger(__name__)

BACKLOG_FRESH_SECONDS = 1.0
"""A collection observes both backlog gauges; one storage read serves both."""

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Bucket bounds (seconds) of the send and flush durations: a send is enqueued in
microseconds, a flush waits for the broker, a stalled one for its timeout."""
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
"""Bucket bounds of the batch size, up to the largest ``BATCH_SIZE`` that starts without a warning."""


@Pod()
class OpenTelemetryOutboxMetrics(IOutboxMetrics):
    """Counters ``outbox.relayed``/``failed``/``abandoned``/``fenced``, gauges for the backlog, histograms of the relay's timings.

    The gauges read the backlog from the storage when they are observed (a
    collection by the SDK's reader or exporter), at most once per
    `BACKLOG_FRESH_SECONDS`; a read that fails or times out keeps the last
    values and is logged at debug level.

    Histograms: ``outbox.commit_to_send`` (s, from a message's ``created_at``
    to its send), ``outbox.send.duration`` and ``outbox.flush.duration`` (s,
    one transport call each), ``outbox.batch.size`` (messages per claim).
    """

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        """Create the instruments on ``meter_provider`` (default: the global one)."""
        meter = metrics.get_meter("spakky.outbox", meter_provider=meter_provider)
        self._relayed = meter.create_counter("outbox.relayed", unit="{message}")
        self._failed = meter.create_counter("outbox.failed", unit="{message}")
        self._abandoned = meter.create_counter("outbox.abandoned", unit="{message}")
        self._fenced = meter.create_counter("outbox.fenced", unit="{message}")
        self._commit_to_send = meter.create_histogram(
            "outbox.commit_to_send", unit="s", explicit_bucket_boundaries_advisory=COMMIT_TO_SEND_BUCKETS,
            description="Time a message waited in the outbox, from its created_at to the send that went through",
        )
        self._send = meter.create_histogram(
            "outbox.send.duration", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            description="Duration of one transport send",
        )
        self._flush = meter.create_histogram(
            "outbox.flush.duration", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            description="Duration of one transport flush (the wait for the broker's confirmations)",
        )
        self._batch = meter.create_histogram(
            "outbox.batch.size", unit="{message}", explicit_bucket_boundaries_advisory=BATCH_BUCKETS,
            description="Messages one claim returned",
        )
        self._pending = 0
        self._oldest_age = 0.0
        self._read: BacklogRead | None = None
        self._read_at = float("-inf")
        self._reading = threading.Lock()
        meter.create_observable_gauge("outbox.pending", [self._observe_pending], unit="{message}")
        meter.create_observable_gauge("outbox.oldest_pending_age", [self._observe_age], unit="s")

    def _refresh(self) -> None:
        read = self._read
        if read is None:
            return
        with self._reading:
            if time.monotonic() - self._read_at < BACKLOG_FRESH_SECONDS:
                return
            try:
                stats = read()
            except Exception:  # a scrape must not fail: the gauges keep their last values
                logger.debug("Outbox backlog could not be read for the gauges", exc_info=True)
                return
            finally:
                self._read_at = time.monotonic()
            if stats is not None:
                self.record_backlog(stats.pending, stats.oldest_pending_age_seconds)

    def _observe_pending(self, options: CallbackOptions) -> Iterable[Observation]:
        self._refresh()
        return [Observation(self._pending)]

    def _observe_age(self, options: CallbackOptions) -> Iterable[Observation]:
        self._refresh()
        return [Observation(self._oldest_age)]

    @override
    def record_relayed(self, count: int) -> None:
        self._relayed.add(count)

    @override
    def record_failed(self, count: int) -> None:
        self._failed.add(count)

    @override
    def record_abandoned(self, count: int) -> None:
        self._abandoned.add(count)

    @override
    def record_fenced(self, count: int) -> None:
        self._fenced.add(count)

    @override
    def record_backlog(self, pending: int, oldest_pending_age_seconds: float | None) -> None:
        self._pending = pending
        self._oldest_age = oldest_pending_age_seconds or 0.0

    @override
    def watch_backlog(self, read: BacklogRead) -> None:
        self._read = read
        self._read_at = float("-inf")

    @override
    def record_batch_size(self, count: int) -> None:
        self._batch.record(count)

    @override
    def record_commit_to_send(self, seconds: float) -> None:
        self._commit_to_send.record(seconds)

    @override
    def record_send_duration(self, seconds: float) -> None:
        self._send.record(seconds)

    @override
    def record_flush_duration(self, seconds: float) -> None:
        self._flush.record(seconds)
