"""The Redis inbox beyond the shared rules: WATCH conflicts, the record's place, expiry, stats, cost."""

import asyncio
import contextvars
from datetime import UTC, datetime, timedelta

import pytest
from spakky.outbox.inbox.config import InboxConfig
from spakky.outbox.inbox.error import InboxConflictError
from spakky.outbox.ports.inbox import LeaseOutcome
from spakky.plugins.outbox_redis.error import InboxRecordNotFirstError
from spakky.plugins.outbox_redis.inbox_base import InboxKeys
from spakky.plugins.outbox_redis.transaction import (
    current_async_pipeline,
    current_pipeline,
)

from .conftest import RedisOutbox, drop_outbox, outbox_on
from .inbox_harness import RedisInboxHarness


def _config(window_seconds: float = 7 * 24 * 3600.0) -> InboxConfig:
    return InboxConfig().model_copy(update={"window_seconds": window_seconds})


async def test_redis_inbox_racing_transactions_expect_second_exec_refused(outbox: RedisOutbox) -> None:
    """Both record a new message; the first EXEC wins, the second raises InboxConflictError and writes nothing."""
    inbox = outbox.inbox(_config())
    order = outbox.keys.business("order")

    async def handler(label: str, go: asyncio.Event, done: asyncio.Event) -> bool:
        async with outbox.transaction():
            ran = await inbox.record("c", "m1")
            await current_async_pipeline().rpush(order, label)
            done.set()
            await go.wait()
        return ran

    first_go, second_go = asyncio.Event(), asyncio.Event()
    first_in, second_in = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(handler("first", first_go, first_in), context=contextvars.Context())
    second = asyncio.create_task(handler("second", second_go, second_in), context=contextvars.Context())
    await asyncio.wait_for(asyncio.gather(first_in.wait(), second_in.wait()), 10)
    first_go.set()
    assert await asyncio.wait_for(first, 10) is True
    second_go.set()
    with pytest.raises(InboxConflictError):
        await asyncio.wait_for(second, 10)
    assert await outbox.raw.lrange(order, 0, -1) == [b"first"]
    assert outbox.connections.in_use_connections() == 0


async def test_redis_inbox_record_after_other_writes_expect_not_first_error(outbox: RedisOutbox) -> None:
    """A record after queued writes, or a second record, is refused before anything is written."""
    inbox = outbox.inbox(_config())
    order = outbox.keys.business("order")
    with pytest.raises(InboxRecordNotFirstError):
        async with outbox.transaction():
            await current_async_pipeline().set(order, "x")
            await inbox.record("c", "m1")
    with pytest.raises(InboxRecordNotFirstError):
        async with outbox.transaction():
            await inbox.record("c", "m1")
            await inbox.record("c", "m2")
    assert await outbox.raw.exists(order, InboxKeys(outbox.prefix).record("c", "m1")) == 0


async def test_redis_inbox_record_expect_expires_after_window_then_runs_again(outbox: RedisOutbox) -> None:
    """A record carries the window as its TTL (PX); once expired, a redelivery runs again; the index is trimmed."""
    harness = RedisInboxHarness(outbox, "async", _config(window_seconds=0.3))
    inbox = harness.inbox()
    assert await harness.handle(inbox, "c", "m1", "e1")
    ttl = await outbox.raw.pttl(harness.keys.record("c", "m1"))
    assert 0 < ttl <= 300
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while await outbox.raw.exists(harness.keys.record("c", "m1")):
        assert loop.time() < deadline, "the record must expire after the window"
        await asyncio.sleep(0.05)
    assert (await inbox.stats()).records == 0
    assert await harness.handle(inbox, "c", "m2", "e2")
    members = [m.decode() for m in await outbox.raw.zrange(harness.keys.recorded, 0, -1)]
    assert members == [InboxKeys.member("c", "m2")], f"the next write must trim the expired entry: {members}"
    assert await harness.handle(inbox, "c", "m1", "e1-again")
    assert await harness.effects() == ["e1", "e1-again", "e2"]


