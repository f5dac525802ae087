"""Rules of ``Capability.RELAY_FIGURES``: relays' windows kept as written, read back bounded and newest first, 24 h retention."""

import itertools
from datetime import UTC, datetime, timedelta

from spakky.outbox.common.figures import (
    COMMIT_TO_SEND_BUCKETS,
    RELAY_FIGURES_RETENTION,
    RelayFigures,
)
from spakky.outbox.ports.storage import IAsyncOutboxRelayFigures
from spakky.outbox.testing.conformance.support import capability, rule
from spakky.outbox.testing.harness import AbstractOutboxHarness, Capability

_counts = itertools.count(1)


def relay_window(relay: str, ended_at: datetime, *, seconds: float = 10.0) -> RelayFigures:
    """A window of ``relay`` ending at ``ended_at`` (to the millisecond, as every storage keeps it), with distinct counts."""
    ended_at = ended_at.replace(microsecond=ended_at.microsecond // 1000 * 1000)
    n = next(_counts)
    buckets = [0] * (len(COMMIT_TO_SEND_BUCKETS) + 1)
    buckets[0], buckets[3], buckets[-1] = n, 2 * n, 1
    return RelayFigures(
        relay=relay,
        started_at=ended_at - timedelta(seconds=seconds),
        ended_at=ended_at,
        sent=100 + n,
        refused=n,
        abandoned=n % 3,
        batches=10 + n,
        commit_to_send=tuple(buckets),
        commit_to_send_max=4000.5 + n,
    )


def _storage(harness: AbstractOutboxHarness) -> IAsyncOutboxRelayFigures:
    storage = harness.new_storage()
    assert isinstance(storage, IAsyncOutboxRelayFigures)
    return storage


def _ends(windows: list[RelayFigures]) -> list[str]:
    return [f"{w.relay}@{w.ended_at:%H:%M:%S}" for w in windows]


@capability(Capability.RELAY_FIGURES)
async def test_relay_figures_write_expect_stored_and_read_back_by_another_instance(
    outbox_harness: AbstractOutboxHarness,
) -> None:
    """A written window is in raw state and another instance reads it back field for field."""
    written = relay_window("host-a/101", datetime.now(UTC))
    await _storage(outbox_harness).write_relay_figures(written)
    raw = await outbox_harness.raw_relay_figures()
    assert raw == [written], rule("a written window is stored as written", raw)
    read = await _storage(outbox_harness).relay_figures(written.ended_at - timedelta(minutes=1))
    assert read == [written], rule("another instance reads the window back as written", read)


@capability(Capability.RELAY_FIGURES)
async def test_relay_figures_two_relays_expect_both_visible_latest_end_first(
    outbox_harness: AbstractOutboxHarness,
) -> None:
    """Windows of two relays are all read back, the latest end first whichever relay wrote it."""
    now = datetime.now(UTC)
    first, second = _storage(outbox_harness), _storage(outbox_harness)
    a1, b1 = relay_window("host-a/1", now - timedelta(seconds=25)), relay_window("host-b/2", now - timedelta(seconds=20))
    a2, b2 = relay_window("host-a/1", now - timedelta(seconds=15)), relay_window("host-b/2", now - timedelta(seconds=10))
    for storage, figures in ((first, a1), (second, b1), (first, a2), (second, b2)):
        await storage.write_relay_figures(figures)
    read = await _storage(outbox_harness).relay_figures(now - timedelta(minutes=5))
    assert read == [b2, a2, b1, a1], rule("every relay's windows are read, the latest end first", _ends(read))


@capability(Capability.RELAY_FIGURES)
async def test_relay_figures_limit_and_since_expect_bounded_read(outbox_harness: AbstractOutboxHarness) -> None:
    """A read returns at most ``limit`` windows, the latest, and none that ended at or before ``since``."""
    now = datetime.now(UTC)
    storage = _storage(outbox_harness)
    windows = [relay_window("host-a/1", now - timedelta(seconds=10 * age)) for age in range(5, 0, -1)]
    for figures in windows:
        await storage.write_relay_figures(figures)
    latest = await storage.relay_figures(now - timedelta(minutes=5), limit=2)
    assert latest == windows[:-3:-1], rule("a read of limit 2 returns the 2 latest windows", _ends(latest))
    after = await storage.relay_figures(windows[2].ended_at)
    assert after == windows[:2:-1], rule("a read leaves out windows that ended at or before since", _ends(after))
    assert await storage.relay_figures(now) == [], rule("nothing ended after the newest window", "windows")


@capability(Capability.RELAY_FIGURES)
async def test_relay_figures_past_retention_expect_deleted_by_next_write(
    outbox_harness: AbstractOutboxHarness,
) -> None:
    """A write deletes windows that ended more than the retention before it and keeps the younger ones."""
    now = datetime.now(UTC)
    storage = _storage(outbox_harness)
    expired = relay_window("host-a/1", now - RELAY_FIGURES_RETENTION - timedelta(minutes=5))
    kept = relay_window("host-b/2", now - RELAY_FIGURES_RETENTION + timedelta(minutes=5))
    fresh = relay_window("host-a/1", now)
    for figures in (expired, kept, fresh):
        await storage.write_relay_figures(figures)
    raw = sorted(await outbox_harness.raw_relay_figures(), key=lambda w: w.ended_at)
    assert raw == [kept, fresh], rule(
        f"a write deletes windows ended more than {RELAY_FIGURES_RETENTION} before it", _ends(raw)
    )
