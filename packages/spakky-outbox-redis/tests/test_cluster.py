"""Redis Cluster: transactions stay in the outbox's slot, and say so before anything is written."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest
import redis.asyncio.cluster
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.codec import RedisKeys
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.error import (
    CrossSlotWriteError,
    UncheckedClusterCommandError,
)
from spakky.plugins.outbox_redis.storage import (
    AsyncRedisOutboxStorage,
    RedisOutboxStorage,
)
from spakky.plugins.outbox_redis.transaction import (
    AsyncRedisTransaction,
    RedisTransaction,
    command_keys,
    current_async_pipeline,
    current_pipeline,
)

from .conftest import drop_keys

MAX_RETRY = 5


class _Cluster:
    """One outbox on the test cluster, with a raw cluster client for assertions."""

    def __init__(self, url: str) -> None:
        self.prefix = f"{{cluster-{uuid.uuid4().hex}}}"
        self.keys = RedisKeys(self.prefix)
        self.config = RedisOutboxConfig().model_copy(
            update={"url": url, "key_prefix": self.prefix, "cluster": True}
        )
        self.connections = RedisOutboxConnectionManager(self.config)
        self.raw = redis.asyncio.cluster.RedisCluster.from_url(url)

    def storage(self) -> AsyncRedisOutboxStorage:
        return AsyncRedisOutboxStorage(self.connections, self.config, OutboxConfig())

    def sync_storage(self) -> RedisOutboxStorage:
        return RedisOutboxStorage(self.connections, self.config, OutboxConfig())

    def elsewhere(self, name: str) -> str:
        """A key outside the outbox's slot (no hash tag, so hashed whole)."""
        key = f"{name}-{uuid.uuid4().hex}"
        while self.raw.keyslot(key) == self.raw.keyslot(self.prefix):
            key = f"{name}-{uuid.uuid4().hex}"
        return key

    async def written(self) -> list[bytes]:
        return [k async for k in self.raw.scan_iter(match=f"{self.prefix}*")]


@pytest.fixture
async def cluster(redis_cluster_url: str) -> AsyncIterator[_Cluster]:
    """An outbox on a 3-primary Redis Cluster, removed afterwards."""
    created = _Cluster(redis_cluster_url)
    try:
        yield created
    finally:
        await drop_keys(created.raw, created.prefix, created.connections)


def _message() -> OutboxMessage:
    return OutboxMessage(uuid4(), "OrderPlaced", b"{}", {}, datetime.now(UTC), partition_key="c")


async def test_cluster_business_key_in_slot_expect_committed_with_message(cluster: _Cluster) -> None:
    """Business keys sharing the hash tag commit with the message in one MULTI/EXEC on the cluster."""
    sent = _message()
    storage = cluster.storage()
    async with AsyncRedisTransaction(cluster.config, cluster.connections):
        pipe = current_async_pipeline()
        await pipe.hset(cluster.keys.business("order:1"), mapping={"state": "placed"})
        await pipe.set(cluster.keys.business("order:1:note"), "x")
        await storage.save(sent)
    assert await cluster.raw.hget(cluster.keys.business("order:1"), "state") == b"placed"
    assert [m.id for m in await storage.fetch_pending(10, MAX_RETRY)] == [sent.id]


async def test_cluster_business_key_outside_slot_expect_our_error_nothing_written(
    cluster: _Cluster,
) -> None:
    """A key of another slot is refused when queued, naming it; the transaction writes nothing."""
    outside = cluster.elsewhere("order")
    storage = cluster.storage()
    with pytest.raises(CrossSlotWriteError) as raised:
        async with AsyncRedisTransaction(cluster.config, cluster.connections):
            pipe = current_async_pipeline()
            await pipe.set(cluster.keys.business("order:2"), "placed")
            await storage.save(_message())
            await pipe.set(outside, "placed")
    assert outside in str(raised.value) and "SPAKKY_OUTBOX_REDIS__KEY_PREFIX" in str(raised.value)
    assert await cluster.written() == []
    assert await cluster.raw.exists(outside) == 0


async def test_cluster_sync_business_key_outside_slot_expect_our_error_nothing_written(
    cluster: _Cluster,
) -> None:
    """The synchronous transaction refuses a key of another slot too, multi-key commands included."""
    outside = cluster.elsewhere("order")
    storage = cluster.sync_storage()

    def use_case() -> None:
        with RedisTransaction(cluster.config, cluster.connections):
            pipe = current_pipeline()
            pipe.set(cluster.keys.business("order:3"), "placed")
            storage.save(_message())
            pipe.execute_command("MSET", cluster.keys.business("order:4"), "placed", outside, "placed")

    with pytest.raises(CrossSlotWriteError) as raised:
        await asyncio.to_thread(use_case)
    assert outside in str(raised.value)
    assert await cluster.written() == []


async def test_cluster_sync_movable_keys_outside_slot_expect_our_error(cluster: _Cluster) -> None:
    """A command whose keys only the server can list (ZUNIONSTORE) is checked through it."""
    outside = cluster.elsewhere("totals")

    def use_case() -> None:
        with RedisTransaction(cluster.config, cluster.connections):
            current_pipeline().zunionstore(outside, [cluster.keys.business("scores")])

    with pytest.raises(CrossSlotWriteError):
        await asyncio.to_thread(use_case)
    assert await cluster.raw.exists(outside) == 0


def test_command_keys_expect_keys_from_command_table_and_scripts() -> None:
    """Keys come from the command table's positions; scripts name theirs by count; others are unknown."""
    table = {
        "set": {"flags": ["write"], "first_key_pos": 1, "last_key_pos": 1, "step_count": 1},
        "mset": {"flags": ["write"], "first_key_pos": 1, "last_key_pos": -1, "step_count": 2},
        "ping": {"flags": ["fast"], "first_key_pos": 0, "last_key_pos": 0, "step_count": 0},
        "sort": {"flags": ["write", "movablekeys"], "first_key_pos": 1, "last_key_pos": 1, "step_count": 1},
    }
    assert command_keys(table, ("SET", "a", "1")) == ["a"]
    assert command_keys(table, ("MSET", "a", "1", "b", "2")) == ["a", "b"]
    assert command_keys(table, ("PING",)) == []
    assert command_keys(table, ("EVALSHA", "sha", 2, "k1", "k2", "arg")) == ["k1", "k2"]
    assert command_keys(table, ("SORT", "a", "STORE", "b")) is None
    assert command_keys(table, ("NOSUCH", "a")) is None


async def test_cluster_async_movable_keys_expect_refused_when_queued(
    cluster: _Cluster,
) -> None:
    """Asyncio: a command whose keys only the server knows is refused when queued; nothing is written."""
    outside = cluster.elsewhere("totals")
    with pytest.raises(UncheckedClusterCommandError):
        async with AsyncRedisTransaction(cluster.config, cluster.connections):
            pipe = current_async_pipeline()
            await pipe.set(cluster.keys.business("order:5"), "placed")
            await pipe.zunionstore(outside, [cluster.keys.business("scores")])
    assert await cluster.written() == []
    assert await cluster.raw.exists(outside) == 0
