"""The published baseline: spakky-outbox 8.5.0 with spakky-sqlalchemy 8.5.0's storage.

Runs under ``.venv-bench/bin/python -m benchmarks.legacy_85`` (see
`benchmarks.run`, which creates that virtualenv). Uses 8.5.0's own
`AsyncSqlAlchemyOutboxStorage`, `AsyncOutboxEventBus` and
`AsyncOutboxRelayBackgroundService` on PostgreSQL, in the schema
``spakky_bench_85`` (its table keeps its fixed name ``spakky_event_outbox``),
dropped afterwards. Prints one JSON result line (see `benchmarks.common`).
"""

import asyncio
import os
import time
from collections.abc import Sequence
from functools import partial
from types import SimpleNamespace
from typing import Any

from spakky.core.application.application_context import ApplicationContext
from spakky.outbox.bus.outbox_event_bus import AsyncOutboxEventBus
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.relay.relay import AsyncOutboxRelayBackgroundService
from spakky.plugins.sqlalchemy.common.config import SQLAlchemyConnectionConfig
from spakky.plugins.sqlalchemy.outbox.storage import AsyncSqlAlchemyOutboxStorage
from spakky.plugins.sqlalchemy.outbox.table import OutboxMessageTable
from spakky.plugins.sqlalchemy.persistency.session_manager import AsyncSessionManager
from spakky.plugins.sqlalchemy.persistency.transaction import AsyncTransaction
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from benchmarks import sections
from benchmarks.common import (
    DEFAULT_PG_URL,
    EVENT,
    EXTRA_ROW,
    HOT_KEY,
    CountingTransport,
    OrderPlaced,
    claim_cost,
    drain,
    driver_url,
    emit,
    parse_args,
    preload,
    progress,
    reset_schema,
    schema_connect_args,
)

SCHEMA = "spakky_bench_85"
TABLE = OutboxMessageTable.__tablename__
POLLING_ENV = "SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS"

orders = Table(
    "bench_orders",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
)


def outbox_config(polling: float | None = None) -> OutboxConfig:
    """8.5.0's config from the environment, with the polling interval set through it."""
    if polling is None:
        return OutboxConfig()
    os.environ[POLLING_ENV] = str(polling)
    try:
        return OutboxConfig()
    finally:
        del os.environ[POLLING_ENV]



LABEL = "8.5.0"
"""How this process names itself in progress lines."""

class LegacyBench:
    """Engines, session manager and tables the way spakky-sqlalchemy 8.5.0 wires them."""

    def __init__(self, base_url: str, driver: str) -> None:
        """Build an engine on the benchmark schema and a context-scoped session manager."""
        self.url = driver_url(base_url, driver)
        self.engine = create_async_engine(
            self.url,
            pool_size=20,
            max_overflow=0,
            connect_args=schema_connect_args(driver, SCHEMA),
        )
        self.admin = create_async_engine(self.url, poolclass=NullPool)
        self.context = ApplicationContext()
        self.connections: Any = SimpleNamespace(connection=self.engine)
        self.sessions = AsyncSessionManager(self.connections)
        self.sessions.set_application_context(self.context)
        self.connection_config = SQLAlchemyConnectionConfig.model_construct(
            connection_string=self.url
        )

    async def setup(self) -> None:
        """Recreate the schema with 8.5.0's outbox table and a business table."""
        await reset_schema(self.admin, SCHEMA)
        async with self.engine.begin() as connection:
            await connection.run_sync(OutboxMessageTable.__table__.create)  # pyright: ignore[reportAttributeAccessIssue]
            await connection.run_sync(orders.create)

    async def teardown(self) -> None:
        """Drop the schema and dispose the engines."""
        await self.engine.dispose()
        await reset_schema(self.admin, SCHEMA, drop_only=True)
        await self.admin.dispose()

    async def truncate(self) -> None:
        """Empty both tables."""
        async with self.engine.begin() as connection:
            await connection.execute(orders.delete())
            await connection.execute(OutboxMessageTable.__table__.delete())  # pyright: ignore[reportAttributeAccessIssue]

    def storage(self, config: OutboxConfig) -> AsyncSqlAlchemyOutboxStorage:
        """8.5.0's async storage."""
        return AsyncSqlAlchemyOutboxStorage(self.sessions, self.connections, config)

    def transaction(self, bus: AsyncOutboxEventBus) -> Any:
        """One use-case transaction: a business row, and the event when asked."""

        async def run(order_id: str, mode: str) -> None:
            async with AsyncTransaction(self.connection_config, self.sessions) as tx:
                await tx.session.execute(
                    insert(orders).values(order_id=order_id, customer_id="c1")
                )
                if mode == EVENT:
                    await bus.send(OrderPlaced(order_id=order_id, customer_id="c1"))
                elif mode == EXTRA_ROW:
                    await tx.session.execute(
                        insert(orders).values(order_id=order_id, customer_id="c2")
                    )

        return run


