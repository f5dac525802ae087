"""The storage's own limit beside our relay: a bare claim + acknowledge loop, same table, same run.

Runs in the workspace venv (``python -m benchmarks.storage_limit``, normally
started by `benchmarks.run` as the ``limit`` sections). For PostgreSQL the bare
loop is asyncpg on one connection over our own table: claim 100 rows with one
``UPDATE ... WHERE seq IN (SELECT ... ORDER BY seq LIMIT 100 FOR UPDATE SKIP
LOCKED) RETURNING ...``, then one fenced ``UPDATE ... published_at = now()``.
For Redis it is the storage's own claim and acknowledge scripts called in a
loop. For MariaDB it is aiomysql (the driver of our async MariaDB dialect) on
one connection sending our storage's own lock, claim, read-back and
acknowledge statements (`bare_mariadb`). Our relay then drains the same rows at defaults through a no-op
transport. Both run keyless and with 100 keys; the ratio ours / bare is the
figure issue 21 asks for. Prints one JSON result line (see `benchmarks.common`).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import aiomysql  # pyright: ignore[reportMissingTypeStubs]
import asyncpg  # pyright: ignore[reportMissingTypeStubs]
from spakky.core.application.application_context import ApplicationContext
from spakky.outbox.backend.claims import key_run
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.relay.relay import AsyncOutboxRelayBackgroundService
from spakky.plugins.outbox_redis import scripts
from spakky.plugins.outbox_redis.codec import RedisKeys, unframe
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.storage_base import WIDTH, Settle
from spakky.plugins.outbox_sqlalchemy.config import SqlAlchemyOutboxConfig
from spakky.plugins.outbox_sqlalchemy.schema import create_outbox_table_async
from spakky.plugins.outbox_sqlalchemy.storage import (
    AsyncSqlAlchemyOutboxStorage,
    mark_table_created,
)
from spakky.plugins.sqlalchemy.persistency.session_manager import AsyncSessionManager
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from benchmarks.common import (
    DEFAULT_MARIADB_URL,
    DEFAULT_PG_URL,
    DEFAULT_REDIS_URL,
    CountingTransport,
    drain,
    emit,
    parse_args,
    preload_sql,
    progress,
    vacuum_analyze,
)
from benchmarks.ours import TABLE, OursBench, RedisBench

BATCH = 100
SCHEMA = "spakky_bench_limit"
"""A schema of its own: other sections may run at the same time on the machine."""
REDIS_PREFIX = "{spakky-bench-limit}"
"""A key prefix of its own, for the same reason."""
KEYS = 100
MAX_RETRY = 10
LIMIT_ROUNDS = 3
"""Rounds of bare and ours, alternating, per lane; each side reports its median."""
MARIADB_DATABASE = "spakky_bench_limit"
"""The MariaDB database of this section (created and dropped by it)."""
MARIADB_DRIVER = "mysql+aiomysql"
"""The driver of our SQLAlchemy MariaDB dialect for async storages; the bare loop uses it directly."""


def _bare_url(url: str) -> str:
    """The libpq form of a SQLAlchemy PostgreSQL URL."""
    return url.split("+", 1)[0] + "://" + url.split("://", 1)[1] if "+" in url.split("://")[0] else url


async def bare_postgres(url: str, rows: int, schema: str = SCHEMA) -> dict[str, Any]:
    """Drain ``rows`` pending rows of ``schema``'s table with the two statements a claim and an ack need."""
    connection: Any = await asyncpg.connect(_bare_url(url), server_settings={"search_path": schema})  # pyright: ignore[reportUnknownMemberType]
    owner = "bare-loop"
    claim = (
        f"UPDATE {TABLE} SET claimed_at = now(), claimed_by = $1, "
        "lease_until = now() + interval '30 seconds' WHERE seq IN ("
        f"SELECT seq FROM {TABLE} WHERE published_at IS NULL AND abandoned_at IS NULL "
        "AND retry_count < 10 AND (lease_until IS NULL OR lease_until <= now()) "
        "AND (not_before IS NULL OR not_before <= now()) "
        f"ORDER BY seq LIMIT {BATCH} FOR UPDATE SKIP LOCKED) "
        "RETURNING id, seq, event_name, payload, CAST(headers AS TEXT), partition_key, "
        "created_at, retry_count"
    )
    ack = (
        f"UPDATE {TABLE} SET published_at = now(), claimed_by = NULL, lease_until = NULL "
        "WHERE id = ANY($1::uuid[]) AND claimed_by = $2 "
        "AND published_at IS NULL AND abandoned_at IS NULL"
    )
    done = 0
    started = time.perf_counter()
    try:
        while done < rows:
            # Each statement is its own transaction: two round trips a batch.
            claimed = await connection.fetch(claim, owner)
            if not claimed:
                break
            ids: list[UUID] = [row["id"] for row in claimed]
            await connection.execute(ack, ids, owner)
            done += len(ids)
    finally:
        await connection.close()
    elapsed = time.perf_counter() - started
    return {"messages": done, "seconds": round(elapsed, 3), "rate": done / elapsed}


