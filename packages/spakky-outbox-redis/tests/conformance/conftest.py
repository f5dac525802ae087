"""The Redis storage under the conformance suite, against a real Redis server."""

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Generator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import cast, override

import pytest
import redis.asyncio
import redis.asyncio.cluster
from spakky.outbox.common.figures import RelayFigures
from spakky.outbox.testing.harness import (
    AbstractOutboxHarness,
    Capability,
    RawOutboxRecord,
)
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.codec import RedisKeys, decode_figures
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.storage import (
    AsyncRedisOutboxStorage,
    RedisOutboxStorage,
)
from spakky.plugins.outbox_redis.transaction import (
    AsyncRedisTransaction,
    RedisTransaction,
    current_async_pipeline,
    current_pipeline,
)


def _json_headers(raw: bytes) -> dict[str, str]:
    """Headers as stored; none for a record `corrupt` damaged (the backdoor still lists it)."""
    try:
        return cast(dict[str, str], json.loads(raw))
    except ValueError:
        return {}


class RedisOutboxHarness(AbstractOutboxHarness):
    """One outbox under a unique hash-tagged key prefix on a real Redis (or Redis Cluster)."""

    name = "redis"
    capabilities = frozenset(Capability)
    claim_timeout_seconds = 3.0
    claim_lease_seconds = 1.0

    def __init__(self, url: str, *, cluster: bool = False) -> None:
        """Prepare an outbox under a fresh prefix on the Redis (cluster) at ``url``."""
        self.name = "redis-cluster" if cluster else "redis"
        self.prefix = f"{{outbox-test-{uuid.uuid4().hex}}}"
        self.keys = RedisKeys(self.prefix)
        self.config = RedisOutboxConfig().model_copy(
            update={"url": url, "key_prefix": self.prefix, "cluster": cluster}
        )
        self.connections = RedisOutboxConnectionManager(self.config)
        self.backdoor: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster = (
            redis.asyncio.cluster.RedisCluster.from_url(url)
            if cluster
            else redis.asyncio.Redis.from_url(url)
        )

    @override
    def new_storage(self) -> AsyncRedisOutboxStorage:
        """An asyncio storage with its own owner token."""
        return AsyncRedisOutboxStorage(self.connections, self.config, self.outbox_config())

    @override
    def new_sync_storage(self) -> RedisOutboxStorage:
        """A synchronous storage with its own owner token."""
        return RedisOutboxStorage(self.connections, self.config, self.outbox_config())

    @override
    @asynccontextmanager
    async def business_transaction(self, business_key: str) -> AsyncGenerator[None]:
        """One MULTI/EXEC that writes the business key first."""
        async with AsyncRedisTransaction(self.config, self.connections):
            await current_async_pipeline().hset(self.keys.business(business_key), "state", "written")
            yield

    @override
    @contextmanager
    def business_transaction_sync(self, business_key: str) -> Generator[None]:
        """`business_transaction` through `RedisTransaction`."""
        with RedisTransaction(self.config, self.connections):
            current_pipeline().hset(self.keys.business(business_key), "state", "written")
            yield

    @override
    async def business_record_exists(self, business_key: str) -> bool:
        """Read the business key directly."""
        return bool(
            await self.backdoor.exists(self.keys.business(business_key))
        )

    @override
    async def raw_relay_figures(self) -> list[RelayFigures]:
        """Read every member of the figures set directly, by their end."""
        members = cast(list[bytes], await self.backdoor.zrange(self.keys.figures, 0, -1))
        return [decode_figures(member) for member in members]

    @override
    async def raw_records(self) -> list[RawOutboxRecord]:
        """Scan the message hashes directly, ordered by their sequence number."""
        records: list[tuple[int, RawOutboxRecord]] = []
        stem = self.keys.message("")
        async for key in self.backdoor.scan_iter(match=f"{stem}*", count=1000):
            flat = cast(
                dict[bytes, bytes], await self.backdoor.hgetall(cast(bytes, key))
            )
            if not flat:
                continue
            key_text = flat.get(b"partition_key")
            error = flat.get(b"last_error")
            records.append(
                (
                    int(flat[b"seq"]),
                    RawOutboxRecord(
                        id=uuid.UUID(cast(bytes, key).decode()[len(stem) :]),
                        event_name=flat[b"event_name"].decode(),
                        payload=flat[b"payload"],
                        headers=_json_headers(flat[b"headers"]),
                        partition_key=None if key_text is None else key_text.decode(),
                        retry_count=int(flat[b"retry_count"]),
                        claimed=b"claimed_at" in flat,
                        published=b"published_at" in flat,
                        abandoned=b"abandoned_at" in flat,
                        last_error=None if error is None else error.decode(),
                        created_at=datetime.fromisoformat(flat[b"created_at"].decode()),
                    ),
                )
            )
        return [record for _, record in sorted(records, key=lambda r: r[0])]

    @override
    async def corrupt(self, message_id: uuid.UUID) -> None:
        """Overwrite the stored headers with bytes that are not JSON."""
        await self.backdoor.hset(self.keys.message(message_id), "headers", b"\xff{")

    @override
    async def assert_no_leaks(self) -> None:
        """Fail when a pooled connection is still checked out."""
        # a cancelled or finishing command may hand its connection back a tick later
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while self.connections.in_use_connections() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert self.connections.in_use_connections() == 0

    @override
    async def drop(self) -> None:
        """Delete every key of this outbox and close the clients."""
        keys: list[bytes] = [
            k
            async for k in self.backdoor.scan_iter(match=f"{self.prefix}*", count=1000)
        ]
        if keys:
            await self.backdoor.delete(*keys)
        await self.backdoor.aclose()
        await self.connections.aclose()


@pytest.fixture(params=["single", "cluster"])
async def outbox_harness(
    request: pytest.FixtureRequest,
) -> AsyncIterator[RedisOutboxHarness]:
    """A fresh Redis outbox under its own key prefix, removed afterwards.

    Runs every test twice: on one Redis server, and on a 3-primary Redis
    Cluster through redis-py's cluster client.
    """
    if request.param == "cluster":
        url = cast(str, request.getfixturevalue("redis_cluster_url"))
        harness = RedisOutboxHarness(url, cluster=True)
    else:
        harness = RedisOutboxHarness(cast(str, request.getfixturevalue("redis_url")))
    try:
        yield harness
    finally:
        await harness.drop()
