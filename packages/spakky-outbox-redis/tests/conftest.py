"""Fixtures for the Redis outbox package tests: a real Redis, one prefix per test."""

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import pytest
import redis.asyncio
import redis.asyncio.cluster
from spakky.outbox.common.config import DEFAULT_BATCH_MAX_BYTES, OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.inbox.config import InboxConfig
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.codec import RedisKeys
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.inbox import (
    AsyncRedisInboxStorage,
    RedisInboxStorage,
)
from spakky.plugins.outbox_redis.storage import (
    AsyncRedisOutboxStorage,
    RedisOutboxStorage,
)
from spakky.plugins.outbox_redis.transaction import (
    AsyncRedisTransaction,
    RedisTransaction,
)


@dataclass
class RedisOutbox:
    """One isolated outbox: its config, clients and a raw client for assertions."""

    config: RedisOutboxConfig
    outbox_config: OutboxConfig
    connections: RedisOutboxConnectionManager
    raw: redis.asyncio.Redis

    @property
    def prefix(self) -> str:
        """The outbox's key prefix."""
        return self.config.key_prefix

    @property
    def keys(self) -> RedisKeys:
        """The outbox's key names."""
        return RedisKeys(self.prefix)

    def storage(self) -> AsyncRedisOutboxStorage:
        """A new asyncio storage instance (one relay)."""
        return AsyncRedisOutboxStorage(
            self.connections, self.config, self.outbox_config
        )

    def sync_storage(self) -> RedisOutboxStorage:
        """A new synchronous storage instance (one relay)."""
        return RedisOutboxStorage(self.connections, self.config, self.outbox_config)

    def transaction(self) -> AsyncRedisTransaction:
        """A business transaction on the outbox's clients, as ``@Transactional()`` opens it."""
        return AsyncRedisTransaction(self.config, self.connections)

    def sync_transaction(self) -> RedisTransaction:
        """The synchronous `transaction`."""
        return RedisTransaction(self.config, self.connections)

    def inbox(self, config: InboxConfig) -> AsyncRedisInboxStorage:
        """An asyncio inbox beside the outbox, under its prefix."""
        return AsyncRedisInboxStorage(self.connections, self.config, config)

    def sync_inbox(self, config: InboxConfig) -> RedisInboxStorage:
        """A synchronous inbox beside the outbox."""
        return RedisInboxStorage(self.connections, self.config, config)


def new_message(key: str | None = None) -> OutboxMessage:
    """A fresh ``OrderPlaced`` message, with partition key ``key``."""
    return OutboxMessage(uuid.uuid4(), "OrderPlaced", b"{}", {}, datetime.now(UTC), partition_key=key)


async def save_one(outbox: RedisOutbox) -> OutboxMessage:
    """Save one fresh message (`new_message`) in its own business transaction; return it."""
    sent = new_message()
    await save_all(outbox, [sent])
    return sent


async def saved(outbox: RedisOutbox, *keys: str | None) -> list[OutboxMessage]:
    """Save a fresh message per partition key in ``keys`` (None: keyless), in that order; return them."""
    messages = [new_message(key) for key in keys]
    await save_all(outbox, messages)
    return messages


async def assert_claimed_and_published(
    storage: AsyncRedisOutboxStorage, claimed: Sequence[OutboxMessage], sent: OutboxMessage
) -> None:
    """The claim returned ``sent`` alone; marked published, the stats count it."""
    assert [m.id for m in claimed] == [sent.id]
    await storage.mark_published(sent.id)
    assert (await storage.stats()).published == 1


async def save_all(outbox: RedisOutbox, messages: Sequence[OutboxMessage]) -> None:
    """Save ``messages`` in order, in business transactions of up to 500."""
    storage = outbox.storage()
    for start in range(0, len(messages), 500):
        async with outbox.transaction():
            for message in messages[start : start + 500]:
                await storage.save(message)


def make_outbox(
    url: str, prefix: str | None = None, *, batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES
) -> RedisOutbox:
    """An outbox under ``prefix`` (default: a fresh unique one) on the Redis at ``url``.

    Claims have a lease of 1 s and a timeout of 3 s, as in the conformance
    harness, and hold at most ``batch_max_bytes`` of payload.
    """
    config = RedisOutboxConfig().model_copy(
        update={"url": url, "key_prefix": prefix or f"{{unit-{uuid.uuid4().hex}}}"}
    )
    outbox_config = OutboxConfig().model_copy(
        update={
            "claim_timeout_seconds": 3.0,
            "claim_lease_seconds": 1.0,
            "batch_max_bytes": batch_max_bytes,
        }
    )
    return RedisOutbox(
        config,
        outbox_config,
        RedisOutboxConnectionManager(config),
        redis.asyncio.Redis.from_url(url),
    )


async def drop_keys(
    raw: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
    prefix: str,
    connections: RedisOutboxConnectionManager,
) -> None:
    """Delete every key under ``prefix`` through ``raw`` (one server or a cluster), then close both clients."""
    keys: list[bytes] = [k async for k in raw.scan_iter(match=f"{prefix}*")]
    if keys:
        await raw.delete(*keys)
    await raw.aclose()
    await connections.aclose()


async def drop_outbox(outbox: RedisOutbox) -> None:
    """Delete the outbox's keys and close its clients."""
    await drop_keys(outbox.raw, outbox.prefix, outbox.connections)


@asynccontextmanager
async def dropped_after(outbox: RedisOutbox) -> AsyncIterator[RedisOutbox]:
    """``outbox`` for the block; its keys deleted and its clients closed afterwards."""
    try:
        yield outbox
    finally:
        await drop_outbox(outbox)


def outbox_on(request: pytest.FixtureRequest, topology: str) -> RedisOutbox:
    """A fresh outbox on the test Redis (``single``) or the test Redis Cluster (``cluster``)."""
    if topology == "cluster":
        return cluster_outbox(cast(str, request.getfixturevalue("redis_cluster_url")))
    return make_outbox(cast(str, request.getfixturevalue("redis_url")))


def cluster_outbox(url: str) -> RedisOutbox:
    """An outbox under a fresh prefix on the Redis Cluster at ``url``, with a raw cluster client."""
    config = RedisOutboxConfig().model_copy(
        update={"url": url, "key_prefix": f"{{inbox-{uuid.uuid4().hex}}}", "cluster": True}
    )
    # the cluster client offers the commands the tests read raw state with
    raw = cast(redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster.from_url(url))
    return RedisOutbox(config, OutboxConfig(), RedisOutboxConnectionManager(config), raw)


@pytest.fixture
async def outbox(redis_url: str) -> AsyncIterator[RedisOutbox]:
    """A fresh outbox under a unique hash-tagged prefix, deleted afterwards."""
    async with dropped_after(make_outbox(redis_url)) as created:
        yield created
