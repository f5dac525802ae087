"""Redis outbox relayed to a real RabbitMQ through spakky-rabbitmq's transport."""

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from aio_pika.abc import AbstractChannel
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.outbox.ports.storage import IAsyncOutboxStorage
from spakky.plugins.outbox_redis.storage import AsyncRedisOutboxStorage

from . import shop
from .common import (
    consume,
    patched_environ,
    place_rolled_back_then_committed,
    preload_redis_outbox,
    rabbitmq_env,
    relay_load_through_processes,
)
from .orders import E2eOrderPlaced
from .relay_worker import RELAY_PLUGINS
from .shop.service import E2ePlaceOrderUseCase

BACKEND = "redis"


@pytest.fixture
def e2e_env(redis_url: str, rabbitmq_url: str) -> Iterator[str]:
    """Point Spakky at the test Redis (fresh hash-tagged prefix) and RabbitMQ."""
    prefix = f"{{e2e-{uuid.uuid4().hex}}}"
    env = {
        "SPAKKY_OUTBOX__STORAGE": "redis",
        "SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS": "0.05",
        "SPAKKY_OUTBOX_REDIS__URL": redis_url,
        "SPAKKY_OUTBOX_REDIS__KEY_PREFIX": prefix,
        **rabbitmq_env(rabbitmq_url),
    }
    try:
        with patched_environ(env):
            yield prefix
    finally:
        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=5_000))
            for start in range(0, len(keys), 5_000):
                client.delete(*keys[start : start + 5_000])
        finally:
            client.close()


async def test_redis_rabbitmq_committed_and_rolled_back_use_cases_expect_only_committed_event_delivered(
    e2e_env: str, redis_url: str, rabbit: AbstractChannel
) -> None:
    """A committed use case's event reaches RabbitMQ; a rolled-back one's never does."""
    queue, collector = await consume(rabbit, E2eOrderPlaced.__name__)
    app: SpakkyApplication | None = None
    try:
        app = (
            SpakkyApplication(ApplicationContext())
            .load_plugins(include=set(RELAY_PLUGINS[BACKEND]))
            .scan(shop)
            .start()
        )
        context = app.application_context
        assert isinstance(context.get(IAsyncOutboxStorage), AsyncRedisOutboxStorage)
        await place_rolled_back_then_committed(
            app, context.get(E2ePlaceOrderUseCase), collector
        )
        raw = redis.Redis.from_url(redis_url)
        try:
            assert raw.hget(f"{e2e_env}:order:committed", "customer_id") == b"c-1"
            assert not raw.exists(f"{e2e_env}:order:rolled-back")
        finally:
            raw.close()
    finally:
        if app is not None:
            await asyncio.to_thread(app.stop)
        await queue.delete(if_unused=False, if_empty=False)


async def test_redis_rabbitmq_three_relay_processes_expect_no_duplicate_and_per_key_order(
    e2e_env: str, rabbit: AbstractChannel, tmp_path: Path
) -> None:
    """Three relay processes deliver a few hundred keyed events: no duplicate, keys in order."""
    await relay_load_through_processes(
        backend=BACKEND, channel=rabbit, tmp_path=tmp_path, preload=preload_redis_outbox
    )
