"""Relay metrics (port and OpenTelemetry adapter) and retention inside the relay."""

import asyncio
import logging
import os
import socket
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import override

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from relay_rig import make, relay_for
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import OutboxStats
from spakky.outbox.ports.metrics import BacklogRead, IOutboxMetrics
from spakky.outbox.relay.relay import AsyncOutboxRelayBackgroundService
from spakky.outbox.testing.memory import (
    AsyncInMemoryOutboxStorage,
    InMemoryOutboxHarness,
)
from spakky.outbox.testing.transport import AsyncRecordingEventTransport


class RecordingMetrics(IOutboxMetrics):
    """Keeps every report."""

    def __init__(self) -> None:
        self.relayed = self.failed = self.abandoned = self.fenced = 0
        self.backlog: list[tuple[int, float | None]] = []
        self.read: BacklogRead | None = None
        self.batches: list[int] = []
        self.waits: list[float] = []
        self.sends: list[float] = []
        self.flushes: list[float] = []

    @override
    def record_relayed(self, count: int) -> None:
        self.relayed += count

    @override
    def record_failed(self, count: int) -> None:
        self.failed += count

    @override
    def record_abandoned(self, count: int) -> None:
        self.abandoned += count

    @override
    def record_fenced(self, count: int) -> None:
        self.fenced += count

    @override
    def record_backlog(self, pending: int, oldest_pending_age_seconds: float | None) -> None:
        self.backlog.append((pending, oldest_pending_age_seconds))

    @override
    def watch_backlog(self, read: BacklogRead) -> None:
        self.read = read

    @override
    def record_batch_size(self, count: int) -> None:
        self.batches.append(count)

    @override
    def record_commit_to_send(self, seconds: float) -> None:
        self.waits.append(seconds)

    @override
    def record_send_duration(self, seconds: float) -> None:
        self.sends.append(seconds)

    @override
    def record_flush_duration(self, seconds: float) -> None:
        self.flushes.append(seconds)


class CountsOnly(IOutboxMetrics):
    """A metrics class written for 8.5: the four counts, none of the timings."""

    def __init__(self) -> None:
        self.relayed = 0

    @override
    def record_relayed(self, count: int) -> None:
        self.relayed += count

    @override
    def record_failed(self, count: int) -> None:
        pass

    @override
    def record_abandoned(self, count: int) -> None:
        pass

    @override
    def record_backlog(self, pending: int, oldest_pending_age_seconds: float | None) -> None:
        pass


def rig(metrics: IOutboxMetrics, **changes: object) -> tuple[InMemoryOutboxHarness, AsyncOutboxRelayBackgroundService, AsyncRecordingEventTransport]:
    """A harness, a relay with ``metrics`` and a recording transport."""
    harness = InMemoryOutboxHarness()
    config = OutboxConfig().model_copy(update={"max_retry_count": 1, **changes})
    transport = AsyncRecordingEventTransport()
    return harness, relay_for(AsyncInMemoryOutboxStorage(harness.state, config), transport, config, metrics), transport


async def test_relay_metrics_expect_relayed_failed_abandoned_and_backlog() -> None:
    """The relay reports deliveries, refusals, abandonments; the backlog only when read."""
    metrics = RecordingMetrics()
    harness, relay, transport = rig(metrics)
    await relay.initialize_async()
    await harness.write([make(name="ok"), make(name="ok"), make(name="poison"), make(name="later")])
    transport.faults.refuse = lambda r: r.event_name == "poison"
    await relay.relay_batch()
    await relay.housekeeping()
    assert (metrics.relayed, metrics.failed, metrics.abandoned) == (3, 1, 1)
    assert metrics.backlog == [], "the relay read the backlog on its own timer"
    assert metrics.read is not None, "the relay gave the metrics no backlog reader"
    stats = await asyncio.to_thread(metrics.read)
    assert stats is not None and (stats.pending, stats.abandoned) == (0, 1)
    assert metrics.read() is None, "a read from the relay's own loop must not block it"