async def test_redis_inbox_default_window_expect_seven_day_ttl(outbox: RedisOutbox) -> None:
    """With the default InboxConfig, a record lives seven days."""
    harness = RedisInboxHarness(outbox, "async")
    await harness.handle(harness.inbox(), "c", "m1", "e1")
    ttl = await outbox.raw.pttl(harness.keys.record("c", "m1"))
    assert 7 * 24 * 3600_000 - 60_000 < ttl <= 7 * 24 * 3600_000


async def test_redis_inbox_stats_expect_records_leased_oldest(outbox: RedisOutbox) -> None:
    """Stats counts records and unfinished leases and dates the oldest record by the server clock."""
    harness = RedisInboxHarness(outbox, "async")
    inbox = harness.inbox()
    empty = await inbox.stats()
    assert (empty.records, empty.leased, empty.oldest_recorded_at) == (0, 0, None)
    await harness.handle(inbox, "c", "m1", "e1")
    await harness.backdate("c", "m1", 3600)
    lease = await inbox.acquire_lease("c", "m2", 30)
    assert lease.outcome is LeaseOutcome.ACQUIRED
    stats = await inbox.stats()
    assert (stats.records, stats.leased) == (2, 1)
    assert stats.oldest_recorded_at is not None
    assert abs(stats.oldest_recorded_at - (datetime.now(UTC) - timedelta(hours=1))) < timedelta(minutes=1)
    assert lease.token is not None and await inbox.finish_lease("c", "m2", lease.token)
    assert (await inbox.stats()).leased == 0
    assert "key prefix" in inbox.location() and outbox.prefix in inbox.location()


def test_redis_sync_inbox_transaction_expect_duplicate_skipped_conflict_refused(outbox: RedisOutbox) -> None:
    """The sync flavour in threads: a duplicate is skipped, a racing EXEC refused, a lease finished once."""
    inbox = outbox.sync_inbox(_config())
    order = outbox.keys.business("order")

    def handle(label: str) -> bool:
        with outbox.sync_transaction():
            ran = inbox.record("c", "m1")
            if ran:
                current_pipeline().rpush(order, label)
            return ran

    assert contextvars.Context().run(handle, "first") is True
    assert contextvars.Context().run(handle, "again") is False

    def racing() -> None:
        with outbox.sync_transaction():
            assert inbox.record("c", "m2")
            current_pipeline().rpush(order, "loser")
            contextvars.Context().run(winner)

    def winner() -> None:
        with outbox.sync_transaction():
            assert inbox.record("c", "m2")
            current_pipeline().rpush(order, "winner")

    with pytest.raises(InboxConflictError):
        contextvars.Context().run(racing)
    assert outbox.connections.client.lrange(order, 0, -1) == [b"first", b"winner"]
    lease = inbox.acquire_lease("c", "m3", 30)
    assert lease.token is not None and inbox.finish_lease("c", "m3", lease.token)
    assert inbox.acquire_lease("c", "m3", 30).outcome is LeaseOutcome.DONE
    assert inbox.stats().records == 3
    assert outbox.connections.in_use_connections() == 0


@pytest.mark.parametrize("topology", ["single", "cluster"])
async def test_redis_inbox_duplicate_then_writes_expect_still_one_transaction(
    request: pytest.FixtureRequest, topology: str
) -> None:
    """After a duplicate (UNWATCH), the transaction's later writes still queue: a rollback writes none of them."""
    outbox = outbox_on(request, topology)
    harness = RedisInboxHarness(outbox, "async")
    inbox = harness.inbox()
    order = outbox.keys.business("order")

    async def duplicate_then_write(fail: bool) -> bool:
        transaction = outbox.transaction()
        await transaction.initialize()
        try:
            ran = await inbox.record("c", "m1")
            await current_async_pipeline().rpush(order, "written")
            await (transaction.rollback() if fail else transaction.commit())
            return ran
        finally:
            await transaction.dispose()

    try:
        assert await harness.handle(inbox, "c", "m1", "e1")
        rolled_back = await asyncio.create_task(duplicate_then_write(True), context=contextvars.Context())
        assert rolled_back is False and await outbox.raw.exists(order) == 0
        committed = await asyncio.create_task(duplicate_then_write(False), context=contextvars.Context())
        assert committed is False and await outbox.raw.lrange(order, 0, -1) == [b"written"]
        assert outbox.connections.in_use_connections() == 0
    finally:
        await drop_outbox(outbox)
