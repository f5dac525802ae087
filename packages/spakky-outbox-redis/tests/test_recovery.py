"""A Redis restart (AOF on) or a server still loading its data: the storage reports it and recovers."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry
from spakky.outbox.error import OutboxStorageUnavailableError
from spakky_outbox_testservices.redis_servers import RedisServer, private_redis

from .conftest import drop_outbox, make_outbox, new_message, save_all, save_one

MAX_RETRY = 5
DEADLINE = 20.0




async def _eventually[T](call: Callable[[], Awaitable[T]]) -> T:
    """Retry ``call`` while the storage reports the server unavailable, up to the deadline."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return await call()
        except OutboxStorageUnavailableError:
            assert time.monotonic() < deadline, "storage did not recover"
            await asyncio.sleep(0.05)


@pytest.fixture
def durable() -> Iterator[RedisServer]:
    """A private server writing every command to its AOF."""
    with private_redis("--appendonly", "yes", "--appendfsync", "always") as server:
        yield server


async def test_restart_with_aof_expect_claims_acks_and_claims_again(durable: RedisServer) -> None:
    """Claimed before a restart, messages are acknowledged after it by the same instance; the rest claim."""
    outbox = make_outbox(durable.url)
    try:
        sent = [new_message("k"), new_message("k"), new_message()]
        await save_all(outbox, sent)
        storage = outbox.storage()
        held = await storage.fetch_pending(2, MAX_RETRY)
        assert [m.id for m in held] == [m.id for m in sent[:2]]
        await asyncio.to_thread(durable.restart)
        await _eventually(lambda: storage.mark_published_many([m.id for m in held]))
        rest = await _eventually(lambda: storage.fetch_pending(10, MAX_RETRY))
        assert [m.id for m in rest] == [sent[2].id]
        assert await storage.renew_claims([sent[2].id]) == 1
        await storage.mark_published(sent[2].id)
        stats = await storage.stats()
        assert (stats.pending, stats.published) == (0, 3)
    finally:
        await drop_outbox(outbox)


async def test_sync_restart_with_aof_expect_storage_usable_again(durable: RedisServer) -> None:
    """The synchronous storage recovers from a restart the same way."""
    outbox = make_outbox(durable.url)
    try:
        sent = await save_one(outbox)
        storage = outbox.sync_storage()
        assert [m.id for m in await asyncio.to_thread(storage.fetch_pending, 1, MAX_RETRY)] == [sent.id]
        await asyncio.to_thread(durable.restart)
        await _eventually(lambda: asyncio.to_thread(storage.mark_published, sent.id))
        stats = await _eventually(lambda: asyncio.to_thread(storage.stats))
        assert (stats.pending, stats.published) == (0, 1)
    finally:
        await drop_outbox(outbox)


async def test_server_loading_expect_unavailable_then_recovered() -> None:
    """While a restarted server loads its data (BusyLoadingError) the storage says unavailable, then works."""
    with private_redis() as server:
        outbox = make_outbox(server.url)
        try:
            sent = await save_one(outbox)
            with server.client() as client:
                pipe = client.pipeline(transaction=False)
                for i in range(20_000):
                    pipe.set(f"filler:{i}", i)
                pipe.execute()
                client.save()
            # each key takes 500 µs to load, and the server answers (LOADING) between kilobytes
            slow_load = ("--key-load-delay", "500", "--loading-process-events-interval-bytes", "1024")
            await asyncio.to_thread(server.restart, wait=False, extra=slow_load)
            await asyncio.to_thread(_wait_loading, server)
            # fresh connections, one attempt, no client-side retries: the error must surface as ours
            client = outbox.connections.async_client
            await client.connection_pool.disconnect()
            client.set_retry(AsyncRetry(NoBackoff(), 0))
            storage = outbox.storage()
            with pytest.raises(OutboxStorageUnavailableError) as raised:
                await storage.fetch_pending(1, MAX_RETRY)
            assert isinstance(raised.value.__cause__, redis.BusyLoadingError)
            claimed = await _eventually(lambda: storage.fetch_pending(1, MAX_RETRY))
            assert [m.id for m in claimed] == [sent.id]
        finally:
            await drop_outbox(outbox)


def _wait_loading(server: RedisServer) -> None:
    """Wait until the server accepts connections and answers reads with LOADING."""
    deadline = time.monotonic() + DEADLINE
    with redis.Redis(port=server.port, retry=Retry(NoBackoff(), 0)) as client:
        while True:
            try:
                client.exists("probe")  # PING is answered while loading; reads are not
            except redis.BusyLoadingError:
                return
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "server never reported LOADING"
            time.sleep(0.01)
