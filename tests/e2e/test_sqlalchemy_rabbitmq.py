"""SQLAlchemy outbox on PostgreSQL relayed to a real RabbitMQ via spakky-rabbitmq.

The service writes its orders through spakky-sqlalchemy's session inside a
``@Transactional()`` use case, so the order row and the outbox row commit (or
roll back) together. Each run uses its own orders and outbox tables (`sql_e2e`).
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from aio_pika.abc import AbstractChannel
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.outbox.ports.storage import IAsyncOutboxStorage
from spakky.plugins.outbox_sqlalchemy.storage import AsyncSqlAlchemyOutboxStorage

from . import sql_shop
from .common import (
    Load,
    SqlE2e,
    consume,
    patched_environ,
    place_rolled_back_then_committed,
    preload_sql_outbox,
    rabbitmq_env,
    relay_load_through_processes,
)
from .orders import E2eOrderPlaced
from .relay_worker import RELAY_PLUGINS
from .sql_shop.service import E2eSqlPlaceOrderUseCase

BACKEND = "sqlalchemy"


@pytest.fixture
def rabbitmq_sql_e2e(rabbitmq_url: str, sql_e2e: SqlE2e) -> Iterator[SqlE2e]:
    """`sql_e2e` with spakky-rabbitmq pointed at the test RabbitMQ."""
    with patched_environ(rabbitmq_env(rabbitmq_url)):
        yield sql_e2e


async def test_sqlalchemy_rabbitmq_committed_and_rolled_back_use_cases_expect_only_committed_event_delivered(
    rabbitmq_sql_e2e: SqlE2e, rabbit: AbstractChannel
) -> None:
    """A committed use case's event reaches RabbitMQ; a rolled-back one's never does."""
    e2e = rabbitmq_sql_e2e
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
        assert e2e.rows(f"SELECT * FROM {e2e.orders_table}") == [("committed", "c-1")]
        outbox = e2e.rows(f"SELECT event_name, partition_key FROM {e2e.outbox_table}")
        assert outbox == [(E2eOrderPlaced.__name__, "c-1")]
    finally:
        if app is not None:
            await asyncio.to_thread(app.stop)
        await queue.delete(if_unused=False, if_empty=False)


async def test_sqlalchemy_rabbitmq_three_relay_processes_expect_no_duplicate_and_per_key_order(
    rabbitmq_sql_e2e: SqlE2e, rabbit: AbstractChannel, tmp_path: Path
) -> None:
    """Three relay processes deliver a few hundred keyed events: no duplicate, keys in order."""
    e2e = rabbitmq_sql_e2e

    async def preload(event_name: str, load: Load) -> None:
        """Bulk-INSERT the load messages in order."""
        await preload_sql_outbox(e2e.async_url, e2e.outbox_table, event_name, load)

    await relay_load_through_processes(
        backend=BACKEND, channel=rabbit, tmp_path=tmp_path, preload=preload
    )
    assert e2e.rows(
        f"SELECT count(*) FROM {e2e.outbox_table} WHERE published_at IS NULL"
    ) == [(0,)]
