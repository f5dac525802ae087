"""Redis outbox relayed to a real RabbitMQ through spakky-rabbitmq's transport.

The transport publishes each event to the default exchange with the event
name as routing key, into a durable queue of that name, so the tests consume
that queue. It ignores the partition key (one FIFO queue); per-key order is
the outbox's job and is checked on that single queue.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest
import redis
from aio_pika.abc import AbstractIncomingMessage
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.ports.storage import IAsyncOutboxStorage
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.storage import AsyncRedisOutboxStorage
from spakky.plugins.outbox_redis.transaction import AsyncRedisTransaction

from . import shop
from .relay_worker import RELAY_PLUGINS
from .shop.service import E2eOrderPlaced, E2eOrderRejectedError, E2ePlaceOrderUseCase

WORKER = Path(__file__).with_name("relay_worker.py")
LOAD_EVENTS = 20_000
LOAD_KEYS = 100
LOAD_RELAYS = 3
LOAD_DEADLINE_SECONDS = 180.0
PRELOAD_CHUNK = 1_000


def _rabbitmq_env(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    return {
        "SPAKKY_RABBITMQ__USE_SSL": "true" if parts.scheme == "amqps" else "false",
        "SPAKKY_RABBITMQ__HOST": parts.hostname or "127.0.0.1",
        "SPAKKY_RABBITMQ__PORT": str(parts.port or 5672),
        "SPAKKY_RABBITMQ__USER": parts.username or "guest",
        "SPAKKY_RABBITMQ__PASSWORD": parts.password or "guest",
    }


@pytest.fixture
def e2e_env(redis_url: str, rabbitmq_url: str) -> Iterator[str]:
    """Point Spakky at the test Redis (fresh hash-tagged prefix) and RabbitMQ."""
    saved = dict(os.environ)
    prefix = f"{{e2e-{uuid.uuid4().hex}}}"
    os.environ.update(
        {
            "SPAKKY_OUTBOX__STORAGE": "redis",
            "SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS": "0.05",
            "SPAKKY_OUTBOX_REDIS__URL": redis_url,
            "SPAKKY_OUTBOX_REDIS__KEY_PREFIX": prefix,
            **_rabbitmq_env(rabbitmq_url),
        }
    )
    try:
        yield prefix
    finally:
        os.environ.clear()
        os.environ.update(saved)
        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=5_000))
            for start in range(0, len(keys), 5_000):
                client.delete(*keys[start : start + 5_000])
        finally:
            client.close()


class _Collector:
    """Consumes one RabbitMQ queue into a list of (body, headers)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], dict[str, Any]]] = []

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.received.append((json.loads(message.body), dict(message.headers)))

    async def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True


