"""The relays' own figures: windows a running relay writes to the storage, and how the console adds them up."""

import asyncio
import logging
import os
import socket
import threading
from datetime import UTC, datetime, timedelta
from typing import override

import pytest
from relay_rig import make, relay_for
from spakky.outbox.application.administration import ThreadedOutboxFiguresAdministration
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.figures import (
    COMMIT_TO_SEND_BUCKETS,
    RelayFigures,
    decode_buckets,
    encode_buckets,
    merge_figures,
    quantile,
    wait_bucket,
)
from spakky.outbox.console.audit import ProcessAuditLog
from spakky.outbox.console.operations import OutboxConsoleService
from spakky.outbox.relay.relay import OutboxRelayBackgroundService
from spakky.outbox.testing.memory import (
    AsyncInMemoryOutboxStorage,
    InMemoryOutboxHarness,
    InMemoryOutboxStorage,
)
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    RecordingEventTransport,
)
from spakky.outbox.testing.waiting import wait_for
from test_relay_metrics import RecordingMetrics

RELAY_NAME = f"{socket.gethostname()}/{os.getpid()}"
"""How a relay of this test process names itself."""


def config(**changes: object) -> OutboxConfig:
    """The outbox settings with figures every second."""
    return OutboxConfig().model_copy(
        update={"figures_interval_seconds": 1.0, "max_retry_count": 1, "polling_interval_seconds": 0.05, **changes}
    )


def sent(harness: InMemoryOutboxHarness) -> int:
    """Messages sent over every window written so far."""
    return sum(window.sent for window in harness.state.figures)


async def wait_async(condition: object, timeout: float = 15.0) -> None:
    """Wait for ``condition()`` with a deadline."""
    await asyncio.to_thread(wait_for, condition, timeout=timeout)  # type: ignore[arg-type]


async def figures_of_a_run(good: int, metrics: RecordingMetrics | None = None) -> list[RelayFigures]:
    """The windows a running async relay (reporting to ``metrics``) wrote over ``good`` messages and one refused poison."""
    harness = InMemoryOutboxHarness()
    harness.state.clock = lambda: datetime.now(UTC)
    cfg = config()
    transport = AsyncRecordingEventTransport()
    transport.faults.refuse = lambda r: r.event_name == "poison"
    relay = relay_for(AsyncInMemoryOutboxStorage(harness.state, cfg), transport, cfg, metrics)
    await harness.write([make(name=f"e{i}") for i in range(good)] + [make(name="poison")])
    await relay.start_async()
    try:
        await wait_async(lambda: sent(harness) == good and sum(w.abandoned for w in harness.state.figures) == 1)
    finally:
        await relay.stop_async()
    return harness.state.figures


async def test_async_relay_figures_expect_windows_of_its_sends_refusals_and_waits() -> None:
    """A running async relay writes windows with what it sent, refused and abandoned, and its metrics see every call."""
    metrics = RecordingMetrics()
    windows = await figures_of_a_run(20, metrics)
    assert {w.relay for w in windows} == {RELAY_NAME}
    assert sum(w.refused for w in windows) == 1 and sum(w.batches for w in windows) >= 1
    assert sum(sum(w.commit_to_send) for w in windows) == 20, "every delivered send's wait is counted once"
    assert all(w.started_at < w.ended_at for w in windows)
    assert max(w.commit_to_send_max for w in windows) == pytest.approx(max(metrics.waits))
    assert (metrics.relayed, metrics.failed, metrics.abandoned) == (20, 1, 1), "the metrics lost calls to the figures"
    assert len(metrics.waits) == 20 and metrics.batches and metrics.sends and metrics.flushes


async def test_async_relay_figures_without_metrics_expect_waits_of_delivered_sends_only() -> None:
    """With no metrics behind its figures (sends untimed), a relay still counts the wait of each send that went through."""
    windows = await figures_of_a_run(5)
    assert sum(sum(w.commit_to_send) for w in windows) == 5, "a refused send's wait is not counted"
    assert max(w.commit_to_send_max for w in windows) > 0


def test_sync_relay_figures_expect_windows_of_its_sends() -> None:
    """The sync relay's figures thread writes windows of what its relay thread sent."""
    harness = InMemoryOutboxHarness()
    harness.state.clock = lambda: datetime.now(UTC)
    cfg = config()
    relay = OutboxRelayBackgroundService(InMemoryOutboxStorage(harness.state, cfg), RecordingEventTransport(), cfg)
    relay.set_stop_event(threading.Event())
    harness.write_sync([make(name=f"e{i}") for i in range(15)])
    relay.start()
    try:
        wait_for(lambda: sent(harness) == 15, timeout=15)
    finally:
        relay.stop()
    assert sum(sum(w.commit_to_send) for w in harness.state.figures) == 15


class FailingFiguresStorage(AsyncInMemoryOutboxStorage):
    """Refuses every figures write."""

    attempts = 0

    @override
    async def write_relay_figures(self, figures: RelayFigures) -> None:
        self.attempts += 1
        raise ConnectionResetError("figures table gone")


