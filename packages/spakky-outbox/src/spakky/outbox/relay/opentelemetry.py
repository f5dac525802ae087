"""OpenTelemetry adapter of the metrics port (needs ``opentelemetry-api``)."""

from collections.abc import Iterable
from typing import override

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.ports.metrics import IOutboxMetrics


@Pod()
class OpenTelemetryOutboxMetrics(IOutboxMetrics):
    """Counters ``outbox.relayed``/``failed``/``abandoned``, gauges for the backlog."""

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        """Create the instruments on ``meter_provider`` (default: the global one)."""
        meter = metrics.get_meter("spakky.outbox", meter_provider=meter_provider)
        self._relayed = meter.create_counter("outbox.relayed", unit="{message}")
        self._failed = meter.create_counter("outbox.failed", unit="{message}")
        self._abandoned = meter.create_counter("outbox.abandoned", unit="{message}")
        self._pending = 0
        self._oldest_age = 0.0
        meter.create_observable_gauge("outbox.pending", [self._observe_pending], unit="{message}")
        meter.create_observable_gauge("outbox.oldest_pending_age", [self._observe_age], unit="s")

    def _observe_pending(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._pending)]

    def _observe_age(self, options: CallbackOptions) -> Iterable[Observation]:
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
    def record_backlog(self, pending: int, oldest_pending_age_seconds: float | None) -> None:
        self._pending = pending
        self._oldest_age = oldest_pending_age_seconds or 0.0
