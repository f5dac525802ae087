"""Shared parts of the end-to-end tests, whatever the storage and the broker.

spakky-rabbitmq's transport publishes each event to the default exchange with
the event name as routing key, into a durable queue of that name, so the tests
consume that queue. It ignores the partition key (one FIFO queue); per-key
order is the outbox's job and is checked on that single queue.

The load tests check correctness only (every event once, each key in order),
never speed: their counts are small enough to finish in seconds on a busy
2-core machine, and their deadlines are generous. Rates are `make bench`'s job.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from spakky.core.application.application import SpakkyApplication
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.common.message import OutboxMessage
from spakky.tracing.context import TraceContext
from sqlalchemy import Engine, text

from .orders import E2eOrderRejectedError

WORKER = Path(__file__).with_name("relay_worker.py")
LOAD_RELAYS = 3
"""Relay processes of a load test: several, so claims really compete."""

type Delivery = tuple[dict[str, Any], dict[str, Any]]
"""A consumed message: JSON body and headers."""


@dataclass(frozen=True)
class SqlE2e:
    """Where one SQLAlchemy end-to-end run keeps its data (fixture `sql_e2e`)."""

    async_url: str
    """``postgresql+asyncpg://`` URL given to the app and the relays."""
    engine: Engine
    """Synchronous (psycopg) engine for set-up, checks and clean-up."""
    outbox_table: str
    orders_table: str

    def rows(self, query: str) -> list[tuple[object, ...]]:
        """Run ``query`` and return its rows as tuples."""
        with self.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query))]


@dataclass(frozen=True)
class Load:
    """A load test's shape: ``events`` spread round-robin over ``keys`` partition keys."""

    events: int
    keys: int
    batch_size: int
    """Relay batch size: small enough that every relay process gets batches."""
    deadline_seconds: float
    """How long the relays may take; generous, since this is no speed check."""

    def key_and_seq(self, index: int) -> tuple[str, int]:
        """The ``index``-th event's partition key and its rank within that key."""
        return f"k{index % self.keys:03d}", index // self.keys

    def message(self, index: int, event_name: str) -> OutboxMessage:
        """The ``index``-th message, its JSON payload ``{id, key, seq}``."""
        key, seq = self.key_and_seq(index)
        return OutboxMessage(
            id=uuid.uuid4(),
            event_name=event_name,
            payload=json.dumps({"id": index, "key": key, "seq": seq}).encode(),
            headers={},
            created_at=datetime.now(UTC),
            partition_key=key,
        )

    def expected(self) -> set[tuple[str, int]]:
        """Every ``(key, seq)`` the load consists of."""
        return {self.key_and_seq(index) for index in range(self.events)}


RABBITMQ_LOAD = Load(events=300, keys=15, batch_size=10, deadline_seconds=180.0)
"""Through spakky-rabbitmq, which connects per message (~100-250 events/s per relay)."""


async def wait_until(
    condition: Callable[[], bool], timeout: float, failure: Callable[[], str]
) -> None:
    """Poll ``condition`` until true; past ``timeout`` fail with ``failure()``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:.0f}s: {failure()}")
        await asyncio.sleep(0.02)


def rabbitmq_env(url: str) -> dict[str, str]:
    """``SPAKKY_RABBITMQ__*`` variables pointing at ``url``."""
    parts = urlsplit(url)
    return {
        "SPAKKY_RABBITMQ__USE_SSL": "true" if parts.scheme == "amqps" else "false",
        "SPAKKY_RABBITMQ__HOST": parts.hostname or "127.0.0.1",
        "SPAKKY_RABBITMQ__PORT": str(parts.port or 5672),
        "SPAKKY_RABBITMQ__USER": parts.username or "guest",
        "SPAKKY_RABBITMQ__PASSWORD": parts.password or "guest",
    }


@contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then restore the environment."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Collector:
    """Consumes one RabbitMQ queue into a list of (body, headers)."""

    def __init__(self) -> None:
        self.received: list[Delivery] = []

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.received.append((json.loads(message.body), dict(message.headers)))


async def consume(
    channel: AbstractChannel, queue_name: str
) -> tuple[AbstractQueue, Collector]:
    """Declare the queue exactly as the transport does and start consuming it."""
    queue = await channel.declare_queue(queue_name, durable=True)
    await queue.purge()
    collector = Collector()
    await queue.consume(collector.on_message, no_ack=True)
    return queue, collector


def run_on_app_loop(app: SpakkyApplication, coroutine: Any) -> Any:
    """Run a use case on the application's event loop, as a web handler would."""
    return app.application_context.get(ApplicationEventLoop).run(coroutine, timeout=60)


