"""Fixtures shared by the end-to-end tests."""

import uuid
from collections.abc import AsyncIterator, Iterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from spakky.plugins.outbox_sqlalchemy.schema import drop_outbox_table
from spakky_outbox_testservices.locks import shared_queue
from sqlalchemy import create_engine, make_url, text

from .common import SqlE2e, patched_environ
from .orders import E2eOrderPlaced
from .sql_shop.service import ORDERS_TABLE_ENV


@pytest.fixture(autouse=True)
def e2e_order_queue(request: pytest.FixtureRequest) -> Iterator[None]:
    """Hold the shared RabbitMQ's `E2eOrderPlaced` queue for a test that uses that broker.

    Every such test consumes (and purges) the queue named after the event: one at a
    time on the machine, or they split its events.
    """
    if "rabbitmq_url" not in request.fixturenames:
        yield
        return
    with shared_queue(E2eOrderPlaced.__name__):
        yield


@pytest.fixture
async def rabbit(rabbitmq_url: str) -> AsyncIterator[AbstractChannel]:
    """A channel on the test RabbitMQ, closed afterwards."""
    connection = await aio_pika.connect_robust(rabbitmq_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=2_000)
        yield channel
    finally:
        await connection.close()


@pytest.fixture
def sql_e2e(postgres_url: str) -> Iterator[SqlE2e]:
    """Point Spakky's SQLAlchemy outbox at PostgreSQL: fresh orders and outbox tables."""
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
