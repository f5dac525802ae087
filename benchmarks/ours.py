"""This workspace's outbox: the SQLAlchemy storage on PostgreSQL and the Redis storage.

Runs in the workspace venv (``python -m benchmarks.ours``, normally started by
`benchmarks.run`). PostgreSQL work happens in the schema ``spakky_bench_ours``
(dropped afterwards) through asyncpg; Redis work under the key prefix
``{spakky-bench}`` (deleted afterwards). Prints one JSON result line (see
`benchmarks.common`).
"""

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from types import SimpleNamespace
from typing import Any
from uuid import UUID

from redis.asyncio import Redis
from spakky.core.application.application_context import ApplicationContext
from spakky.outbox.bus.outbox_event_bus import AsyncOutboxEventBus
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.ports.storage import (
    IAsyncOutboxLiveness,
    IAsyncOutboxRetryScheduling,
    IAsyncOutboxStorage,
)
from spakky.plugins.outbox_redis import scripts
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.storage import AsyncRedisOutboxStorage
from spakky.plugins.outbox_sqlalchemy.config import SqlAlchemyOutboxConfig
from spakky.plugins.outbox_sqlalchemy.schema import create_outbox_table_async
from spakky.plugins.outbox_sqlalchemy.storage import (
    AsyncSqlAlchemyOutboxStorage,
    mark_table_created,
)
from spakky.plugins.sqlalchemy.common.config import SQLAlchemyConnectionConfig
from spakky.plugins.sqlalchemy.persistency.session_manager import AsyncSessionManager
from spakky.plugins.sqlalchemy.persistency.transaction import AsyncTransaction
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from benchmarks import sections
from benchmarks.common import (
    DEFAULT_PG_URL,
    DEFAULT_REDIS_URL,
    EVENT,
    EXTRA_ROW,
    HOT_KEY,
    OrderPlaced,
    claim_cost,
    driver_url,
    emit,
    parse_args,
    preload,
    progress,
    reset_schema,
    schema_connect_args,
)

SCHEMA = "spakky_bench_ours"
TABLE = "bench_outbox"
DRIVER = "postgresql+asyncpg"
REDIS_PREFIX = "{spakky-bench}"

orders = Table(
    "bench_orders",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
)



LABEL = "ours (PostgreSQL)"
"""How this process names itself in progress lines."""
IDLE_NOTE = (
    "counted on the relay's engine; the LISTEN connection adds one "
    "keep-alive SELECT 1 per 30 s"
)
"""What the idle figure leaves out."""

class OursBench:
    """Our SQLAlchemy storage wired the way the plugin wires it, outside an app."""

    def __init__(self, base_url: str, schema: str = SCHEMA) -> None:
        """Build an engine on ``schema`` and a context-scoped session manager."""
        self.schema = schema
        self.url = driver_url(base_url, DRIVER)
        self.engine = create_async_engine(
            self.url,
            pool_size=20,
            max_overflow=0,
            connect_args=schema_connect_args(DRIVER, schema),
        )
        self.admin = create_async_engine(self.url, poolclass=NullPool)
        self.context = ApplicationContext()
        self.connections: Any = SimpleNamespace(connection=self.engine)
        self.sessions = AsyncSessionManager(self.connections)
        self.sessions.set_application_context(self.context)
        self.connection_config = SQLAlchemyConnectionConfig.model_construct(
            connection_string=self.url
        )
        self.storage_config = SqlAlchemyOutboxConfig().model_copy(
            update={"table_name": TABLE}
        )
        self.storages: list[AsyncSqlAlchemyOutboxStorage] = []

    async def setup(self) -> None:
        """Recreate the schema with our outbox table and a business table."""
        await reset_schema(self.admin, self.schema)
        await create_outbox_table_async(self.engine, TABLE)
        mark_table_created(self.engine.sync_engine, TABLE)
        async with self.engine.begin() as connection:
            await connection.run_sync(orders.create)

    async def teardown(self) -> None:
        """Close LISTEN connections, drop the schema, dispose the engines."""
        for storage in self.storages:
            await storage.close_wake_up()
        await self.engine.dispose()
        await reset_schema(self.admin, self.schema, drop_only=True)
        await self.admin.dispose()

    async def truncate(self) -> None:
        """Empty both tables."""
        async with self.engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {TABLE}, bench_orders"))

    def storage(self, config: OutboxConfig | None = None) -> AsyncSqlAlchemyOutboxStorage:
        """A storage instance (its own owner token and claim cursor)."""
        storage = AsyncSqlAlchemyOutboxStorage(
            self.sessions, self.connections, config or OutboxConfig(), self.storage_config
        )
        self.storages.append(storage)
        return storage

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