async def bench_drain(bench: LegacyBench, sizes: dict[str, Any]) -> dict[str, Any]:
    """Relay drain at default polling and at 0.01 s polling."""
    result: dict[str, Any] = {}
    for label, polling, rows in (
        ("default", None, sizes["legacy_drain_rows_default"]),
        ("fast", 0.01, sizes["legacy_drain_rows_fast"]),
    ):
        config = outbox_config(polling)
        await preload(bench.engine, TABLE, rows)
        transport = CountingTransport(rows)
        relay = AsyncOutboxRelayBackgroundService(bench.storage(config), transport, config)
        progress(f"8.5.0 drain ({label}, polling {config.polling_interval_seconds} s): {rows} rows")
        entry = await drain(relay, transport, timeout=max(60.0, rows / 20))
        entry["polling_interval_seconds"] = config.polling_interval_seconds
        result[label] = entry
        progress(f"8.5.0 drain ({label}): {entry['rate']:.0f} msg/s")
    return result


async def bench_claim(bench: LegacyBench, sizes: dict[str, Any]) -> dict[str, Any]:
    """One claim of 100 over growing backlogs, keyless and keyed."""
    result: dict[str, Any] = {"keyless": {}, "keyed": {}}
    config = OutboxConfig()
    for rows in sizes["legacy_claim_sizes"]:
        for keyed in (False, True):
            label = "keyed" if keyed else "keyless"
            seconds = await preload(bench.engine, TABLE, rows, keyed=keyed, keys=sizes["claim_keys"])
            progress(f"8.5.0 claim {label} at {rows:,} pending (preload {seconds:.1f} s)")
            storage = bench.storage(config)
            held_by_other: str | None = None
            if keyed:
                other = bench.storage(config)
                started = time.perf_counter()
                held = await other.fetch_pending(1, config.max_retry_count)
                held_by_other = held[0].partition_key if held else None
                progress(f"  another instance claimed the oldest ({held_by_other}) in {time.perf_counter() - started:.2f} s")

            async def fetch(storage: AsyncSqlAlchemyOutboxStorage = storage) -> list[OutboxMessage]:
                return await storage.fetch_pending(100, config.max_retry_count)

            async def release(messages: Sequence[OutboxMessage]) -> None:
                # 8.5.0 cannot release a claim; clear it directly so every claim
                # sees the same backlog.
                if not messages:
                    return
                async with bench.engine.begin() as connection:
                    await connection.execute(
                        update(OutboxMessageTable)
                        .where(OutboxMessageTable.id.in_([m.id for m in messages]))
                        .values(claimed_at=None)
                    )

            entry = await claim_cost(
                fetch,
                release,
                reps=sizes["claim_reps"],
                budget_seconds=sizes["legacy_claim_budget_seconds"],
            )
            entry["pending"] = rows
            if keyed:
                entry["held_by_other"] = held_by_other
                entry["hot_key"] = HOT_KEY
            result[label][str(rows)] = entry
            progress(f"  median {entry['median_ms']:.1f} ms over {entry['reps']} claims, returned {entry['returned_min']}")
    return result


SECTIONS = {
    "drain": bench_drain,
    "write": partial(sections.bench_write, label=LABEL),
    "latency": partial(sections.bench_latency, label=LABEL),
    "idle": partial(sections.bench_idle, label=LABEL),
    "claim": bench_claim,
}


async def main() -> None:
    """Run the requested sections and print the JSON result."""
    sections, sizes = parse_args(__doc__ or "")
    bench = LegacyBench(sizes.get("pg_url", DEFAULT_PG_URL), sizes.get("legacy_driver", "postgresql+asyncpg"))
    result: dict[str, Any] = {"implementation": "spakky-outbox 8.5.0", "driver": bench.url.split("://")[0]}
    await bench.setup()
    try:
        for name, section in SECTIONS.items():
            if not sections or name in sections:
                result[name] = await section(bench, sizes)
    finally:
        await bench.teardown()
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