async def bare_mariadb(bench: "MariaBench", rows: int) -> dict[str, Any]:
    """Drain ``rows`` pending rows with our storage's own MariaDB claim and acknowledge statements, bare.

    aiomysql on one connection, READ COMMITTED as our claim sets it: lock the
    oldest 100 eligible rows (our lock statement, choosing them itself: no
    keyless probe, no key walk), claim them (our UPDATE), read them back (our
    SELECT: MariaDB has no UPDATE ... RETURNING), COMMIT; then our fenced
    acknowledgement and its COMMIT. It keeps no key order, so on keyed rows
    the ratio prices key order too, as on PostgreSQL.
    """
    url = bench.url
    connection: Any = await aiomysql.connect(  # pyright: ignore[reportUnknownMemberType]
        host=url.host, port=url.port or 3306, user=url.username, password=url.password or "",
        db=url.database, autocommit=False,
    )
    owner = "bare-loop"
    eligible = (
        "published_at IS NULL AND abandoned_at IS NULL AND retry_count < 10 "
        "AND (lease_until IS NULL OR lease_until <= UTC_TIMESTAMP(6)) "
        "AND (not_before IS NULL OR not_before <= UTC_TIMESTAMP(6))"
    )
    lock = f"SELECT seq FROM {TABLE} WHERE {eligible} ORDER BY seq LIMIT {BATCH} FOR UPDATE SKIP LOCKED"
    done = 0
    started = time.perf_counter()
    try:
        cursor: Any = await connection.cursor()
        await cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        while done < rows:
            await cursor.execute(lock)
            seqs = [row[0] for row in await cursor.fetchall()]
            if not seqs:
                break
            marks = ", ".join(["%s"] * len(seqs))
            await cursor.execute(
                f"UPDATE {TABLE} SET claimed_at = UTC_TIMESTAMP(6), claimed_by = %s, not_before = NULL, "
                f"lease_until = (UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND) WHERE seq IN ({marks})",
                [owner, 30_000_000, *seqs],
            )
            await cursor.execute(
                "SELECT seq, id, event_name, payload, CAST(headers AS CHAR) AS headers, created_at, "
                "published_at, retry_count, claimed_at, partition_key, abandoned_at, last_error "
                f"FROM {TABLE} WHERE seq IN ({marks})",
                seqs,
            )
            ids = [row[1] for row in await cursor.fetchall()]
            await connection.commit()
            await cursor.execute(
                f"UPDATE {TABLE} SET published_at = UTC_TIMESTAMP(6), claimed_by = NULL, lease_until = NULL "
                f"WHERE id IN ({', '.join(['%s'] * len(ids))}) AND claimed_by = %s "
                "AND published_at IS NULL AND abandoned_at IS NULL",
                [*ids, owner],
            )
            await connection.commit()
            done += len(ids)
    finally:
        connection.close()
    elapsed = time.perf_counter() - started
    return {"messages": done, "seconds": round(elapsed, 3), "rate": done / elapsed}


async def bare_redis(bench: RedisBench, rows: int) -> dict[str, Any]:
    """Drain ``rows`` pending messages by calling the storage's FETCH and SETTLE scripts in a loop.

    The arguments are the ones the storage passes at defaults (batch 100, its
    lease, sweep, key run and byte budget); of the reply only the ids are
    read, so the figure is the scripts' and the round trips' cost alone.
    """
    config, redis_config = OutboxConfig(), RedisOutboxConfig()
    client = bench.raw
    fetch = client.register_script(scripts.FETCH)
    settle = client.register_script(scripts.SETTLE)
    keys = [RedisKeys(bench.prefix).pending]
    owner = "bare-loop"
    hold_ms = round(min(config.claim_timeout_seconds, config.claim_lease_seconds) * 1000)
    fetch_args = [
        bench.prefix, BATCH, MAX_RETRY, hold_ms, owner,
        redis_config.expired_claim_sweep, key_run(BATCH), config.batch_max_bytes,
    ]
    done = 0
    started = time.perf_counter()
    while done < rows:
        ids = [i for i in unframe(await fetch(keys=keys, args=fetch_args))[1::WIDTH] if i is not None]
        if not ids:
            break
        await settle(keys=keys, args=[bench.prefix, owner, Settle.PUBLISH, 0, "", "0", b",".join(ids)])
        done += len(ids)
    elapsed = time.perf_counter() - started
    return {"messages": done, "seconds": round(elapsed, 3), "rate": done / elapsed}