@pytest.fixture
async def rabbit(rabbitmq_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A channel on the test RabbitMQ, closed afterwards."""
    connection = await aio_pika.connect_robust(rabbitmq_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=2_000)
        yield channel
    finally:
        await connection.close()


async def _consume(
    channel: aio_pika.abc.AbstractChannel, queue_name: str
) -> tuple[aio_pika.abc.AbstractQueue, _Collector]:
    """Declare the queue exactly as the transport does and start consuming it."""
    queue = await channel.declare_queue(queue_name, durable=True)
    await queue.purge()
    collector = _Collector()
    await queue.consume(collector.on_message, no_ack=True)
    return queue, collector


def _run_on_app_loop(app: SpakkyApplication, coroutine: Any) -> Any:
    """Run a use case on the application's event loop, as a web handler would."""
    loop = app.application_context._ApplicationContext__event_loop  # type: ignore[attr-defined]
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(10)


async def test_redis_rabbitmq_committed_and_rolled_back_use_cases_expect_only_committed_event_delivered(
    e2e_env: str, redis_url: str, rabbit: aio_pika.abc.AbstractChannel
) -> None:
    """A committed use case's event reaches RabbitMQ; a rolled-back one's never does."""
    queue, collector = await _consume(rabbit, E2eOrderPlaced.__name__)
    app = (
        SpakkyApplication(ApplicationContext())
        .load_plugins(include=set(RELAY_PLUGINS))
        .scan(shop)
        .start()
    )
    try:
        context = app.application_context
        assert isinstance(context.get(IAsyncOutboxStorage), AsyncRedisOutboxStorage)
        use_case = context.get(E2ePlaceOrderUseCase)
        with pytest.raises(E2eOrderRejectedError):
            await asyncio.to_thread(
                _run_on_app_loop, app, use_case.execute("rolled-back", "c-1", fail=True)
            )
        await asyncio.to_thread(
            _run_on_app_loop, app, use_case.execute("committed", "c-1")
        )
        order_ids = lambda: [body["order_id"] for body, _ in collector.received]  # noqa: E731
        assert await collector.wait_until(lambda: "committed" in order_ids(), 15.0)
        assert order_ids() == ["committed"]
        body, headers = collector.received[0]
        assert body["customer_id"] == "c-1"
        assert all(isinstance(v, str) for v in headers.values())
        raw = redis.Redis.from_url(redis_url)
        try:
            assert raw.hget(f"{e2e_env}:order:committed", "customer_id") == b"c-1"
            assert not raw.exists(f"{e2e_env}:order:rolled-back")
        finally:
            raw.close()
    finally:
        await asyncio.to_thread(app.stop)
        await queue.delete(if_unused=False, if_empty=False)


async def _preload(total: int, keys: int, event_name: str) -> float:
    """Store ``total`` messages over ``keys`` partition keys, chunked MULTI/EXECs."""
    config = RedisOutboxConfig()
    connections = RedisOutboxConnectionManager(config)
    storage = AsyncRedisOutboxStorage(connections, config, OutboxConfig())
    transaction = AsyncRedisTransaction(config, connections)
    started = time.perf_counter()
    try:
        for chunk in range(0, total, PRELOAD_CHUNK):
            await transaction.initialize()
            try:
                for index in range(chunk, min(chunk + PRELOAD_CHUNK, total)):
                    key, seq = f"k{index % keys:03d}", index // keys
                    await storage.save(
                        OutboxMessage(
                            id=uuid.uuid4(),
                            event_name=event_name,
                            payload=json.dumps(
                                {"id": index, "key": key, "seq": seq}
                            ).encode(),
                            headers={},
                            created_at=datetime.now(UTC),
                            partition_key=key,
                        )
                    )
                await transaction.commit()
            finally:
                await transaction.dispose()
    finally:
        await connections.aclose()
    return time.perf_counter() - started


def _stop_workers(workers: list[subprocess.Popen[bytes]], stop_file: Path) -> None:
    """Ask every worker to stop (file, then SIGTERM), kill the ones that hang."""
    stop_file.touch()
    deadline = time.monotonic() + 15.0
    for worker in workers:
        try:
            worker.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.terminate()
    for worker in workers:
        try:
            worker.wait(5.0)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


async def test_redis_rabbitmq_three_relay_processes_expect_no_duplicate_and_per_key_order(
    e2e_env: str, rabbit: aio_pika.abc.AbstractChannel, tmp_path: Path
) -> None:
    """Three relay processes deliver 20,000 events over 100 keys: no duplicate, keys in order."""
    event_name = f"E2eLoad_{uuid.uuid4().hex}"
    queue, collector = await _consume(rabbit, event_name)
    workers: list[subprocess.Popen[bytes]] = []
    stop_file = tmp_path / "stop"
    try:
        preload_seconds = await _preload(LOAD_EVENTS, LOAD_KEYS, event_name)
        env = {
            **os.environ,
            "SPAKKY_OUTBOX__BATCH_SIZE": os.environ.get("E2E_BATCH_SIZE", "500"),
            "SPAKKY_OUTBOX__CLAIM_TIMEOUT_SECONDS": "60",
        }
        started = time.perf_counter()
        for index in range(LOAD_RELAYS):
            log = (tmp_path / f"relay-{index}.log").open("wb")
            workers.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), str(stop_file)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        done = await collector.wait_until(
            lambda: (
                len(collector.received) >= LOAD_EVENTS
                or any(w.poll() is not None for w in workers)
            ),
            LOAD_DEADLINE_SECONDS,
        )
        elapsed = time.perf_counter() - started
        received = len(collector.received)
        print(
            f"\npreload {LOAD_EVENTS} in {preload_seconds:.1f}s; relayed {received} "
            f"in {elapsed:.1f}s by {LOAD_RELAYS} processes = "
            f"{received / elapsed:.0f} events/s"
        )
        crashed = [w.args for w in workers if w.poll() is not None]
        assert not crashed, f"relay processes died: see {tmp_path}/relay-*.log"
        assert done and received >= LOAD_EVENTS, (
            f"only {received}/{LOAD_EVENTS} within {LOAD_DEADLINE_SECONDS}s"
        )
        _stop_workers(workers, stop_file)
        # The relays have exited: a marker published now queues behind anything
        # they sent (a late duplicate included), so its arrival drains the queue.
        await rabbit.default_exchange.publish(
            aio_pika.Message(body=json.dumps({"marker": True}).encode()),
            routing_key=event_name,
        )
        assert await collector.wait_until(
            lambda: "marker" in collector.received[-1][0], 15.0
        )
        del collector.received[-1]
        ids = [body["id"] for body, _ in collector.received]
        assert len(ids) == len(set(ids)) == LOAD_EVENTS
        last_seq: dict[str, int] = {}
        for body, _ in collector.received:
            key, seq = body["key"], body["seq"]
            assert seq > last_seq.get(key, -1), (
                f"key {key}: {seq} after {last_seq[key]}"
            )
            last_seq[key] = seq
        assert len(last_seq) == LOAD_KEYS
    finally:
        _stop_workers(workers, stop_file)
        await queue.delete(if_unused=False, if_empty=False)
