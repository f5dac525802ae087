"""Table names that need quoting: reserved words and mixed case (issue 11.5)."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from spakky.plugins.outbox_sqlalchemy.schema import create_outbox_table, outbox_table
from sqlalchemy import create_engine, inspect

from .conftest import SYNC_DRIVER, close_outbox, message, open_outbox, sync_twin


@pytest.mark.parametrize("table_name", ["order", "user", "Outbox"])
async def test_quoted_table_name_expect_save_claim_ack_and_admin_work(
    scratch_database: str, table_name: str
) -> None:
    """A reserved word or mixed-case table works for every operation, on every dialect."""
    outbox = await open_outbox(scratch_database, table_name=table_name, claim_timeout_seconds=3.0)
    try:
        storage = outbox.storage()
        first, second, keyless = message("k"), message("k"), message()
        await outbox.write([first, second, keyless])
        claimed = await storage.fetch_pending(10, 5)
        assert [m.id for m in claimed] == [first.id, second.id, keyless.id]
        assert await storage.renew_claims([first.id, second.id]) == 2
        await storage.mark_published(first.id)
        await storage.mark_published_many([second.id])
        await storage.abandon(keyless.id, "refused")
        stats = await storage.stats()
        assert (stats.pending, stats.published, stats.abandoned) == (0, 2, 1)
        assert [m.id for m in await storage.list_abandoned()] == [keyless.id]
        assert await storage.requeue_abandoned() == 1
        assert await storage.purge_published(datetime.now(UTC) + timedelta(days=1)) == 2
        async with outbox.connections.connection.connect() as connection:
            tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
        assert table_name in tables
    finally:
        await close_outbox(outbox)


@pytest.mark.parametrize("table_name", ["order", "Outbox"])
async def test_quoted_table_name_sync_storage_expect_claim_and_ack_work(
    scratch_database: str, table_name: str
) -> None:
    """The sync storage quotes the name the same way."""
    outbox = await open_outbox(scratch_database, table_name=table_name)
    driver = outbox.connections.connection.url.drivername
    sync = sync_twin(outbox, SYNC_DRIVER[driver])
    try:
        create_outbox_table(sync.connections.connection, table_name)
        storage = sync.storage()
        sent = message("k")
        with sync.transaction():
            storage.save(sent)
        claimed = await asyncio.to_thread(storage.fetch_pending, 10, 5)
        assert [m.id for m in claimed] == [sent.id]
        await asyncio.to_thread(storage.mark_published_many, [sent.id])
        assert (await asyncio.to_thread(storage.stats)).published == 1
    finally:
        await asyncio.to_thread(sync.close)
        await close_outbox(outbox)


def test_long_table_name_expect_index_names_within_identifier_limit(tmp_path: object) -> None:
    """A 63-character table name still gets valid, distinct index names."""
    name = "t" * 63
    names = [index.name for index in outbox_table(name).indexes]
    assert all(index_name is not None and len(index_name) <= 63 for index_name in names)
    assert len(set(names)) == len(names)
    engine = create_engine(f"sqlite:///{tmp_path}/long.db")
    create_outbox_table(engine, name)
    assert inspect(engine).has_table(name)
    engine.dispose()
