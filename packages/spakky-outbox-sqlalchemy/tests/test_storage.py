"""Integration tests of the storages beyond the shared conformance suite."""

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from uuid import uuid4

import pytest
from spakky.core.application.application import SpakkyApplication
from spakky.outbox.backend.wakeup import WakeUpHub
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.error import (
    OutboxStorageUnavailableError,
    OutboxTransactionRequiredError,
)
from spakky.plugins.outbox_sqlalchemy import contribution, main
from spakky.plugins.outbox_sqlalchemy.config import SqlAlchemyOutboxConfig
from spakky.plugins.outbox_sqlalchemy.inbox import (
    AsyncSqlAlchemyInboxStorage,
    SqlAlchemyInboxStorage,
)
from spakky.plugins.outbox_sqlalchemy.schema import figures_table_name, outbox_table
from spakky.plugins.outbox_sqlalchemy.storage import (
    AsyncSqlAlchemyOutboxStorage,
    SqlAlchemyOutboxStorage,
)
from spakky.plugins.outbox_sqlalchemy.wakeup import (
    PgNotificationListener,
    PgNotificationThread,
    notify_channel,
)
from spakky.plugins.sqlalchemy.common.config import SQLAlchemyConnectionConfig
from spakky.plugins.sqlalchemy.persistency.connection_manager import ConnectionManager
from spakky.plugins.sqlalchemy.persistency.session_manager import SessionManager
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import make_url

from .conftest import AsyncOutbox, close_outbox, open_outbox


def _message(key: str | None = None) -> OutboxMessage:
    return OutboxMessage(
        id=uuid4(),
        event_name="OrderPlaced",
        payload=b"{}",
        headers={},
        created_at=datetime.now(UTC),
        partition_key=key,
    )


