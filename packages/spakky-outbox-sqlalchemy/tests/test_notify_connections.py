"""The LISTEN and NOTIFY connections: the app engine's connect_args, one sender, one connection.

Issues 17.16 and 16.7. The observer reads ``pg_stat_activity``: a backend whose
last statement is ``LISTEN "<channel>"`` is a listener, one whose last statement
is the channel's ``pg_notify`` is a NOTIFY connection.
"""

import asyncio
import contextvars
import gc
import logging
import threading
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from spakky.plugins.outbox_sqlalchemy.storage import AsyncSqlAlchemyOutboxStorage
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .conftest import AsyncOutbox, close_outbox, message, open_outbox, sync_twin

DEADLINE_SECONDS = 30.0
COMMITS = 30
"""Commits fired at once: more than the pool holds, so some wait for a connection."""
WAKEUP_LOGGER = "spakky.plugins.outbox_sqlalchemy.wakeup"
GC_WARNING = "garbage collector is trying to clean up"


def _connect_args(driver: str, application_name: str) -> dict[str, Any]:
    """What an app passes its engine to name its connections, per driver."""
    if driver == "postgresql+asyncpg":
        return {"server_settings": {"application_name": application_name}}
    return {"application_name": application_name}


@pytest.fixture
async def observer(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of the test's own, reading ``pg_stat_activity``."""
    url = make_url(postgres_url).set(drivername="postgresql+asyncpg")
    engine = create_async_engine(url)
    yield engine
    await engine.dispose()


async def _backends(observer: AsyncEngine, channel: str) -> list[tuple[str, str]]:
    """(application_name, kind) of every backend LISTENing on or NOTIFYing ``channel``."""
    async with observer.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT application_name, "
                "CASE WHEN query LIKE 'LISTEN%' THEN 'listen' ELSE 'notify' END "
                "FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND (query = :listen OR query = :notify)"
            ),
            {
                "listen": f'LISTEN "{channel}"',
                "notify": f"SELECT pg_notify('{channel}', '')",
            },
        )
        return [(row[0], row[1]) for row in result]


async def _eventually(check: Callable[[], Awaitable[bool]]) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    while not await check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _channel(outbox: AsyncOutbox) -> str:
    return f"spakky_outbox_{outbox.config.table_name}"


async def _assert_both_named(observer: AsyncEngine, channel: str, name: str) -> None:
    """The channel's LISTEN and NOTIFY connections both come up, and both carry the application name ``name``."""

    async def both_open() -> bool:
        kinds = {kind for _, kind in await _backends(observer, channel)}
        return kinds == {"listen", "notify"}

    assert await _eventually(both_open)
    assert sorted(await _backends(observer, channel)) == [(name, "listen"), (name, "notify")]


@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "postgresql+psycopg"])
async def test_listen_and_notify_connections_expect_engine_connect_args(
    postgres_url: str, observer: AsyncEngine, driver: str
) -> None:
    """Both connections carry the app engine's connect_args (here its application_name)."""
    name = f"app-{uuid.uuid4().hex[:10]}"
    url = make_url(postgres_url).set(drivername=driver).render_as_string(False)
    outbox = await open_outbox(url, connect_args=_connect_args(driver, name))
    channel = _channel(outbox)
    storage = outbox.storage()
    try:
        await asyncio.wait_for(storage.start_listening(), DEADLINE_SECONDS)
        async with outbox.transaction():
            await storage.save(message())
        await _assert_both_named(observer, channel, name)
    finally:
        await close_outbox(outbox)
    assert await _eventually(lambda: _no_backends(observer, channel))


async def _no_backends(observer: AsyncEngine, channel: str) -> bool:
    return not await _backends(observer, channel)


async def test_sync_listen_and_notify_connections_expect_engine_connect_args(
    postgres_url: str, observer: AsyncEngine
) -> None:
    """The sync storage's LISTEN thread and NOTIFY sender connect like the app's engine too."""
    name = f"app-{uuid.uuid4().hex[:10]}"
    url = make_url(postgres_url).set(drivername="postgresql+asyncpg").render_as_string(False)
    outbox = await open_outbox(url)
    sync = sync_twin(outbox, "postgresql+psycopg", _connect_args("postgresql+psycopg", name))
    channel = _channel(outbox)
    storage = sync.storage()

    def listen_and_save() -> None:
        assert storage.start_listening(DEADLINE_SECONDS)
        with sync.transaction():
            storage.save(message())

    try:
        await asyncio.to_thread(listen_and_save)
        await _assert_both_named(observer, channel, name)
    finally:
        await asyncio.to_thread(sync.close)
        await close_outbox(outbox)
    assert await _eventually(lambda: _no_backends(observer, channel))