async def test_async_relay_figures_write_fails_expect_warning_window_dropped_and_delivery_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A figures write that fails is logged and its window dropped; the relay keeps delivering and writing."""
    harness = InMemoryOutboxHarness()
    harness.state.clock = lambda: datetime.now(UTC)
    cfg = config()
    transport = AsyncRecordingEventTransport()
    storage = FailingFiguresStorage(harness.state, cfg)
    relay = relay_for(storage, transport, cfg)
    await relay.start_async()
    try:
        with caplog.at_level(logging.WARNING):
            for round_ in range(2):
                await harness.write([make(name=f"r{round_}")])
                await wait_async(lambda r=round_: storage.attempts > r)
    finally:
        await relay.stop_async()
    assert [d.event_name for d in transport.delivered] == ["r0", "r1"]
    assert harness.state.figures == []
    assert "Outbox relay figures not written, window dropped: ConnectionResetError: figures table gone" in caplog.text


def test_wait_bucket_expect_bound_in_its_own_bucket_and_past_last_in_overflow() -> None:
    """A wait equal to a bound counts in that bound's bucket; a wait past the last bound in the extra one."""
    assert wait_bucket(0.0) == 0 and wait_bucket(COMMIT_TO_SEND_BUCKETS[0]) == 0
    assert wait_bucket(COMMIT_TO_SEND_BUCKETS[0] * 1.01) == 1
    assert wait_bucket(COMMIT_TO_SEND_BUCKETS[-1] + 1) == len(COMMIT_TO_SEND_BUCKETS)


def test_quantile_expect_linear_within_bucket_and_bounded_by_max() -> None:
    """Quantiles interpolate within the bucket that holds them and never pass the longest wait."""
    buckets = [0] * (len(COMMIT_TO_SEND_BUCKETS) + 1)
    buckets[1] = 10  # ten waits in (0.005, 0.01]
    assert quantile(buckets, 0.5, 0.01) == pytest.approx(0.0075)
    assert quantile(buckets, 0.5, 0.006) == 0.006
    assert quantile([0] * len(buckets), 0.5, 0.0) is None
    buckets[-1] = 90  # ninety past an hour, the longest two hours
    assert quantile(buckets, 0.95, 7200.0) == pytest.approx(3600 + 3600 * (95 - 10) / 90)


def test_merge_figures_two_relays_expect_summed_per_slot_and_zero_slots() -> None:
    """Windows of two relays ending in one slot add up; a slot without windows counts zero; outside ones are left out."""
    since = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    width = len(COMMIT_TO_SEND_BUCKETS) + 1

    def window(relay: str, ended_after: float, sent: int, longest: float) -> RelayFigures:
        ended = since + timedelta(seconds=ended_after)
        waits = (sent,) + (0,) * (width - 1)
        return RelayFigures(relay, ended - timedelta(seconds=10), ended, sent, 1, 0, 2, waits, longest)

    windows = [window("a", 10, 30, 0.001), window("b", 50, 90, 0.004), window("a", 130, 6, 0.002), window("a", 181, 1, 1)]
    slots = merge_figures(windows, since, since + timedelta(minutes=3), timedelta(minutes=1))
    assert [(s.relays, s.sent, s.refused, s.batches) for s in slots] == [(2, 120, 2, 4), (0, 0, 0, 0), (1, 6, 1, 2)]
    assert slots[0].sent_per_second == 2.0 and slots[0].commit_to_send_max == 0.004
    assert slots[0].commit_to_send[0] == 120 and slots[1].p50 is None
    assert [s.start for s in slots] == [since + timedelta(minutes=m) for m in range(3)]


def test_encode_buckets_expect_round_trip_padded_to_layout() -> None:
    """Bucket counts survive the storages' text form; a shorter record is padded with zeros."""
    counts = tuple(range(len(COMMIT_TO_SEND_BUCKETS) + 1))
    assert decode_buckets(encode_buckets(counts)) == counts
    assert decode_buckets("4,5") == (4, 5) + (0,) * (len(counts) - 2)


async def test_threaded_administration_sync_storage_with_figures_expect_console_delivery() -> None:
    """A sync-only storage's figures reach the console's overview through the threaded administration."""
    harness = InMemoryOutboxHarness()
    storage = InMemoryOutboxStorage(harness.state, OutboxConfig())
    administration = ThreadedOutboxFiguresAdministration(storage, storage)
    now = datetime.now(UTC)
    waits = (3,) + (0,) * len(COMMIT_TO_SEND_BUCKETS)
    window = RelayFigures("host-a/1", now - timedelta(seconds=10), now, 3, 0, 0, 1, waits, 0.004)
    await administration.write_relay_figures(window)
    assert await administration.relay_figures(now - timedelta(minutes=1)) == [window]
    delivery = await OutboxConsoleService(administration, ProcessAuditLog()).delivery(now)
    assert delivery is not None and (delivery.windows, delivery.sent, delivery.relays) == (1, 3, 1)
