"""A real Spakky application using the Redis outbox through its entry points: the shared application rules."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast, override

import pytest
import redis
import redis.cluster
from spakky.core.application.application import SpakkyApplication
from spakky.outbox.testing.outbox_app import (
    OutboxApplicationRules,
    OutboxView,
    order_application,
    running,
)
from spakky.outbox.testing.transport import outbox_plugins
from spakky.plugins.outbox_redis.codec import RedisKeys
from spakky.plugins.outbox_redis.storage import (
    AsyncRedisOutboxStorage,
    RedisOutboxStorage,
)
from spakky_outbox_testservices.environ import scoped_environ

from .app.business import RedisBusiness

PLUGINS = outbox_plugins("spakky-outbox-redis")


@dataclass(frozen=True)
class _Target:
    """Where the application's outbox lives for one test."""

    url: str
    prefix: str
    cluster: bool

    def client(self) -> redis.Redis | redis.cluster.RedisCluster:
        """A raw client for assertions (close it after use)."""
        if self.cluster:
            return redis.cluster.RedisCluster.from_url(self.url)
        return redis.Redis.from_url(self.url)


@pytest.fixture(params=["single", "cluster"])
def redis_env(request: pytest.FixtureRequest) -> Iterator[_Target]:
    """Point the app at a Redis (or Redis Cluster) under a fresh prefix; delete its keys afterwards."""
    cluster = request.param == "cluster"
    url = cast(str, request.getfixturevalue("redis_cluster_url" if cluster else "redis_url"))
    target = _Target(url, f"{{app-{uuid.uuid4().hex}}}", cluster)
    settings = {
        "SPAKKY_OUTBOX_REDIS__URL": url,
        "SPAKKY_OUTBOX_REDIS__KEY_PREFIX": target.prefix,
        "SPAKKY_OUTBOX_REDIS__CLUSTER": str(cluster).lower(),
        "SPAKKY_OUTBOX__STORAGE": "redis",
        "SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS": "0.05",
    }
    try:
        with scoped_environ(settings):
            yield target
    finally:
        client = target.client()
        keys = list(client.scan_iter(match=f"{target.prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def app(redis_env: _Target) -> Iterator[SpakkyApplication]:
    """The orders service on Redis (one server or a cluster), started with its relay."""
    with running(order_application(PLUGINS, RedisBusiness)) as started:
        yield started


class _RedisOutboxView(OutboxView):
    """Reads the orders and the outbox messages as raw keys, through one client."""

    def __init__(self, prefix: str, client: redis.Redis | redis.cluster.RedisCluster) -> None:
        self._prefix, self._keys, self._client = prefix, RedisKeys(prefix), client

    def _scan(self, start: str) -> list[bytes]:
        return list(self._client.scan_iter(match=f"{start}*"))

    @override
    def orders(self) -> dict[str, str]:
        start = self._keys.business("order:")
        return {key.decode()[len(start) :]: cast(bytes, self._client.get(key)).decode() for key in self._scan(start)}

    @override
    def messages(self) -> list[tuple[str, bool]]:
        found: list[tuple[str, bool]] = []
        for key in self._scan(self._keys.message("")):
            name, published = cast(list[bytes | None], self._client.hmget(key, ["event_name", "published_at"]))
            found.append((cast(bytes, name).decode(), bool(published)))
        return sorted(found)

    @override
    def stored(self) -> list[str]:
        """Every key under the test's prefix: business and outbox keys alike."""
        return sorted(key.decode() for key in self._scan(self._prefix))


@pytest.fixture
def outbox_view(redis_env: _Target) -> Iterator[OutboxView]:
    """The raw keys under the test's prefix."""
    client = redis_env.client()
    try:
        yield _RedisOutboxView(redis_env.prefix, client)
    finally:
        client.close()


class TestRedisOutboxApplication(OutboxApplicationRules):
    """The outbox application rules on Redis, one server and a cluster."""

    storage_types = (AsyncRedisOutboxStorage, RedisOutboxStorage)