async def bench_drain(bench: OursBench, sizes: dict[str, Any]) -> dict[str, Any]:
    """Drain a preloaded outbox at default settings."""
    rows = sizes["drain_rows"]
    await preload(bench.engine, TABLE, rows)
    return await sections.drain_preloaded(bench.storage, rows, LABEL)


class _Hold:
    """Another instance's claim on the hot key, kept alive while the keyed shape is measured.

    On a storage with liveness an unrenewed claim ends after the lease (10 s),
    and a measurement can run longer; without renewal the hot key would free
    up and the keyed figure would measure another shape.
    """

    def __init__(self) -> None:
        self.renewals = 0
        self.lost = False
        self._holder: IAsyncOutboxLiveness | None = None
        self._ids: list[UUID] = []

    def keep(self, holder: IAsyncOutboxLiveness, message_id: UUID) -> None:
        """Renew ``holder``'s claim on ``message_id`` before every measured claim."""
        self._holder, self._ids = holder, [message_id]

    async def renew(self) -> None:
        """Renew the hold (untimed); note when it was no longer held."""
        if self._holder is None:
            return
        if await self._holder.renew_claims(self._ids) != len(self._ids):
            self.lost = True
        self.renewals += 1


async def _claims(
    name: str,
    storage_factory: Any,
    load: Any,
    sizes: dict[str, Any],
    rows_list: Sequence[int],
) -> dict[str, Any]:
    """Claim cost over ``rows_list`` backlogs, keyless and keyed, for one storage."""
    result: dict[str, Any] = {"keyless": {}, "keyed": {}}
    config = OutboxConfig()
    for rows in rows_list:
        for keyed in (False, True):
            label = "keyed" if keyed else "keyless"
            seconds = await load(rows, keyed)
            progress(f"{name} claim {label} at {rows:,} pending (preload {seconds:.1f} s)")
            storage: IAsyncOutboxStorage = storage_factory(config)
            held_by_other: str | None = None
            hold = _Hold()
            if keyed:
                other: IAsyncOutboxStorage = storage_factory(config)
                held = await other.fetch_pending(1, config.max_retry_count)
                held_by_other = held[0].partition_key if held else None
                if held and isinstance(other, IAsyncOutboxLiveness):
                    hold.keep(other, held[0].id)

            async def fetch(storage: IAsyncOutboxStorage = storage) -> list[OutboxMessage]:
                return await storage.fetch_pending(100, config.max_retry_count)

            async def release(
                messages: Sequence[OutboxMessage], storage: IAsyncOutboxStorage = storage
            ) -> None:
                assert isinstance(storage, IAsyncOutboxRetryScheduling)
                await storage.release([m.id for m in messages])

            entry = await claim_cost(
                fetch,
                release,
                reps=sizes["claim_reps"],
                budget_seconds=sizes["claim_budget_seconds"],
                before=hold.renew,
            )
            entry["pending"] = rows
            if keyed:
                entry["held_by_other"] = held_by_other
                entry["hot_key"] = HOT_KEY
                entry["hold_renewals"] = hold.renewals
                entry["hold_lost"] = hold.lost
            result[label][str(rows)] = entry
            progress(
                f"  median {entry['median_ms']:.2f} ms over {entry['reps']} claims, "
                f"returned {entry['returned_min']}, of the held key {entry['hot_key_returned']}"
            )
    return result


async def bench_claim(bench: OursBench, sizes: dict[str, Any]) -> dict[str, Any]:
    """One claim of 100 over growing backlogs, keyless and keyed (PostgreSQL)."""

    async def load(rows: int, keyed: bool) -> float:
        return await preload(bench.engine, TABLE, rows, keyed=keyed, keys=sizes["claim_keys"])

    return await _claims("ours (PostgreSQL)", bench.storage, load, sizes, sizes["claim_sizes"])


# --------------------------------------------------------------------- Redis
BULK_SAVE = (
    "local function save_one(ARGV)\n"
    + scripts.SAVE
    + """
end
local p = ARGV[1]
local first = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local hot = tonumber(ARGV[4])
local others = tonumber(ARGV[5])
local keyed = ARGV[6] == '1'
local created = ARGV[7]
for i = first, first + count - 1 do
  local id = string.format('00000000-0000-4000-8000-%012x', i)
  local flag, key = '0', ''
  if keyed then
    flag = '1'
    if i <= hot then key = 'hot' else key = string.format('k%05d', (i - hot - 1) % others) end
  end
  save_one({p, id, 'OrderPlaced', '{"order_id":"' .. i .. '","customer_id":"c"}',
    '{}', created, '0', flag, key})
end
return count
"""
)
"""The storage's own SAVE script, looped server-side to preload quickly."""