async def place_rolled_back_then_committed(
    app: SpakkyApplication, use_case: Any, collector: Collector
) -> Delivery:
    """Run a failing then a succeeding order use case; return the one delivery.

    ``use_case.execute(order_id, customer_id, fail=...)`` must publish
    `E2eOrderPlaced` inside its transaction. The committed one runs in a trace,
    as a request would, whose ``traceparent`` must reach the broker.
    """
    with pytest.raises(E2eOrderRejectedError):
        await asyncio.to_thread(
            run_on_app_loop, app, use_case.execute("rolled-back", "c-1", fail=True)
        )
    trace = TraceContext.new_root()

    def committed_in_trace() -> None:
        TraceContext.set(trace)
        run_on_app_loop(app, use_case.execute("committed", "c-1"))

    await asyncio.to_thread(committed_in_trace)

    def order_ids() -> list[str]:
        return [body["order_id"] for body, _ in collector.received]

    await wait_until(
        lambda: "committed" in order_ids(),
        60.0,
        lambda: f"the committed order's event did not arrive; got {order_ids()}",
    )
    # Same partition key: a stored rolled-back event would have come first.
    assert order_ids() == ["committed"]
    body, headers = collector.received[0]
    assert body["customer_id"] == "c-1"
    assert all(isinstance(v, str) for v in headers.values())
    assert headers.get("traceparent") == trace.to_traceparent(), headers
    return body, headers


def start_workers(
    backend: str,
    stop_file: Path,
    log_dir: Path,
    load: Load,
) -> list[subprocess.Popen[bytes]]:
    """Start `LOAD_RELAYS` relay processes logging to ``log_dir/relay-N.log``."""
    env = {
        **os.environ,
        "SPAKKY_OUTBOX__BATCH_SIZE": str(load.batch_size),
        "SPAKKY_OUTBOX__CLAIM_TIMEOUT_SECONDS": "60",
    }
    workers: list[subprocess.Popen[bytes]] = []
    for index in range(LOAD_RELAYS):
        with (log_dir / f"relay-{index}.log").open("wb") as log:
            workers.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), str(stop_file), backend],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    # Release all relays together once each has built its app.
    deadline = time.monotonic() + 120
    while len(list(stop_file.parent.glob("ready-*"))) < LOAD_RELAYS:
        if any(w.poll() is not None for w in workers):
            raise AssertionError(f"a relay process exited early; logs in {log_dir}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"relay processes not ready after 120s; logs in {log_dir}"
            )
        time.sleep(0.01)
    (stop_file.parent / "go").touch()
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]], stop_file: Path) -> None:
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


