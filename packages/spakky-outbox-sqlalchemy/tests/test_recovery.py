"""Recovery after a database restart (issue 8.1), on private servers we may restart.

Every failure while the server is away must be `OutboxStorageUnavailableError`
(the relay's cue to back off), and once it is back the storage must work again
without being rebuilt, never handing out a dead pooled connection twice.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from spakky.outbox.error import OutboxStorageUnavailableError
from spakky_outbox_testservices.private import (
    PrivateMariaDB,
    PrivatePostgres,
    private_mariadb,  # noqa: F401 - fixture
    private_postgres,  # noqa: F401 - fixture
)
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from .conftest import AsyncOutbox, close_outbox, message, open_outbox, sync_twin

RECOVERY_SECONDS = 60.0
"""Generous deadline for the storage to work again after the restart returned."""

type Server = PrivatePostgres | PrivateMariaDB


def _server(request: pytest.FixtureRequest, driver: str) -> Server:
    name = "private_postgres" if driver.startswith("postgresql") else "private_mariadb"
    return request.getfixturevalue(name)


async def _outbox(server: Server, driver: str) -> AsyncOutbox:
    url = make_url(server.url).set(drivername=driver).render_as_string(False)
    # Long claims: only the restart may interfere with what the test holds.
    return await open_outbox(url, claim_timeout_seconds=120.0, claim_lease_seconds=60.0)


async def _close(outbox: AsyncOutbox) -> None:
    # The test's own engine use (writes, the final DROP) is the application's
    # side: its pool still holds connections from before the restart.
    await outbox.connections.connection.dispose()
    await close_outbox(outbox)


@dataclass(frozen=True)
class Restartable:
    """A private server the test may restart, and an outbox with long claims on it."""

    server: Server
    outbox: AsyncOutbox


@pytest.fixture(params=["postgresql+asyncpg", "postgresql+psycopg", "mysql+aiomysql"])
async def restartable(request: pytest.FixtureRequest) -> AsyncIterator[Restartable]:
    """For each async driver its private server and an outbox on it, closed afterwards."""
    server = _server(request, request.param)
    outbox = await _outbox(server, request.param)
    try:
        yield Restartable(server, outbox)
    finally:
        await _close(outbox)


async def _fill_pool(outbox: AsyncOutbox) -> None:
    """Leave three idle connections in the (shared) pool, all to be killed by the restart."""
    engine = outbox.connections.connection
    async with engine.connect() as a, engine.connect() as b, engine.connect() as c:
        for connection in (a, b, c):
            await connection.execute(text("SELECT 1"))
    pool: Any = engine.sync_engine.pool
    assert pool.checkedin() >= 3


async def _until_success[T](
    attempt: Callable[[], Awaitable[T]], failures: list[Exception]
) -> T:
    """Retry ``attempt`` (only ever failing with our outage error) until a deadline."""
    deadline = time.monotonic() + RECOVERY_SECONDS
    while True:
        try:
            return await attempt()
        except OutboxStorageUnavailableError as error:
            failures.append(error)
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_restart_with_pooled_connections_expect_one_failure_then_claim_and_ack(
    restartable: Restartable,
) -> None:
    """After a restart the dead pool costs at most one failed call, then claims and acks work."""
    server, outbox = restartable.server, restartable.outbox
    holder, other = outbox.storage(), outbox.storage()
    held, free = message("k"), message()
    await outbox.write([held, free])
    assert [m.id for m in await holder.fetch_pending(1, 5)] == [held.id]
    await _fill_pool(outbox)
    await asyncio.to_thread(server.restart)
    failures: list[Exception] = []

    async def claim_and_ack() -> list[Any]:
        claimed = await other.fetch_pending(10, 5)
        await other.mark_published_many([m.id for m in claimed])
        await holder.mark_published(held.id)
        return claimed

    claimed = await _until_success(claim_and_ack, failures)
    assert [m.id for m in claimed] == [free.id]
    assert len(failures) <= 1, [str(f) for f in failures]
    assert (await other.stats()).published == 2


async def test_restart_during_claims_expect_only_unavailable_errors_then_recovery(
    restartable: Restartable,
) -> None:
    """Relays claiming through a restart see only our outage error, then run clean."""
    server, outbox = restartable.server, restartable.outbox
    storages = [outbox.storage() for _ in range(3)]
    stop = asyncio.Event()
    successes_after_restart = [0] * len(storages)
    restarted = asyncio.Event()
    failures: list[Exception] = []

    async def relay(index: int) -> None:
        storage = storages[index]
        while not stop.is_set():
            try:
                claimed = await storage.fetch_pending(5, 5)
                await storage.mark_published_many([m.id for m in claimed])
                await storage.stats()
                if restarted.is_set():
                    successes_after_restart[index] += 1
            except OutboxStorageUnavailableError as error:
                if restarted.is_set() and successes_after_restart[index]:
                    failures.append(error)  # a dead connection handed out again
                await asyncio.sleep(0.02)

    try:
        await outbox.write([message(f"k{i % 3}") for i in range(30)])
        tasks = [asyncio.create_task(relay(i)) for i in range(len(storages))]
        await asyncio.sleep(0)  # let the relays start before the server goes
        await asyncio.to_thread(server.restart)
        restarted.set()
        deadline = time.monotonic() + RECOVERY_SECONDS
        while min(successes_after_restart) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*tasks)  # any error other than ours fails here
        assert min(successes_after_restart) >= 5, successes_after_restart
        assert failures == []
    finally:
        stop.set()


@pytest.mark.parametrize(
    ("async_driver", "sync_driver"),
    [("postgresql+asyncpg", "postgresql+psycopg"), ("mysql+aiomysql", "mysql+pymysql")],
)
async def test_restart_sync_storage_expect_one_failure_then_claim_and_ack(
    request: pytest.FixtureRequest, async_driver: str, sync_driver: str
) -> None:
    """The sync storage recovers the same way (psycopg 3, PyMySQL)."""
    server = _server(request, async_driver)
    outbox = await _outbox(server, async_driver)
    sync = sync_twin(outbox, sync_driver)
    try:
        storage = sync.storage()
        sent = message()
        await outbox.write([sent])
        engine = sync.connections.connection
        with engine.connect() as a, engine.connect() as b, engine.connect() as c:
            for connection in (a, b, c):
                connection.execute(text("SELECT 1"))
        assert engine.pool.checkedin() >= 3  # pyright: ignore[reportAttributeAccessIssue]
        await asyncio.to_thread(server.restart)
        failures: list[Exception] = []

        async def claim_and_ack() -> list[Any]:
            claimed = await asyncio.to_thread(storage.fetch_pending, 10, 5)
            await asyncio.to_thread(storage.mark_published_many, [m.id for m in claimed])
            return claimed

        assert [m.id for m in await _until_success(claim_and_ack, failures)] == [sent.id]
        assert len(failures) <= 1, [str(f) for f in failures]
    finally:
        await asyncio.to_thread(sync.close)
        await _close(outbox)


@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "mysql+aiomysql"])
async def test_restart_application_pool_pre_ping_expect_first_use_case_succeeds(
    request: pytest.FixtureRequest, driver: str
) -> None:
    """What the README advises for the application's engine (issue 8.5), checked.

    Without pre-ping the application's first transaction after a restart gets a
    dead pooled connection and fails; with ``pool_pre_ping`` it succeeds.
    """
    server = _server(request, driver)
    url = make_url(server.url).set(drivername=driver).render_as_string(False)
    # No NOTIFY: its sender would take the pooled connection out of the pool for its own.
    plain = await open_outbox(url, notify=False)
    pinged = await open_outbox(url, pool_pre_ping=True, notify=False)
    try:
        for outbox in (plain, pinged):
            await outbox.write([message()])  # leaves a pooled connection behind
        await asyncio.to_thread(server.restart)
        with pytest.raises(DBAPIError):
            await plain.write([message()])
        await pinged.write([message()])
        await plain.write([message()])  # the failure discarded the dead pool
    finally:
        await _close(plain)
        await _close(pinged)
