"""Cross-process wake-ups through NOTIFY when the throttle holds some back (issue 8.4).

The listener has its own engine, connection and hub: it stands for a relay in
another process, which only learns of a commit through NOTIFY (no polling here).
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from spakky.outbox.backend.wakeup import WakeUpHub
from spakky.plugins.outbox_sqlalchemy.wakeup import (
    PgNotificationListener,
    notify_channel,
)
from sqlalchemy.engine import make_url

from .conftest import AsyncOutbox, close_outbox, message, open_outbox, sync_twin

THROTTLE_SECONDS = 1.5
"""A window the test's three commits fall into on a loaded machine, mostly; the
assertions hold either way."""
DEADLINE_SECONDS = 30.0


@dataclass
class RemoteRelay:
    """What another process's relay has: a LISTEN connection and its own hub."""

    hub: WakeUpHub
    listener: PgNotificationListener

    async def woken_after(self, seen: int) -> bool:
        """Whether a NOTIFY arrives after generation ``seen``, within the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_SECONDS
        while self.hub.generation <= seen:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True


@pytest.fixture(params=["postgresql+asyncpg", "postgresql+psycopg"])
async def throttled(request: pytest.FixtureRequest, postgres_url: str) -> AsyncIterator[tuple[AsyncOutbox, RemoteRelay]]:
    """A saving side with a long NOTIFY throttle, and a remote relay listening."""
    url = make_url(postgres_url).set(drivername=request.param).render_as_string(False)
    outbox = await open_outbox(url, notify_throttle_seconds=THROTTLE_SECONDS)
    hub = WakeUpHub()
    listener = PgNotificationListener(
        outbox.connections.connection, notify_channel(outbox.config.table_name), hub
    )
    listener.start()
    await asyncio.wait_for(listener.ready.wait(), DEADLINE_SECONDS)
    try:
        yield outbox, RemoteRelay(hub, listener)
    finally:
        await listener.stop()
        await close_outbox(outbox)


async def test_throttled_commits_expect_remote_relay_woken_after_the_last(
    throttled: tuple[AsyncOutbox, RemoteRelay],
) -> None:
    """Three commits in one window: the remote relay is woken after the last one too."""
    outbox, remote = throttled
    first, second, third = message(), message(), message()
    await outbox.write([first])
    assert await remote.woken_after(0), "the first commit NOTIFYs at once"
    await outbox.write([second])
    await outbox.write([third])
    seen = remote.hub.generation
    assert await remote.woken_after(seen), "the held-back NOTIFY was dropped"
    claimed = await outbox.storage().fetch_pending(10, 5)
    assert [m.id for m in claimed] == [first.id, second.id, third.id]


async def test_throttled_commits_sync_storage_expect_remote_relay_woken_after_the_last(
    throttled: tuple[AsyncOutbox, RemoteRelay],
) -> None:
    """The sync storage owes held-back NOTIFYs the same way (a timer thread sends them)."""
    outbox, remote = throttled
    sync = sync_twin(outbox, "postgresql+psycopg")
    storage = sync.storage()

    def write() -> None:
        with sync.transaction():
            storage.save(message())

    try:
        await asyncio.to_thread(write)
        assert await remote.woken_after(0)
        await asyncio.to_thread(write)
        await asyncio.to_thread(write)
        seen = remote.hub.generation
        assert await remote.woken_after(seen), "the held-back NOTIFY was dropped"
    finally:
        await asyncio.to_thread(sync.close)


async def test_close_wake_up_with_notify_owed_expect_sent_at_once(
    throttled: tuple[AsyncOutbox, RemoteRelay],
) -> None:
    """Stopping a storage that owes a NOTIFY sends it instead of dropping it."""
    outbox, remote = throttled
    # A window far longer than the test: only closing can send what is owed.
    outbox.config = outbox.config.model_copy(update={"notify_throttle_seconds": 3600.0})
    storage = outbox.storage()
    async with outbox.transaction():
        await storage.save(message())
    assert await remote.woken_after(0)
    async with outbox.transaction():
        await storage.save(message())
    seen = remote.hub.generation
    await storage.close_wake_up()
    assert await remote.woken_after(seen)