class RedisBench:
    """Our Redis storage under a benchmark key prefix."""

    def __init__(self, url: str, prefix: str = REDIS_PREFIX) -> None:
        """Prepare the connection manager and a raw client for preloading, under ``prefix``."""
        self.prefix = prefix
        self.config = RedisOutboxConfig().model_copy(
            update={"url": url, "key_prefix": prefix}
        )
        self.connections = RedisOutboxConnectionManager(self.config)
        self.raw = Redis.from_url(url)

    def storage(self, config: OutboxConfig | None = None) -> AsyncRedisOutboxStorage:
        """A storage instance with its own owner token."""
        return AsyncRedisOutboxStorage(self.connections, self.config, config or OutboxConfig())

    async def clear(self) -> None:
        """Delete every key under the benchmark prefix."""
        batch: list[bytes] = []
        async for key in self.raw.scan_iter(match=f"{self.prefix}*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                await self.raw.unlink(*batch)
                batch = []
        if batch:
            await self.raw.unlink(*batch)

    async def preload(
        self, rows: int, *, keyed: bool = False, keys: int = 1000, hot: int | None = None
    ) -> float:
        """Save ``rows`` messages with the storage's SAVE script; return seconds.

        Keyed: ``hot`` rows (half by default) on one key first, the rest
        round-robin over ``keys - 1`` others.
        """
        started = time.perf_counter()
        await self.clear()
        script = self.raw.register_script(BULK_SAVE)
        created = datetime.now(UTC).isoformat()
        hot = (rows // 2 if hot is None else hot) if keyed else 0
        chunk = 20_000
        for first in range(1, rows + 1, chunk):
            count = min(chunk, rows - first + 1)
            await script(
                keys=[f"{self.prefix}:ready"],
                args=[self.prefix, first, count, hot, max(1, keys - 1), "1" if keyed else "0", created],
            )
        return time.perf_counter() - started

    async def close(self) -> None:
        """Delete the benchmark keys and close the clients."""
        await self.clear()
        await self.raw.aclose()
        await self.connections.aclose()


async def bench_redis_drain(redis_bench: RedisBench, sizes: dict[str, Any]) -> dict[str, Any]:
    """Drain a preloaded Redis outbox at default settings."""
    rows = sizes["redis_drain_rows"]
    await redis_bench.preload(rows)
    return await sections.drain_preloaded(redis_bench.storage, rows, "ours (Redis)")


async def bench_redis_claim(redis_bench: RedisBench, sizes: dict[str, Any]) -> dict[str, Any]:
    """One claim of 100 over growing backlogs, keyless and keyed (Redis)."""

    async def load(rows: int, keyed: bool) -> float:
        return await redis_bench.preload(rows, keyed=keyed, keys=sizes["claim_keys"])

    return await _claims("ours (Redis)", redis_bench.storage, load, sizes, sizes["redis_claim_sizes"])


PG_SECTIONS = {
    "drain": bench_drain,
    "write": partial(sections.bench_write, label=LABEL),
    "latency": partial(sections.bench_latency, label=LABEL),
    "idle": partial(sections.bench_idle, label=LABEL, note=IDLE_NOTE),
    "claim": bench_claim,
}
REDIS_SECTIONS = {
    "redis_drain": bench_redis_drain,
    "redis_claim": bench_redis_claim,
}


async def main() -> None:
    """Run the requested sections and print the JSON result."""
    sections, sizes = parse_args(__doc__ or "")
    result: dict[str, Any] = {"implementation": "spakky-outbox (this workspace)", "driver": DRIVER}
    wanted = [n for n in PG_SECTIONS if not sections or n in sections]
    if wanted:
        bench = OursBench(sizes.get("pg_url", DEFAULT_PG_URL))
        await bench.setup()
        try:
            for name in wanted:
                result[name] = await PG_SECTIONS[name](bench, sizes)
        finally:
            await bench.teardown()
    wanted = [n for n in REDIS_SECTIONS if not sections or n in sections]
    if wanted:
        redis_bench = RedisBench(sizes.get("redis_url", DEFAULT_REDIS_URL))
        try:
            for name in wanted:
                result[name] = await REDIS_SECTIONS[name](redis_bench, sizes)
        finally:
            await redis_bench.close()
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
