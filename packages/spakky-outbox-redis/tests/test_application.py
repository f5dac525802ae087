"""A real Spakky application using the Redis outbox through its entry points."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import pytest
import redis
import redis.cluster
from spakky.core.application.application import SpakkyApplication
from spakky.outbox.ports.storage import IAsyncOutboxStorage
from spakky.outbox.testing.events import OrderRejectedError
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    outbox_plugins,
    recording_application,
    run_in_application,
)
from spakky.outbox.testing.waiting import wait_for
from spakky.plugins.outbox_redis.codec import RedisKeys
from spakky.plugins.outbox_redis.storage import AsyncRedisOutboxStorage
from spakky_outbox_testservices.environ import scoped_environ

from . import app as app_package
from .app.service import PlaceOrderUseCase

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


def _build() -> SpakkyApplication:
    return recording_application(app_package, PLUGINS)




def test_application_use_case_expect_order_and_event_committed_then_relayed(
    redis_env: _Target,
) -> None:
    """A committed use case writes the order and its event in one EXEC; the relay sends it."""
    app = _build().start()
    try:
        context = app.application_context
        assert isinstance(context.get(IAsyncOutboxStorage), AsyncRedisOutboxStorage)
        transport = context.get(AsyncRecordingEventTransport)
        run_in_application(app, context.get(PlaceOrderUseCase).execute("o-1", "c-1"))
        raw = redis_env.client()
        try:
            assert raw.get(RedisKeys(redis_env.prefix).business("order:o-1")) == b"c-1"
        finally:
            raw.close()
        delivered = wait_for(lambda: list(transport.delivered), timeout=10)
        assert [(d.event_name, d.partition_key) for d in delivered] == [
            ("OrderPlaced", "c-1")
        ]
    finally:
        app.stop()


def test_application_failed_use_case_expect_nothing_stored(
    redis_env: _Target,
) -> None:
    """A use case failing after publishing leaves neither order nor message in Redis."""
    app = _build().start()
    try:
        with pytest.raises(OrderRejectedError):
            run_in_application(
                app,
                app.application_context.get(PlaceOrderUseCase).execute(
                    "o-2", "c", fail=True
                ),
            )
        raw = redis_env.client()
        try:
            assert list(raw.scan_iter(match=f"{redis_env.prefix}*")) == []
        finally:
            raw.close()
    finally:
        app.stop()