class CountingStorage(AsyncInMemoryOutboxStorage):
    """Counts stats reads and the timeouts they carried."""

    timeouts: list[float | None]

    @override
    async def stats(self, timeout_seconds: float | None = None) -> OutboxStats:
        self.timeouts.append(timeout_seconds)
        return await super().stats(timeout_seconds)


async def test_opentelemetry_gauges_expect_backlog_read_on_collection_only() -> None:
    """The gauges read the storage when collected (once per collection, bounded), never on a relay timer."""
    from spakky.outbox.relay.opentelemetry import OpenTelemetryOutboxMetrics

    reader = InMemoryMetricReader()
    adapter = OpenTelemetryOutboxMetrics(MeterProvider(metric_readers=[reader]))
    harness = InMemoryOutboxHarness()
    config = OutboxConfig()
    storage = CountingStorage(harness.state, config)
    storage.timeouts = []
    relay = relay_for(storage, AsyncRecordingEventTransport(), config, adapter)
    await relay.initialize_async()
    await harness.write([make(name="a"), make(name="b")])
    for _ in range(3):
        await relay.relay_batch()
        await relay.housekeeping()
    assert storage.timeouts == [], "the relay read the backlog without anyone observing it"
    await harness.write([make(name="c")])
    data = await asyncio.to_thread(reader.get_metrics_data)
    assert data is not None
    gauges = {
        metric.name: metric.data.data_points[0].value  # type: ignore[union-attr]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name.startswith("outbox.pending") or metric.name == "outbox.oldest_pending_age"
    }
    assert gauges["outbox.pending"] == 1
    assert len(storage.timeouts) == 1, f"one collection read the storage {len(storage.timeouts)} times"
    assert storage.timeouts[0] is not None and storage.timeouts[0] > 0, "the read carried no timeout"


class TakeoverDuringFlush(AsyncRecordingEventTransport):
    """Confirms the flush, then lets the claims lapse and another relay take them over (a paused relay)."""

    def __init__(self, harness: InMemoryOutboxHarness, rival: AsyncInMemoryOutboxStorage) -> None:
        super().__init__()
        self._harness, self._rival = harness, rival
        self.taken: list[OutboxMessage] = []

    @override
    async def flush(self) -> None:
        await super().flush()
        self._harness.clock.advance(OutboxConfig().claim_timeout_seconds + 1)
        self.taken = await self._rival.fetch_pending(100, 5)


async def test_relay_acknowledgement_fenced_off_expect_warning_and_fenced_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An acknowledgement the storage fenced off (claims taken over meanwhile) is logged and counted as such.

    Issue 17.18: it updated 0 rows and was logged as "took the acknowledge".
    """
    metrics = RecordingMetrics()
    harness = InMemoryOutboxHarness()
    config = OutboxConfig()
    transport = TakeoverDuringFlush(harness, AsyncInMemoryOutboxStorage(harness.state, config))
    relay = relay_for(AsyncInMemoryOutboxStorage(harness.state, config), transport, config, metrics)
    await harness.write([make(name="a"), make(name="b"), make(name="c")])
    with caplog.at_level(logging.INFO, logger="spakky.outbox.relay.relay"):
        await relay.relay_batch()
    assert [m.event_name for m in transport.taken] == ["a", "b", "c"]
    assert (metrics.relayed, metrics.fenced) == (0, 3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"Outbox relay {socket.gethostname()}/{os.getpid()}: acknowledge of 3 of 3 messages fenced off" in w
        for w in warnings
    ), warnings
    assert not any("took the" in r.getMessage() for r in caplog.records)
    assert not any(r.published for r in await harness.raw_records())


async def test_relay_metrics_timings_expect_batch_size_send_flush_and_wait_of_each_delivered() -> None:
    """The relay reports each claim's size, every send's and flush's duration, and how long each sent message waited."""
    metrics = RecordingMetrics()
    harness, relay, transport = rig(metrics)
    stored_before = datetime.now(UTC) - timedelta(seconds=30)
    await harness.write([replace(make(name=name), created_at=stored_before) for name in ("ok", "poison", "ok")])
    transport.faults.refuse = lambda r: r.event_name == "poison"
    await relay.relay_batch()
    assert metrics.batches == [3]
    assert len(metrics.sends) == 3 and len(metrics.flushes) >= 1
    assert all(seconds >= 0 for seconds in metrics.sends + metrics.flushes)
    # The refused send waited too, but only sends that went through count as sent.
    assert len(metrics.waits) == 2 and all(seconds >= 29 for seconds in metrics.waits)
    await relay.relay_batch()
    assert metrics.batches == [3], "an empty claim is no batch"