async def ours_drain(storage: Any, rows: int) -> dict[str, Any]:
    """Drain ``rows`` preloaded rows of ``storage`` with one in-process relay at defaults."""
    config = OutboxConfig()
    transport = CountingTransport(rows)
    relay = AsyncOutboxRelayBackgroundService(storage, transport, config)
    return await drain(relay, transport, timeout=max(60.0, rows / 100))


async def side_by_side(
    name: str,
    rows: int,
    preload: Callable[[bool], Awaitable[None]],
    bare: Callable[[], Awaitable[dict[str, Any]]],
    ours: Callable[[], Awaitable[dict[str, Any]]],
    rounds: int = LIMIT_ROUNDS,
) -> dict[str, Any]:
    """The bare loop and our relay, keyless and keyed, each over a fresh preload of ``rows``.

    A drain of 20,000 rows lasts about a second, so one pair of runs moves with
    whatever else the machine does in that second (the bare Redis loop gave
    22,335-33,324 msg/s in one afternoon): the two alternate for ``rounds``
    rounds and each side reports its median round, with every round's rate kept.
    """
    result: dict[str, Any] = {}
    for lane, keyed in (("keyless", False), ("keyed", True)):
        runs: dict[str, list[dict[str, Any]]] = {"bare": [], "ours": []}
        for round_number in range(1, rounds + 1):
            for who, run in (("bare", bare), ("ours", ours)):
                await preload(keyed)
                progress(f"limit {name} {lane}: {who}, {rows} messages, round {round_number} of {rounds}")
                cpu = time.process_time()
                figures = await run()
                # Client CPU per message: what the machine's load moves least.
                figures["cpu_us_per_message"] = (time.process_time() - cpu) / rows * 1e6
                progress(f"limit {name} {lane}: {who} {figures['rate']:.0f} msg/s")
                runs[who].append(figures)
        for who, figures in runs.items():
            median = sorted(figures, key=lambda f: f["rate"])[len(figures) // 2]
            result[f"{lane}_{who}"] = {**median, "round_rates": [round(f["rate"]) for f in figures]}
        result[f"{lane}_ratio"] = result[f"{lane}_ours"]["rate"] / result[f"{lane}_bare"]["rate"]
    return result


async def limit_postgres(sizes: dict[str, Any]) -> dict[str, Any]:
    """Bare loop and our relay, keyless and keyed, on one PostgreSQL table."""
    rows = int(sizes.get("limit_rows", 20_000))
    bench = OursBench(DEFAULT_PG_URL, SCHEMA)
    await bench.setup()

    async def preload(keyed: bool) -> None:
        await preload_lane(bench, rows, keyed=keyed)

    try:
        return await side_by_side(
            "PostgreSQL",
            rows,
            preload,
            lambda: bare_postgres(bench.url, rows),
            lambda: ours_drain(bench.storage(OutboxConfig()), rows),
        )
    finally:
        await bench.teardown()


async def limit_redis(sizes: dict[str, Any]) -> dict[str, Any]:
    """Bare script loop and our relay, keyless and keyed, under one Redis key prefix."""
    rows = int(sizes.get("limit_rows", 20_000))
    bench = RedisBench(DEFAULT_REDIS_URL, REDIS_PREFIX)

    async def preload(keyed: bool) -> None:
        # No hot key: every message goes round-robin over KEYS keys, as on PostgreSQL.
        await bench.preload(rows, keyed=keyed, keys=KEYS + 1, hot=0)

    try:
        return await side_by_side(
            "Redis",
            rows,
            preload,
            lambda: bare_redis(bench, rows),
            lambda: ours_drain(bench.storage(OutboxConfig()), rows),
        )
    finally:
        await bench.close()


class MariaBench:
    """Our SQLAlchemy storage on MariaDB through aiomysql (the dialect's async driver), in a database of its own."""

    def __init__(self, base_url: str, database: str = MARIADB_DATABASE) -> None:
        """Engines on ``database`` (created by `setup`) and on the server, and the storage's session plumbing."""
        url = make_url(base_url).set(drivername=MARIADB_DRIVER)
        self.server = url
        self.url = url.set(database=database)
        self.database = database
        self.engine = create_async_engine(self.url, pool_size=20, max_overflow=0)
        self.admin = create_async_engine(url, poolclass=NullPool)
        self.connections: Any = SimpleNamespace(connection=self.engine)
        self.sessions = AsyncSessionManager(self.connections)
        self.sessions.set_application_context(ApplicationContext())
        self.storage_config = SqlAlchemyOutboxConfig().model_copy(update={"table_name": TABLE})

    async def setup(self) -> None:
        """Recreate the database with our outbox table."""
        async with self.admin.begin() as connection:
            await connection.execute(text(f"DROP DATABASE IF EXISTS {self.database}"))
            await connection.execute(text(f"CREATE DATABASE {self.database}"))
        await create_outbox_table_async(self.engine, TABLE)
        mark_table_created(self.engine.sync_engine, TABLE)

    async def preload(self, rows: int, *, keyed: bool) -> None:
        """``rows`` pending messages, keyless or round-robin over `KEYS` keys, as on PostgreSQL."""
        key = f"CONCAT('k', LPAD((seq - 1) % {KEYS}, 5, '0'))" if keyed else "NULL"
        async with self.engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {TABLE}"))
            await connection.execute(
                text(
                    f"INSERT INTO {TABLE} (id, event_name, payload, headers, partition_key, created_at, "
                    "retry_count) SELECT REPLACE(UUID(), '-', ''), 'OrderPlaced', "
                    """CONCAT('{"order_id":"', seq, '","customer_id":"c', seq % 1000, '"}'), '{}', """
                    f"{key}, UTC_TIMESTAMP(6) - INTERVAL 1 HOUR + INTERVAL seq MICROSECOND, 0 "
                    f"FROM seq_1_to_{rows}"
                )
            )
            await connection.execute(text(f"ANALYZE TABLE {TABLE}"))

    def storage(self, config: OutboxConfig) -> AsyncSqlAlchemyOutboxStorage:
        """A storage instance (its own owner token and claim cursor)."""
        return AsyncSqlAlchemyOutboxStorage(self.sessions, self.connections, config, self.storage_config)

    async def teardown(self) -> None:
        """Drop the database and dispose the engines."""
        await self.engine.dispose()
        async with self.admin.begin() as connection:
            await connection.execute(text(f"DROP DATABASE IF EXISTS {self.database}"))
        await self.admin.dispose()


async def limit_mariadb(sizes: dict[str, Any]) -> dict[str, Any]:
    """Bare loop and our relay, keyless and keyed, on one MariaDB table."""
    rows = int(sizes.get("limit_rows", 20_000))
    bench = MariaBench(DEFAULT_MARIADB_URL)
    await bench.setup()

    async def preload(keyed: bool) -> None:
        await bench.preload(rows, keyed=keyed)

    try:
        return await side_by_side(
            "MariaDB",
            rows,
            preload,
            lambda: bare_mariadb(bench, rows),
            lambda: ours_drain(bench.storage(OutboxConfig()), rows),
        )
    finally:
        await bench.teardown()


async def preload_lane(bench: OursBench, rows: int, *, keyed: bool) -> None:
    """``rows`` pending messages, keyless or spread evenly over `KEYS` keys."""
    async with bench.engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {TABLE}"))
        # No hot key: every row goes round-robin over KEYS keys.
        sql = preload_sql(TABLE, keyed=keyed, keys=KEYS + 1)
        await connection.execute(text(sql), {"n": rows, "hot": 0})
    await vacuum_analyze(bench.engine, TABLE)


async def main() -> None:
    """Run the sections asked for and print their JSON."""
    wanted, sizes = parse_args(__doc__ or "")
    result: dict[str, Any] = {}
    if not wanted or "limit_postgres" in wanted:
        result["limit_postgres"] = await limit_postgres(sizes)
    if not wanted or "limit_redis" in wanted:
        result["limit_redis"] = await limit_redis(sizes)
    if not wanted or "limit_mariadb" in wanted:
        result["limit_mariadb"] = await limit_mariadb(sizes)
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