async def _wait_for(condition: Any, timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_save_outside_transaction_expect_transaction_required_error(
    sqlite_outbox: AsyncOutbox,
) -> None:
    """``save`` with no open transaction refuses with a clear error."""
    with pytest.raises(OutboxTransactionRequiredError) as raised:
        await sqlite_outbox.storage().save(_message())
    assert "@Transactional()" in str(raised.value)


async def test_first_use_create_table_expect_table_created(
    sqlite_outbox: AsyncOutbox,
) -> None:
    """With ``create_table`` the table appears on first use and then works."""
    storage = sqlite_outbox.storage()
    sent = _message("a")
    async with sqlite_outbox.transaction():
        await storage.save(sent)
    claimed = await storage.fetch_pending(10, 5)
    assert [m.id for m in claimed] == [sent.id]
    assert claimed[0].claimed_at is not None and claimed[0].created_at.tzinfo is UTC


async def test_save_fresh_and_redelivered_messages_expect_every_column_stored_as_given(
    any_outbox: AsyncOutbox,
) -> None:
    """A fresh message (straight to the driver on asyncpg) and a refused one store the same way on every driver."""
    naive_utc = datetime(2026, 1, 2, 3, 4, 5, 678901)
    fresh = OutboxMessage(
        uuid4(), "OrderPlaced", b"\x00\xff{}", {"traceparent": "00-1-2-01", "note": 'é "q" \\'},
        naive_utc, partition_key="customer-é",
    )
    refused = OutboxMessage(
        uuid4(), "OrderPaid", b"{}", {}, datetime(2026, 1, 2, 4, tzinfo=UTC),
        retry_count=2, last_error="EventDeliveryRejectedError: full",
    )
    await any_outbox.write([fresh, refused])
    table = outbox_table(any_outbox.config.table_name)
    async with any_outbox.connections.connection.connect() as connection:
        rows = {r.id: r for r in (await connection.execute(select(table))).mappings()}
    assert set(rows) == {fresh.id, refused.id}
    stored = rows[fresh.id]
    assert (stored.event_name, bytes(stored.payload), stored.headers, stored.partition_key) == (
        "OrderPlaced", b"\x00\xff{}", {"traceparent": "00-1-2-01", "note": 'é "q" \\'}, "customer-é",
    )
    assert stored.created_at == naive_utc.replace(tzinfo=UTC)
    assert (stored.retry_count, stored.published_at, stored.claimed_by, stored.abandoned_at) == (0, None, None, None)
    again = rows[refused.id]
    assert (again.retry_count, again.last_error, again.partition_key) == (2, "EventDeliveryRejectedError: full", None)
    assert rows[fresh.id].seq < again.seq


@pytest.mark.parametrize(
    "driver", ["postgresql+asyncpg", "postgresql+psycopg", "mysql+aiomysql"]
)
async def test_unreachable_database_expect_storage_unavailable_error(
    driver: str,
) -> None:
    """A refused connection surfaces as `OutboxStorageUnavailableError`."""
    outbox = await open_outbox(f"{driver}://user@127.0.0.1:1/test")
    try:
        with pytest.raises(OutboxStorageUnavailableError) as raised:
            await outbox.storage().fetch_pending(10, 5)
        assert str(raised.value).startswith("Outbox storage is unavailable: ")
    finally:
        await close_outbox(outbox, drop=False)


def test_unopenable_sqlite_sync_expect_storage_unavailable_error(
    tmp_path: Path,
) -> None:
    """The sync storage maps a database it cannot open to our error too."""
    config = SQLAlchemyConnectionConfig.model_construct(
        connection_string=f"sqlite:///{tmp_path}/missing/dir/outbox.db"
    )
    connections = ConnectionManager(config)
    sessions = SessionManager(connections)
    storage = SqlAlchemyOutboxStorage(
        sessions,
        connections,
        OutboxConfig(),
        SqlAlchemyOutboxConfig().model_copy(update={"table_name": "sync_missing"}),
    )
    try:
        with pytest.raises(OutboxStorageUnavailableError):
            storage.fetch_pending(10, 5)
    finally:
        connections.dispose()


@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "postgresql+psycopg"])
@pytest.mark.parametrize("case", ["lower", "Mixed"])
async def test_pg_notify_on_commit_expect_other_process_listener_woken(
    postgres_url: str, driver: str, case: str
) -> None:
    """A saving commit NOTIFYs; a listener with its own hub (another process) wakes.

    A mixed-case table gives a mixed-case channel: NOTIFY and LISTEN agree on it.
    """
    url = make_url(postgres_url).set(drivername=driver).render_as_string(False)
    outbox = await open_outbox(url, table_name=f"{case}_{uuid4().hex[:12]}")
    remote_hub = WakeUpHub()
    listener = PgNotificationListener(
        outbox.connections.connection,
        notify_channel(outbox.config.table_name),
        remote_hub,
    )
    try:
        listener.start()
        await asyncio.wait_for(listener.ready.wait(), 10.0)
        storage = outbox.storage()
        async with outbox.transaction():
            await storage.save(_message())
        assert await _wait_for(lambda: remote_hub.generation >= 1)
    finally:
        await listener.stop()
        await close_outbox(outbox)


@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "postgresql+psycopg"])
async def test_pg_listener_connection_killed_expect_reconnect_and_wake(
    postgres_url: str, driver: str
) -> None:
    """After its connection is terminated the listener reconnects and wakes again."""
    url = make_url(postgres_url).set(drivername=driver).render_as_string(False)
    outbox = await open_outbox(url)
    channel = notify_channel(outbox.config.table_name)
    hub = WakeUpHub()
    listener = PgNotificationListener(outbox.connections.connection, channel, hub)
    engine = outbox.connections.connection
    try:
        listener.start()
        await asyncio.wait_for(listener.ready.wait(), 10.0)
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query LIKE :q AND pid <> pg_backend_pid()"
                ),
                {"q": f"%{channel}%"},
            )
        assert await _wait_for(lambda: not listener.ready.is_set())
        await asyncio.wait_for(listener.ready.wait(), 10.0)
        before = hub.generation
        async with engine.begin() as connection:
            await connection.execute(text("SELECT pg_notify(:c, '')"), {"c": channel})
        assert await _wait_for(lambda: hub.generation > before)
    finally:
        await listener.stop()
        await outbox.connections.dispose()