async def test_relay_metrics_without_timings_expect_8_5_metrics_class_still_counts() -> None:
    """A metrics class implementing only the 8.5 counts keeps working: the timings are optional."""
    metrics = CountsOnly()
    harness, relay, _ = rig(metrics)
    await harness.write([make(name="ok"), make(name="ok")])
    await relay.relay_batch()
    assert metrics.relayed == 2


async def test_relay_retention_expect_old_published_purged() -> None:
    """With a retention set, the relay purges published messages older than it by the storage's clock."""
    harness, relay, _ = rig(RecordingMetrics(), published_retention_seconds=60)
    await harness.write([make(name="old"), make(name="older")])
    await relay.relay_batch()
    harness.clock.advance(61)
    await harness.write([make(name="new")])
    await relay.relay_batch()
    await harness.write([make(name="fresh")])
    await relay.housekeeping()
    names = [r.event_name for r in await harness.raw_records()]
    assert names == ["new", "fresh"]


async def test_relay_retention_relay_clock_ahead_expect_young_published_kept() -> None:
    """A relay 90 s ahead of the storage's clock keeps what the storage published 30 s ago (60 s retention).

    Issue 17.19: the cutoff was computed on the relay's clock, so such a relay
    purged every published message within seconds.
    """
    harness, relay, _ = rig(RecordingMetrics(), published_retention_seconds=60)
    harness.clock.now = datetime.now(UTC) - timedelta(seconds=90)
    await harness.write([make(name="young")])
    await relay.relay_batch()
    harness.clock.advance(30)
    await relay.housekeeping()
    records = await harness.raw_records()
    assert [(r.event_name, r.published) for r in records] == [("young", True)]
    harness.clock.advance(31)
    await relay.housekeeping()
    assert await harness.raw_records() == []


async def test_opentelemetry_metrics_expect_counters_and_gauges_exported() -> None:
    """The OpenTelemetry adapter exports the relay's counters and backlog gauges."""
    from spakky.outbox.relay.opentelemetry import OpenTelemetryOutboxMetrics

    reader = InMemoryMetricReader()
    adapter = OpenTelemetryOutboxMetrics(MeterProvider(metric_readers=[reader]))
    adapter.record_relayed(5)
    adapter.record_failed(2)
    adapter.record_abandoned(1)
    adapter.record_fenced(3)
    adapter.record_backlog(7, 12.5)
    for size in (100, 3):
        adapter.record_batch_size(size)
    adapter.record_commit_to_send(0.02)
    adapter.record_commit_to_send(45.0)
    adapter.record_send_duration(0.0001)
    adapter.record_flush_duration(0.3)
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        metric.name: metric.data.data_points[0]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    histograms = {name: p for name, p in points.items() if isinstance(p, HistogramDataPoint)}
    assert {name: (p.count, p.sum, p.max) for name, p in histograms.items()} == {
        "outbox.batch.size": (2, 103, 100),
        "outbox.commit_to_send": (2, 45.02, 45.0),
        "outbox.send.duration": (1, 0.0001, 0.0001),
        "outbox.flush.duration": (1, 0.3, 0.3),
    }
    # Buckets in seconds, not the SDK's default milliseconds-sized ones: 45 s lands below 60.
    wait = histograms["outbox.commit_to_send"]
    assert wait.bucket_counts[wait.explicit_bounds.index(60.0)] == 1
    values = {name: p.value for name, p in points.items() if name not in histograms}  # type: ignore[union-attr]
    assert values == {
        "outbox.relayed": 5,
        "outbox.failed": 2,
        "outbox.abandoned": 1,
        "outbox.fenced": 3,
        "outbox.pending": 7,
        "outbox.oldest_pending_age": 12.5,
    }
