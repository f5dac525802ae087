"""The SQLAlchemy inbox on every dialect: records commit with the handler's writes, once per key."""

import asyncio
import contextlib
import contextvars
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from spakky.outbox.error import OutboxTransactionRequiredError
from spakky.outbox.ports.inbox import IAsyncInboxStorage, LeaseOutcome
from spakky.plugins.outbox_sqlalchemy.error import InboxTableNotFoundError
from spakky.plugins.outbox_sqlalchemy.inbox import (
    AsyncSqlAlchemyInboxStorage,
    SqlAlchemyInboxStorage,
    create_inbox_table,
    inbox_table,
)
from sqlalchemy import Column, MetaData, String, Table, insert, inspect, select, update

from .conftest import (
    ASYNC_DRIVERS,
    SYNC_DRIVER,
    AsyncOutbox,
    close_outbox,
    driver_url,
    open_outbox,
    sync_twin,
)


class _RollbackError(Exception):
    """Makes a handler transaction roll back."""


class Inbox:
    """An inbox table and an effects table on one database, with a handler runner."""

    def __init__(self, outbox: AsyncOutbox) -> None:
        self.outbox = outbox
        self.table = inbox_table(outbox.config.inbox_table_name)
        self.effects = Table(f"{outbox.config.inbox_table_name}_fx", MetaData(), Column("effect", String(100)))

    def storage(self) -> AsyncSqlAlchemyInboxStorage:
        """A new inbox instance (one consumer process)."""
        return AsyncSqlAlchemyInboxStorage(self.outbox.sessions, self.outbox.connections, self.outbox.config)

    async def handle(
        self,
        inbox: IAsyncInboxStorage,
        message_id: str,
        effect: str,
        *,
        consumer: str = "c",
        fail: bool = False,
        before_commit: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """One handler call in its own context and transaction: record, write the effect if new."""
        ran = False

        async def run() -> None:
            nonlocal ran
            async with self.outbox.transaction():
                ran = await inbox.record(consumer, message_id)
                if ran:
                    await self.outbox.sessions.session.execute(insert(self.effects).values(effect=effect))
                if before_commit is not None:
                    await before_commit()
                if fail:
                    raise _RollbackError

        with contextlib.suppress(_RollbackError):
            await asyncio.create_task(run(), context=contextvars.Context())
        return ran

    async def rows(self) -> list[tuple[str, str, bool]]:
        """Backdoor: (consumer, message id, leased) of every record."""
        async with self.outbox.connections.connection.connect() as connection:
            result = await connection.execute(select(self.table).order_by(self.table.c.message_id))
            return [(r.consumer, r.message_id, r.lease_until is not None) for r in result]

    async def effect_rows(self) -> list[str]:
        """Backdoor: every effect written."""
        async with self.outbox.connections.connection.connect() as connection:
            return sorted(r.effect for r in await connection.execute(select(self.effects)))


@contextlib.asynccontextmanager
async def opened_inbox(url: str, *, create_table: bool = False) -> AsyncIterator[Inbox]:
    """A fresh inbox table (created now, or on first use) and effects table at ``url``; both dropped after."""
    outbox = await open_outbox(url, inbox_table_name=f"inbox_{uuid.uuid4().hex[:12]}")
    box = Inbox(outbox)
    async with outbox.connections.connection.begin() as connection:
        await connection.run_sync(box.effects.create)
        if create_table:
            await connection.run_sync(lambda c: create_inbox_table(c, box.table))
    try:
        yield box
    finally:
        async with outbox.connections.connection.begin() as connection:
            await connection.run_sync(box.effects.drop)
            await connection.run_sync(lambda c: box.table.drop(c, checkfirst=True))
        await close_outbox(outbox)


@pytest.fixture(params=ASYNC_DRIVERS)
async def inbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Inbox]:
    """A fresh inbox table (created on first use) and effects table on each database."""
    async with opened_inbox(driver_url(request, request.param, tmp_path)) as box:
        yield box