def test_main_initialize_expect_config_pod_added() -> None:
    """The base plugin registers the configuration Pod only."""
    added: list[object] = []

    class _App:
        def add(self, pod: object) -> None:
            added.append(pod)

    main.initialize(cast(SpakkyApplication, _App()))
    assert added == [SqlAlchemyOutboxConfig]


def test_contribution_initialize_expect_storages_offered_as_sqlalchemy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The contribution offers both storages and both inboxes under the name ``sqlalchemy``."""
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def record(*args: object, **kwargs: object) -> bool:
        calls.append((args, kwargs))
        return True

    monkeypatch.setattr(contribution, "register_storage", record)
    app = cast(SpakkyApplication, object())
    contribution.initialize(app)
    assert calls == [
        (
            (app, "sqlalchemy", SqlAlchemyOutboxStorage, AsyncSqlAlchemyOutboxStorage),
            {"inboxes": (SqlAlchemyInboxStorage, AsyncSqlAlchemyInboxStorage)},
        )
    ]


async def test_sqlite_first_save_after_business_write_expect_no_lock_wait(
    sqlite_outbox: AsyncOutbox,
) -> None:
    """On SQLite the table is created inside the business transaction, not beside it."""
    storage = sqlite_outbox.storage()
    sent = _message()
    async with sqlite_outbox.transaction() as tx:
        await tx.session.execute(text("CREATE TABLE IF NOT EXISTS biz (k TEXT)"))
        await tx.session.execute(text("INSERT INTO biz VALUES ('x')"))
        await asyncio.wait_for(storage.save(sent), 3.0)
    assert [m.id for m in await storage.fetch_pending(10, 5)] == [sent.id]


def test_pg_notification_thread_expect_woken_and_stopped(postgres_url: str) -> None:
    """The sync LISTEN thread (psycopg 3) turns a NOTIFY into a signal and stops."""
    engine = create_engine(
        make_url(postgres_url)
        .set(drivername="postgresql+psycopg")
        .render_as_string(False)
    )
    assert PgNotificationThread.supported(engine)
    hub = WakeUpHub()
    channel = notify_channel(f"sync_{uuid4().hex[:12]}")
    listener = PgNotificationThread(engine, channel, hub)
    try:
        listener.start()
        assert listener.ready.wait(10.0)
        seen = hub.generation
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_notify(:c, '')"), {"c": channel})
        assert hub.wait(seen, 10.0)
    finally:
        listener.stop()
        engine.dispose()


@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "mysql+aiomysql", "sqlite"])
async def test_first_use_concurrent_instances_expect_table_created_once(
    request: pytest.FixtureRequest, tmp_path: Path, driver: str
) -> None:
    """Relays starting together all get past the table creation race.

    Claims name the table's indexes (MySQL/MariaDB), so the table must never
    be visible before them, and the losers' copies must be gone.
    """
    if driver == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/race.db"
    else:
        service = "postgres" if driver.startswith("postgresql") else "mariadb"
        base: str = request.getfixturevalue(f"{service}_url")
        url = make_url(base).set(drivername=driver).render_as_string(False)
    outbox = await open_outbox(url)
    try:
        storages = [outbox.storage() for _ in range(4)]
        results = await asyncio.gather(*(s.fetch_pending(10, 5) for s in storages))
        assert results == [[], [], [], []]
        async with outbox.connections.connection.connect() as connection:
            tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
        name = outbox.config.table_name
        assert sorted(t for t in tables if t.startswith(name)) == [name, figures_table_name(name)]
    finally:
        await close_outbox(outbox)
