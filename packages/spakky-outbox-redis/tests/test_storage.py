"""Tests of the Redis storages beyond the conformance suite: recovery, retention, wiring."""

import asyncio
from datetime import UTC, datetime
from typing import cast

import pytest
from spakky.core.application.application import SpakkyApplication
from spakky.data.persistency.transaction import (
    AbstractAsyncTransaction,
    AbstractTransaction,
)
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.error import OutboxStorageUnavailableError
from spakky.outbox.ports.inbox import IAsyncInboxStorage, IInboxStorage
from spakky.outbox.ports.storage import IAsyncOutboxStorage, IOutboxStorage
from spakky.outbox.registry import announce_storage, loaded_storage_names
from spakky.plugins.outbox_redis import contribution, main
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.inbox import AsyncRedisInboxStorage, RedisInboxStorage
from spakky.plugins.outbox_redis.storage import (
    AsyncRedisOutboxStorage,
    RedisOutboxStorage,
)
from spakky.plugins.outbox_redis.transaction import (
    AsyncRedisTransaction,
    RedisTransaction,
)
from spakky_outbox_testservices.redis_servers import private_redis

from .conftest import (
    RedisOutbox,
    assert_claimed_and_published,
    drop_outbox,
    make_outbox,
    new_message,
    save_all,
    save_one,
    saved,
)

MAX_RETRY = 5




async def test_scripts_flushed_expect_reloaded_for_save_and_fetch() -> None:
    """After SCRIPT FLUSH, saving inside MULTI and claiming both still work.

    On a private server: a flush on the shared one fails other tests' script
    calls that land between redis-py's reload and its retry (NoScriptError).
    """
    with private_redis() as server:
        outbox = make_outbox(server.url)
        try:
            first = new_message()
            await save_all(outbox, [first])
            storage = outbox.storage()
            await outbox.raw.script_flush()
            second = new_message()
            await save_all(outbox, [second])
            await outbox.raw.script_flush()
            claimed = await storage.fetch_pending(10, MAX_RETRY)
            assert [m.id for m in claimed] == [first.id, second.id]
        finally:
            await drop_outbox(outbox)


async def test_connections_killed_expect_storage_usable_again(
    outbox: RedisOutbox,
) -> None:
    """When Redis drops the connections, the next calls reconnect and succeed."""
    sent = await save_one(outbox)
    storage = outbox.storage()
    await storage.stats()
    # the pool holds one idle connection now: kill exactly that one server-side
    connection_id = await outbox.connections.async_client.client_id()
    killed = await outbox.raw.execute_command("CLIENT", "KILL", "ID", connection_id)
    assert killed == 1
    claimed: list[OutboxMessage] = []
    for _ in range(3):
        try:
            claimed = await storage.fetch_pending(10, MAX_RETRY)
            break
        except OutboxStorageUnavailableError:
            continue
    await assert_claimed_and_published(storage, claimed, sent)


async def test_unreachable_server_expect_storage_unavailable_error(
    outbox: RedisOutbox,
) -> None:
    """A server that cannot be reached surfaces as the core's unavailable error."""
    config = outbox.config.model_copy(update={"url": "redis://127.0.0.1:1/0"})
    connections = RedisOutboxConnectionManager(config)
    storage = AsyncRedisOutboxStorage(connections, config, outbox.outbox_config)
    try:
        with pytest.raises(OutboxStorageUnavailableError):
            await storage.fetch_pending(1, MAX_RETRY)
        with pytest.raises(OutboxStorageUnavailableError):
            await storage.wait_for_messages(0.1)
    finally:
        await connections.aclose()


async def test_mark_published_expect_kept_until_purged(outbox: RedisOutbox) -> None:
    """A published message stays (no TTL of its own) until a purge removes it."""
    sent = await save_one(outbox)
    storage = outbox.storage()
    await storage.fetch_pending(1, MAX_RETRY)
    await storage.mark_published(sent.id)
    assert await outbox.raw.pttl(outbox.keys.message(sent.id)) == -1
    assert (await storage.stats()).published == 1
    assert await storage.purge_published(datetime.now(UTC).replace(year=2100)) == 1
    assert not await outbox.raw.exists(outbox.keys.message(sent.id))
    assert (await storage.stats()).published == 0


async def test_schedule_retry_keyed_head_expect_followers_released(
    outbox: RedisOutbox,
) -> None:
    """Retrying a key's head drops the same instance's claims on the rest of the key."""
    head, follower = await saved(outbox, "a", "a")
    storage = outbox.storage()
    assert [m.id for m in await storage.fetch_pending(10, MAX_RETRY)] == [
        head.id,
        follower.id,
    ]
    await storage.schedule_retry(head.id, 0.0, "refused")
    await storage.mark_published(follower.id)
    fields = await outbox.raw.hgetall(outbox.keys.message(follower.id))
    assert b"published_at" not in cast(dict[bytes, bytes], fields)
    again = await outbox.storage().fetch_pending(10, MAX_RETRY)
    assert [(m.id, m.retry_count, m.last_error) for m in again] == [
        (head.id, 1, "refused"),
        (follower.id, 0, None),
    ]


