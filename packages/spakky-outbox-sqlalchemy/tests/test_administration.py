"""Administration on every dialect: bounded requeue, target, never creating the table."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from spakky.plugins.outbox_sqlalchemy.config import (
    TABLE_NAME_VARIABLE,
    SqlAlchemyOutboxConfig,
)
from spakky.plugins.outbox_sqlalchemy.error import OutboxTableNotFoundError
from spakky.plugins.outbox_sqlalchemy.operations import OutboxSql
from spakky.plugins.outbox_sqlalchemy.schema import outbox_table
from sqlalchemy import Connection, create_engine, inspect
from sqlalchemy.engine import make_url

from .conftest import (
    SYNC_DRIVER,
    AsyncOutbox,
    OpenOutbox,
    close_outbox,
    driver_url,
    message,
    open_outbox,
)

SAVE_DEADLINE_SECONDS = 20.0
"""A save takes milliseconds; one held by an admin lock waits for its commit (or 50 s)."""

_ADMIN: dict[str, tuple[str, Callable[[OutboxSql, Connection], int]]] = {
    "requeue": ("abandoned_at = CURRENT_TIMESTAMP", lambda sql, c: sql.requeue_abandoned(c, None, 1_000)),
    "purge": (
        "published_at = CURRENT_TIMESTAMP - INTERVAL '1' HOUR",
        lambda sql, c: sql.purge_published(c, datetime.now(UTC), 1_000),
    ),
}
"""Per operation: how the row it works on is set up, and the operation."""


async def test_requeue_abandoned_limit_expect_oldest_abandoned_first_in_batches(
    any_outbox: AsyncOutbox,
) -> None:
    """Requeue takes at most ``limit`` per call, oldest abandoned first, until none is left."""
    sent = [message("k") for _ in range(5)]
    await any_outbox.write(sent)
    storage = any_outbox.storage()
    for expected in sent:
        claimed = await storage.fetch_pending(1, 5)
        assert [m.id for m in claimed] == [expected.id]
        await storage.abandon(expected.id, "refused")
    assert await storage.requeue_abandoned(limit=2) == 2
    rows = await any_outbox.rows()
    assert [rows[m.id].abandoned_at is None for m in sent] == [True, True, False, False, False]
    assert (rows[sent[0].id].retry_count, rows[sent[0].id].claimed_by) == (0, None)
    assert await storage.requeue_abandoned(limit=2) == 2
    assert await storage.requeue_abandoned(limit=2) == 1
    assert await storage.requeue_abandoned(limit=2) == 0
    claimed = await storage.fetch_pending(10, 5)
    assert [m.id for m in claimed] == [m.id for m in sent], "back in their key's order"


async def test_requeue_abandoned_ids_expect_only_those_up_to_limit(
    any_outbox: AsyncOutbox,
) -> None:
    """With ids, only those abandoned ones are requeued, at most ``limit``."""
    sent = [message() for _ in range(3)]
    await any_outbox.write(sent)
    storage = any_outbox.storage()
    await storage.fetch_pending(10, 5)
    for m in sent:
        await storage.abandon(m.id, "refused")
    wanted = [sent[2].id, sent[1].id, uuid4()]
    assert await storage.requeue_abandoned(wanted, limit=1) == 1
    assert await storage.requeue_abandoned(wanted) == 1
    assert await storage.requeue_abandoned(wanted) == 0
    assert await storage.requeue_abandoned([]) == 0
    rows = await any_outbox.rows()
    assert [rows[m.id].abandoned_at is None for m in sent] == [False, True, True]


async def test_target_expect_url_without_password_and_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The target names backend, URL (password hidden) and table; defaults are flagged."""
    monkeypatch.delenv(TABLE_NAME_VARIABLE, raising=False)
    url = "postgresql+asyncpg://outbox:s3cret@db.example:5432/shop"
    custom = await open_outbox(url, table_name="orders_outbox")
    default = await open_outbox(url)
    default.config = SqlAlchemyOutboxConfig()  # nothing set: the table is defaulted
    try:
        target = custom.storage().target()
        assert target.backend == "sqlalchemy"
        assert "s3cret" not in target.location
        assert target.location == "postgresql+asyncpg://outbox@db.example:5432/shop table orders_outbox"
        assert target.defaulted == ()
        assert default.storage().target().defaulted == (TABLE_NAME_VARIABLE,)
        sync = custom.sync()  # psycopg, asyncpg's twin
        assert sync.storage().target().location.endswith("/shop table orders_outbox")
    finally:
        await close_outbox(custom, drop=False)
        await close_outbox(default, drop=False)