async def relay_load_through_processes(
    *,
    backend: str,
    channel: AbstractChannel,
    tmp_path: Path,
    preload: Callable[[str, Load], Awaitable[None]],
    load: Load = RABBITMQ_LOAD,
) -> None:
    """Preload ``load``, relay it to RabbitMQ with `LOAD_RELAYS` processes, check.

    ``preload(event_name, load)`` stores ``load.message(i, event_name)`` for
    every ``i`` in order. Asserts every event arrives exactly once and each
    key's events arrive in order.
    """
    event_name = f"E2eLoad_{uuid.uuid4().hex}"
    queue, collector = await consume(channel, event_name)
    workers: list[subprocess.Popen[bytes]] = []
    stop_file = tmp_path / "stop"
    try:
        await preload(event_name, load)
        workers = start_workers(backend, stop_file, tmp_path, load)
        await wait_until(
            lambda: (
                len(collector.received) >= load.events
                or any(w.poll() is not None for w in workers)
            ),
            load.deadline_seconds,
            lambda: (
                f"{len(collector.received)} of {load.events} events arrived; "
                f"relay logs in {tmp_path}"
            ),
        )
        crashed = [w.args for w in workers if w.poll() is not None]
        assert not crashed, f"relay processes died: see {tmp_path}/relay-*.log"
        stop_workers(workers, stop_file)
        # The relays have exited: a marker published now queues behind anything
        # they sent (a late duplicate included), so its arrival drains the queue.
        await channel.default_exchange.publish(
            aio_pika.Message(body=json.dumps({"marker": True}).encode()),
            routing_key=event_name,
        )
        await wait_until(
            lambda: "marker" in collector.received[-1][0],
            60.0,
            lambda: "the end marker did not arrive",
        )
        del collector.received[-1]
        ids = [body["id"] for body, _ in collector.received]
        assert len(ids) == len(set(ids)), "duplicate deliveries"
        assert sorted(ids) == list(range(load.events))
        last_seq: dict[str, int] = {}
        for body, _ in collector.received:
            key, seq = body["key"], body["seq"]
            assert seq > last_seq.get(key, -1), (
                f"key {key}: {seq} after {last_seq[key]}"
            )
            last_seq[key] = seq
        assert len(last_seq) == load.keys
    finally:
        stop_workers(workers, stop_file)
        await queue.delete(if_unused=False, if_empty=False)


PRELOAD_CHUNK = 5_000
"""Load messages written per transaction by the preload helpers."""


async def preload_sql_outbox(
    async_url: str, table_name: str, event_name: str, load: Load
) -> None:
    """Bulk-INSERT the load messages into a fresh outbox table, in order.

    Also checks that ``seq`` (the claim order) follows the insertion order.
    """
    from spakky.plugins.outbox_sqlalchemy.schema import create_outbox_table_async
    from sqlalchemy import insert, text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(async_url)
    try:
        table = await create_outbox_table_async(engine, table_name)
        for chunk in range(0, load.events, PRELOAD_CHUNK):
            end = min(chunk + PRELOAD_CHUNK, load.events)
            rows = [
                {
                    "id": m.id,
                    "event_name": m.event_name,
                    "payload": m.payload,
                    "headers": dict(m.headers),
                    "created_at": m.created_at,
                    "retry_count": 0,
                    "partition_key": m.partition_key,
                }
                for m in (load.message(i, event_name) for i in range(chunk, end))
            ]
            async with engine.begin() as connection:
                await connection.execute(insert(table), rows)
        async with engine.connect() as connection:
            result = await connection.execute(
                text(f"SELECT payload FROM {table_name} ORDER BY seq")
            )
            ids = [json.loads(payload)["id"] for (payload,) in result]
        assert ids == list(range(load.events))
    finally:
        await engine.dispose()


async def preload_redis_outbox(event_name: str, load: Load) -> None:
    """Store the load messages in order through the Redis storage, in chunked MULTI/EXECs.

    Uses the ``SPAKKY_OUTBOX_REDIS__*`` environment.
    """
    from spakky.outbox.common.config import OutboxConfig
    from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
    from spakky.plugins.outbox_redis.config import RedisOutboxConfig
    from spakky.plugins.outbox_redis.storage import AsyncRedisOutboxStorage
    from spakky.plugins.outbox_redis.transaction import AsyncRedisTransaction

    config = RedisOutboxConfig()
    connections = RedisOutboxConnectionManager(config)
    storage = AsyncRedisOutboxStorage(connections, config, OutboxConfig())
    transaction = AsyncRedisTransaction(config, connections)
    try:
        for chunk in range(0, load.events, PRELOAD_CHUNK):
            await transaction.initialize()
            try:
                for index in range(chunk, min(chunk + PRELOAD_CHUNK, load.events)):
                    await storage.save(load.message(index, event_name))
                await transaction.commit()
            finally:
                await transaction.dispose()
    finally:
        await connections.aclose()