async def test_requeue_abandoned_keyed_expect_original_position(
    outbox: RedisOutbox,
) -> None:
    """A requeued keyed message goes back before the newer messages of its key."""
    first, second = await saved(outbox, "a", "a")
    storage = outbox.storage()
    await storage.fetch_pending(1, MAX_RETRY)
    await storage.abandon(first.id, "poison")
    assert await storage.requeue_abandoned([first.id]) == 1
    claimed = await outbox.storage().fetch_pending(10, MAX_RETRY)
    assert [m.id for m in claimed] == [first.id, second.id]


async def test_sync_wait_for_messages_expect_woken_by_commit(
    outbox: RedisOutbox,
) -> None:
    """The sync storage wakes from BZPOPMIN after a committed save, else times out."""
    storage = outbox.sync_storage()
    assert await asyncio.to_thread(storage.wait_for_messages, 0.1) is False
    await save_all(outbox, [new_message()])
    assert await asyncio.to_thread(storage.wait_for_messages, 5.0) is True
    assert storage.wait_for_messages(0) is False


async def test_sync_admin_expect_same_state_as_async(outbox: RedisOutbox) -> None:
    """Sync administration reads and repairs the same outbox."""
    sent = await save_one(outbox)
    storage = outbox.sync_storage()
    await asyncio.to_thread(storage.fetch_pending, 1, MAX_RETRY)
    await asyncio.to_thread(storage.abandon, sent.id, "bad")
    listed = await asyncio.to_thread(storage.list_abandoned)
    assert [(m.id, m.last_error) for m in listed] == [(sent.id, "bad")]
    stats = await asyncio.to_thread(storage.stats)
    assert (stats.pending, stats.abandoned, stats.oldest_pending_age_seconds) == (
        0,
        1,
        None,
    )
    assert await asyncio.to_thread(storage.requeue_abandoned) == 1
    again = await asyncio.to_thread(storage.fetch_pending, 5, MAX_RETRY)
    assert [m.id for m in again] == [sent.id]
    await asyncio.to_thread(storage.mark_published_many, [sent.id])
    purged = await asyncio.to_thread(
        storage.purge_published, datetime.now(UTC).replace(year=2100)
    )
    assert purged == 1


async def test_connection_manager_stop_expect_clients_closed(
    outbox: RedisOutbox,
) -> None:
    """Stopping the manager closes the sync and asyncio clients it opened."""
    manager = RedisOutboxConnectionManager(outbox.config)
    await manager.async_client.ping()
    await asyncio.to_thread(manager.client.ping)
    manager.start()
    manager.stop()
    await asyncio.sleep(0)  # the asyncio client of this loop closes in a task
    assert manager.in_use_connections() == 0


class _RecordingContainer:
    """Records port bindings."""

    def __init__(self) -> None:
        self.bound: dict[type, type] = {}

    def bind_to_type(self, port: type, implementation: type) -> None:
        self.bound[port] = implementation


class _RecordingApplication:
    """Stands in for `SpakkyApplication`, recording what plugins add."""

    def __init__(self) -> None:
        self.added: list[type] = []
        self.container = _RecordingContainer()

    def add(self, pod: type) -> None:
        self.added.append(pod)


def test_main_initialize_expect_config_and_clients_added_transactions_not() -> None:
    """The base plugin registers configuration and clients; transactions wait for selection."""
    app = _RecordingApplication()
    main.initialize(cast(SpakkyApplication, app))
    assert RedisTransaction not in app.added and AsyncRedisTransaction not in app.added
    assert RedisOutboxConnectionManager in app.added
    assert loaded_storage_names(cast(SpakkyApplication, app)) == ["redis"]


def test_contribution_only_storage_expect_storages_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the only loaded storage, the contribution adds and binds storages, inboxes and transactions."""
    monkeypatch.delenv("SPAKKY_OUTBOX__STORAGE", raising=False)
    app = _RecordingApplication()
    main.initialize(cast(SpakkyApplication, app))
    contribution.initialize(cast(SpakkyApplication, app))
    assert app.container.bound == {
        IOutboxStorage: RedisOutboxStorage,
        IAsyncOutboxStorage: AsyncRedisOutboxStorage,
        AbstractTransaction: RedisTransaction,
        AbstractAsyncTransaction: AsyncRedisTransaction,
        IInboxStorage: RedisInboxStorage,
        IAsyncInboxStorage: AsyncRedisInboxStorage,
    }


def test_contribution_not_selected_expect_nothing_added(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With another loaded storage selected, the contribution registers nothing."""
    monkeypatch.setenv("SPAKKY_OUTBOX__STORAGE", "other")
    app = _RecordingApplication()
    announce_storage(cast(SpakkyApplication, app), "other")
    contribution.initialize(cast(SpakkyApplication, app))
    assert app.added == []