async def test_sqlalchemy_inbox_duplicate_expect_skipped_one_record(inbox: Inbox) -> None:
    """The second delivery of a message is skipped; one record, one effect."""
    storage = inbox.storage()
    assert await inbox.handle(storage, "m1", "e1") is True
    assert await inbox.handle(storage, "m1", "e1-again") is False
    assert await inbox.rows() == [("c", "m1", False)]
    assert await inbox.effect_rows() == ["e1"]


async def test_sqlalchemy_inbox_first_messages_concurrent_expect_table_created_all_recorded(inbox: Inbox) -> None:
    """Eight first messages at once, each its own instance: the CREATE race (PostgreSQL's catalog unique index) fails none of them."""
    storages = [inbox.storage() for _ in range(8)]
    ran = await asyncio.gather(*(inbox.handle(s, f"m{n}", f"e{n}") for n, s in enumerate(storages)))
    assert ran == [True] * 8
    assert await inbox.effect_rows() == sorted(f"e{n}" for n in range(8))


async def test_sqlalchemy_inbox_status_purge_missing_table_expect_not_found_nothing_created(inbox: Inbox) -> None:
    """Before any record, stats and purge name the missing table and create nothing (only records do)."""
    storage = inbox.storage()
    for call in (storage.stats(), storage.purge(datetime.now(UTC), 10)):
        with pytest.raises(InboxTableNotFoundError, match=inbox.table.name):
            await call
    async with inbox.outbox.connections.connection.connect() as connection:
        assert not await connection.run_sync(lambda c: inspect(c).has_table(inbox.table.name))
    assert await inbox.handle(storage, "m1", "e1") is True
    assert (await storage.stats()).records == 1


async def test_sqlalchemy_inbox_rollback_expect_no_record_redelivery_runs(inbox: Inbox) -> None:
    """A rolled-back handler leaves neither record nor effect; the redelivery runs it."""
    storage = inbox.storage()
    await inbox.handle(storage, "m1", "e1", fail=True)
    assert await inbox.rows() == [] and await inbox.effect_rows() == []
    assert await inbox.handle(storage, "m1", "e2") is True
    assert await inbox.effect_rows() == ["e2"]


async def test_sqlalchemy_inbox_racing_instances_expect_one_effect(inbox: Inbox) -> None:
    """Two instances handling one message at once: the second waits on the key, then skips."""
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        holding.set()
        await release.wait()

    first = asyncio.create_task(inbox.handle(inbox.storage(), "m1", "first", before_commit=hold))
    await asyncio.wait_for(holding.wait(), 10)
    second = asyncio.create_task(inbox.handle(inbox.storage(), "m1", "second"))
    release.set()
    results = await asyncio.wait_for(asyncio.gather(first, second), 30)
    assert sorted(results) == [False, True]
    assert len(await inbox.effect_rows()) == 1 and len(await inbox.rows()) == 1


async def test_sqlalchemy_inbox_consumers_expect_independent(inbox: Inbox) -> None:
    """Two consumer names record the same message separately; byte-wise keys ("A" vs "a") differ."""
    storage = inbox.storage()
    assert await inbox.handle(storage, "m1", "c1", consumer="billing") is True
    assert await inbox.handle(storage, "m1", "c2", consumer="shipping") is True
    assert await inbox.handle(storage, "M1", "c3", consumer="shipping") is True
    assert sorted(await inbox.rows()) == [("billing", "m1", False), ("shipping", "M1", False), ("shipping", "m1", False)]


