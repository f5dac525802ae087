"""SQLAlchemy outbox on PostgreSQL relayed to a real RabbitMQ via spakky-rabbitmq.

The service writes its orders through spakky-sqlalchemy's session inside a
``@Transactional()`` use case, so the order row and the outbox row commit (or
roll back) together. Each run uses its own orders and outbox tables.
"""

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aio_pika.abc import AbstractChannel
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.outbox.ports.storage import IAsyncOutboxStorage
from spakky.plugins.outbox_sqlalchemy.schema import (
    drop_outbox_table,
)
from spakky.plugins.outbox_sqlalchemy.storage import AsyncSqlAlchemyOutboxStorage
from sqlalchemy import Engine, create_engine, make_url, text

from . import sql_shop
from .common import (
    consume,
    patched_environ,
    place_rolled_back_then_committed,
    preload_sql_outbox,
    rabbitmq_env,
    relay_load_through_processes,
)
from .orders import E2eOrderPlaced
from .relay_worker import RELAY_PLUGINS
from .sql_shop.service import ORDERS_TABLE_ENV, E2eSqlPlaceOrderUseCase

BACKEND = "sqlalchemy"
LOAD_DEADLINE_SECONDS = 240.0


@dataclass(frozen=True)
class SqlE2e:
    """Where one test run keeps its data."""

    async_url: str
    """``postgresql+asyncpg://`` URL given to the app and the relays."""
    engine: Engine
    """Synchronous (psycopg) engine for set-up, checks and clean-up."""
    outbox_table: str
    orders_table: str


@pytest.fixture
def sql_e2e(postgres_url: str, rabbitmq_url: str) -> Iterator[SqlE2e]:
    """Point Spakky at PostgreSQL (fresh orders/outbox tables) and RabbitMQ."""
    url = make_url(postgres_url)
    async_url = url.set(drivername="postgresql+asyncpg").render_as_string(
        hide_password=False
    )
    engine = create_engine(url.set(drivername="postgresql+psycopg"))
    run = uuid.uuid4().hex[:16]
    e2e = SqlE2e(async_url, engine, f"e2e_outbox_{run}", f"e2e_orders_{run}")
    env = {
        "SPAKKY_SQLALCHEMY__CONNECTION_STRING": async_url,
        "SPAKKY_OUTBOX__STORAGE": "sqlalchemy",
        "SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS": "0.05",
        "SPAKKY_OUTBOX_SQLALCHEMY__TABLE_NAME": e2e.outbox_table,
        ORDERS_TABLE_ENV: e2e.orders_table,
        **rabbitmq_env(rabbitmq_url),
    }
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    f"CREATE TABLE {e2e.orders_table} "
                    "(order_id text PRIMARY KEY, customer_id text NOT NULL)"
                )
            )
        with patched_environ(env):
            yield e2e
    finally:
        try:
            with engine.begin() as connection:
                connection.execute(text("SET LOCAL lock_timeout = '15s'"))
                connection.execute(text(f"DROP TABLE IF EXISTS {e2e.orders_table}"))
                drop_outbox_table(connection, e2e.outbox_table)
        finally:
            engine.dispose()


def _rows(engine: Engine, query: str) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(query))]


async def test_sqlalchemy_rabbitmq_committed_and_rolled_back_use_cases_expect_only_committed_event_delivered(
    sql_e2e: SqlE2e, rabbit: AbstractChannel
) -> None:
    """A committed use case's event reaches RabbitMQ; a rolled-back one's never does."""
    queue, collector = await consume(rabbit, E2eOrderPlaced.__name__)
    app: SpakkyApplication | None = None
    try:
        app = (
            SpakkyApplication(ApplicationContext())
            .load_plugins(include=set(RELAY_PLUGINS[BACKEND]))
            .scan(sql_shop)
            .start()
        )
        context = app.application_context
        assert isinstance(
            context.get(IAsyncOutboxStorage), AsyncSqlAlchemyOutboxStorage
        )
        await place_rolled_back_then_committed(
            app, context.get(E2eSqlPlaceOrderUseCase), collector
        )
        assert _rows(sql_e2e.engine, f"SELECT * FROM {sql_e2e.orders_table}") == [
            ("committed", "c-1")
        ]
        outbox = _rows(
            sql_e2e.engine,
            f"SELECT event_name, partition_key FROM {sql_e2e.outbox_table}",
        )
        assert outbox == [(E2eOrderPlaced.__name__, "c-1")]
    finally:
        if app is not None:
            await asyncio.to_thread(app.stop)
        await queue.delete(if_unused=False, if_empty=False)


async def test_sqlalchemy_rabbitmq_three_relay_processes_expect_no_duplicate_and_per_key_order(
    sql_e2e: SqlE2e, rabbit: AbstractChannel, tmp_path: Path
) -> None:
    """Three relay processes deliver 20,000 events over 100 keys: no duplicate, keys in order."""

    async def preload(event_name: str) -> float:
        """Bulk-INSERT the load messages in order."""
        return await preload_sql_outbox(
            sql_e2e.async_url, sql_e2e.outbox_table, event_name
        )

    await relay_load_through_processes(
        backend=BACKEND,
        channel=rabbit,
        tmp_path=tmp_path,
        preload=preload,
        deadline_seconds=LOAD_DEADLINE_SECONDS,
    )
    assert _rows(
        sql_e2e.engine,
        f"SELECT count(*) FROM {sql_e2e.outbox_table} WHERE published_at IS NULL",
    ) == [(0,)]