class _Sampler:
    """Samples the channel's NOTIFY connections until stopped; keeps the most seen at once."""

    def __init__(self, observer: AsyncEngine, channel: str) -> None:
        self.most = 0
        self._observer = observer
        self._channel = channel
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.sample()
            await asyncio.sleep(0.005)

    async def sample(self) -> int:
        """Count the NOTIFY connections now."""
        count = sum(kind == "notify" for _, kind in await _backends(self._observer, self._channel))
        self.most = max(self.most, count)
        return count

    async def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        await self._task


def _detached(outbox: AsyncOutbox) -> list[object]:
    """Connections taken out of the engine's pool for good: the outbox's own ones."""
    taken: list[object] = []
    pool = outbox.connections.connection.sync_engine.pool
    event.listen(pool, "detach", lambda connection, _record: taken.append(connection))  # pyright: ignore[reportUnknownLambdaType, reportUnknownArgumentType]
    return taken


@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "postgresql+psycopg"])
@pytest.mark.parametrize("throttle", [0.0, 0.02])
async def test_many_commits_at_once_expect_one_notify_connection_and_no_warning(
    postgres_url: str,
    observer: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
    driver: str,
    throttle: float,
) -> None:
    """Commits racing on one storage: one sender, one NOTIFY connection, nothing logged."""
    url = make_url(postgres_url).set(drivername=driver).render_as_string(False)
    outbox = await open_outbox(url, notify_throttle_seconds=throttle)
    channel = _channel(outbox)
    storage = outbox.storage()
    taken = _detached(outbox)
    caplog.set_level(logging.WARNING, logger=WAKEUP_LOGGER)

    async def commit(storage: AsyncSqlAlchemyOutboxStorage) -> None:
        async def transaction() -> None:
            async with outbox.transaction():
                await storage.save(message())

        # A fresh context each: its own scoped session, as concurrent requests have.
        await asyncio.create_task(transaction(), context=contextvars.Context())

    async def commit_all() -> None:
        await asyncio.gather(*(commit(storage) for _ in range(COMMITS)))

    async def close() -> None:
        await close_outbox(outbox)

    await _assert_one_notify_connection(observer, channel, commit_all, close, taken, caplog)


async def _one_notify(sampler: _Sampler) -> bool:
    return await sampler.sample() == 1


async def _assert_one_notify_connection(
    observer: AsyncEngine,
    channel: str,
    commit_all: Callable[[], Awaitable[None]],
    close: Callable[[], Awaitable[None]],
    taken: list[object],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While ``commit_all`` runs one NOTIFY connection at most serves ``channel`` (the one the pool let go, ``taken``); after ``close`` nothing was logged or warned."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler = _Sampler(observer, channel)
        try:
            await commit_all()
            assert await _eventually(lambda: _one_notify(sampler))
        finally:
            await sampler.stop()
            await close()
        gc.collect()
    assert sampler.most == 1
    assert len(taken) == 1, "every NOTIFY goes through the one kept connection"
    assert [r.getMessage() for r in caplog.records if r.name == WAKEUP_LOGGER] == []
    assert [str(w.message) for w in caught if GC_WARNING in str(w.message)] == []


async def test_sync_many_commits_at_once_expect_one_notify_connection_and_no_warning(
    postgres_url: str, observer: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """Threads committing at once on one sync storage: one NOTIFY connection, nothing logged."""
    url = make_url(postgres_url).set(drivername="postgresql+asyncpg").render_as_string(False)
    outbox = await open_outbox(url, notify_throttle_seconds=0.0)
    sync = sync_twin(outbox, "postgresql+psycopg")
    channel = _channel(outbox)
    storage = sync.storage()
    taken: list[object] = []
    event.listen(sync.connections.connection.pool, "detach", lambda c, _r: taken.append(c))  # pyright: ignore[reportUnknownLambdaType, reportUnknownArgumentType, reportUnknownMemberType]
    caplog.set_level(logging.WARNING, logger=WAKEUP_LOGGER)
    start = threading.Barrier(COMMITS)

    def commit() -> None:
        start.wait()
        with sync.transaction():
            storage.save(message())

    def commit_in_threads() -> None:
        threads = [threading.Thread(target=commit) for _ in range(COMMITS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    async def commit_all() -> None:
        await asyncio.to_thread(commit_in_threads)

    async def close() -> None:
        await asyncio.to_thread(sync.close)
        await close_outbox(outbox)

    await _assert_one_notify_connection(observer, channel, commit_all, close, taken, caplog)