async def test_sqlalchemy_inbox_purge_expect_old_records_in_bounded_batches(inbox: Inbox) -> None:
    """Records older than the cutoff go, at most ``limit`` per call; newer ones stay."""
    storage = inbox.storage()
    for n in range(5):
        await inbox.handle(storage, f"m{n}", f"e{n}")
    async with inbox.outbox.connections.connection.begin() as connection:
        await connection.execute(
            update(inbox.table)
            .where(inbox.table.c.message_id.in_(["m0", "m1", "m2"]))
            .values(recorded_at=datetime.now(UTC) - timedelta(days=3))
        )
    cutoff = datetime.now(UTC) - timedelta(days=1)
    assert [await storage.purge(cutoff, limit=2) for _ in range(3)] == [2, 1, 0]
    assert [m for _, m, _ in await inbox.rows()] == ["m3", "m4"]
    stats = await storage.stats()
    assert (stats.records, stats.leased) == (2, 0) and stats.oldest_recorded_at is not None


async def test_sqlalchemy_inbox_lease_expect_busy_takeover_fenced_done(inbox: Inbox) -> None:
    """Lease mode on the database clock: busy while live, taken over once lapsed, fenced, then done."""
    first, second = inbox.storage(), inbox.storage()
    lease = await first.acquire_lease("c", "m1", 0.5)
    assert lease.outcome is LeaseOutcome.ACQUIRED and lease.token is not None
    assert (await second.acquire_lease("c", "m1", 0.5)).outcome is LeaseOutcome.BUSY
    assert await inbox.rows() == [("c", "m1", True)]
    deadline = asyncio.get_running_loop().time() + 15
    while (taken := await second.acquire_lease("c", "m1", 30)).outcome is LeaseOutcome.BUSY:
        assert asyncio.get_running_loop().time() < deadline, "a lapsed lease was never taken over"
        await asyncio.sleep(0.05)
    assert taken.outcome is LeaseOutcome.ACQUIRED and taken.token is not None
    assert await first.finish_lease("c", "m1", lease.token) is False
    assert await second.finish_lease("c", "m1", taken.token) is True
    assert (await first.acquire_lease("c", "m1", 30)).outcome is LeaseOutcome.DONE
    assert await inbox.rows() == [("c", "m1", False)]
    failed = await first.acquire_lease("c", "m2", 30)
    assert failed.token is not None
    await first.release_lease("c", "m2", failed.token)
    assert (await second.acquire_lease("c", "m2", 30)).outcome is LeaseOutcome.ACQUIRED


async def test_sqlalchemy_inbox_record_outside_transaction_expect_transaction_required(inbox: Inbox) -> None:
    """``record`` outside ``@Transactional()`` fails with our error."""
    with pytest.raises(OutboxTransactionRequiredError):
        await inbox.storage().record("c", "m1")


@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "mysql+aiomysql", "sqlite+aiosqlite"])
async def test_sqlalchemy_sync_inbox_duplicate_expect_skipped(
    request: pytest.FixtureRequest, tmp_path: Path, driver: str
) -> None:
    """The sync flavour: stats refused before the table exists, record in a sync transaction, duplicate skipped, lease done once."""
    outbox = await open_outbox(driver_url(request, driver, tmp_path), inbox_table_name=f"inbox_{uuid.uuid4().hex[:12]}")
    twin = sync_twin(outbox, SYNC_DRIVER[driver])
    storage = SqlAlchemyInboxStorage(twin.sessions, twin.connections, twin.config)

    def handle() -> bool:
        with twin.transaction():
            return storage.record("c", "m1")

    try:
        with pytest.raises(InboxTableNotFoundError):  # stats before any record creates nothing
            await asyncio.to_thread(storage.stats)
        results = [await asyncio.to_thread(contextvars.Context().run, handle) for _ in range(2)]
        assert results == [True, False]
        lease = await asyncio.to_thread(storage.acquire_lease, "c", "m2", 30)
        assert lease.token is not None and await asyncio.to_thread(storage.finish_lease, "c", "m2", lease.token)
        assert (await asyncio.to_thread(storage.acquire_lease, "c", "m2", 30)).outcome is LeaseOutcome.DONE
        assert (await asyncio.to_thread(storage.stats)).records == 2
    finally:
        await asyncio.to_thread(lambda: inbox_table(twin.config.inbox_table_name).drop(twin.connections.connection, checkfirst=True))
        twin.close()
        await close_outbox(outbox)