async def test_administration_missing_table_expect_our_error_and_no_table_created(
    database_url: str, outboxes: OpenOutbox
) -> None:
    """Stats, list, requeue and purge never create the table; they say how to create it."""
    outbox = await outboxes()  # create_table is on: only saves/claims may
    storage = outbox.storage()
    operations = {
        "stats": storage.stats,
        "list_abandoned": storage.list_abandoned,
        "requeue_abandoned": storage.requeue_abandoned,
        "purge_published": lambda: storage.purge_published(datetime.now(UTC)),
        "mark_published": lambda: storage.mark_published(uuid4()),
        "renew_claims": lambda: storage.renew_claims([uuid4()]),
    }
    for name, operation in operations.items():
        with pytest.raises(OutboxTableNotFoundError) as raised:
            await operation()
        text = str(raised.value)
        assert outbox.config.table_name in text, name
        assert make_url(database_url).render_as_string(hide_password=True) in text, name
        assert "create_outbox_table" in text and "SPAKKY_OUTBOX_SQLALCHEMY__CREATE_TABLE" in text
    async with outbox.connections.connection.connect() as connection:
        tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
    assert outbox.config.table_name not in tables


async def test_sync_administration_missing_table_expect_our_error(outboxes: OpenOutbox) -> None:
    """The sync storage refuses the same way."""
    sync = (await outboxes()).sync()
    with pytest.raises(OutboxTableNotFoundError):
        await asyncio.to_thread(sync.storage().stats)


async def test_fetch_pending_create_table_off_expect_our_error(outboxes: OpenOutbox) -> None:
    """With ``create_table`` off a claim on a missing table refuses too; on, it creates it."""
    off = await outboxes(create_table=False)
    with pytest.raises(OutboxTableNotFoundError):
        await off.storage().fetch_pending(10, 5)
    on = await outboxes(table_name=off.config.table_name)
    assert await on.storage().fetch_pending(10, 5) == []
    assert (await off.storage().stats()).pending == 0


@pytest.mark.parametrize("operation", sorted(_ADMIN))
@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "mysql+aiomysql"])
async def test_admin_transaction_open_expect_business_save_not_blocked(
    request: pytest.FixtureRequest, tmp_path: object, driver: str, operation: str
) -> None:
    """While a requeue or purge has not committed yet, business saves go through.

    MariaDB/MySQL ran both at REPEATABLE READ as ranged statements: their
    next-key locks covered the index gap each new row's entry goes into, so
    every save waited for the operation to commit.
    """
    outbox = await open_outbox(driver_url(request, driver, tmp_path))  # type: ignore[arg-type]
    admin = create_engine(make_url(outbox.url).set(drivername=SYNC_DRIVER[driver]))
    try:
        await outbox.write([message(key) for key in ("a", None, "b", None)])
        name = outbox.config.table_name
        setup, run = _ADMIN[operation]
        await outbox.execute(f"UPDATE {name} SET {setup} WHERE partition_key = 'a'")
        sql = OutboxSql(outbox_table(name), admin.dialect, "admin", 3.0, 1.0)
        with admin.connect() as connection, connection.begin() as transaction:
            assert run(sql, connection) == 1
            saved = message("z")  # its index entries go last among the undelivered rows'

            try:
                await asyncio.wait_for(outbox.write([saved]), SAVE_DEADLINE_SECONDS)
            except TimeoutError:
                pytest.fail(f"a business save waited for the open {operation}")
            finally:
                transaction.rollback()
        assert saved.id in await outbox.rows()
    finally:
        admin.dispose()
        await close_outbox(outbox)


@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "postgresql+psycopg"])
async def test_password_in_url_query_expect_never_in_target_nor_missing_table_error(
    postgres_url: str, driver: str
) -> None:
    """A ``?password=`` (libpq, psycopg, asyncpg and pymysql take one) shows neither in the target nor in the error the relay logs."""
    secret = f"S3cret{uuid4().hex[:6]}"
    url = make_url(postgres_url).set(drivername=driver).update_query_dict({"password": secret})
    outbox = await open_outbox(url.render_as_string(hide_password=False))
    try:
        storage = outbox.storage()
        location = storage.target().location
        assert secret not in location and location.endswith(f"/test table {outbox.config.table_name}")
        with pytest.raises(OutboxTableNotFoundError) as raised:
            await storage.stats()
        assert secret not in str(raised.value) and secret not in repr(raised.value.args)
        assert "/test" in str(raised.value)
    finally:
        await close_outbox(outbox, drop=False)
