"""Fixtures for the Redis outbox package tests: a real Redis, one prefix per test."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio
from spakky.outbox.common.config import OutboxConfig
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.storage import (
    AsyncRedisOutboxStorage,
    RedisOutboxStorage,
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

    def storage(self) -> AsyncRedisOutboxStorage:
        """A new asyncio storage instance (one relay)."""
        return AsyncRedisOutboxStorage(
            self.connections, self.config, self.outbox_config
        )

    def sync_storage(self) -> RedisOutboxStorage:
        """A new synchronous storage instance (one relay)."""
        return RedisOutboxStorage(self.connections, self.config, self.outbox_config)


@pytest.fixture
async def outbox(redis_url: str) -> AsyncIterator[RedisOutbox]:
    """A fresh outbox under a unique hash-tagged prefix, deleted afterwards."""
    prefix = f"{{unit-{uuid.uuid4().hex}}}"
    config = RedisOutboxConfig().model_copy(
        update={"url": redis_url, "key_prefix": prefix}
    )
    outbox_config = OutboxConfig().model_copy(update={"claim_timeout_seconds": 1.0})
    connections = RedisOutboxConnectionManager(config)
    raw = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield RedisOutbox(config, outbox_config, connections, raw)
    finally:
        keys: list[bytes] = [k async for k in raw.scan_iter(match=f"{prefix}*")]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()
        await connections.aclose()
