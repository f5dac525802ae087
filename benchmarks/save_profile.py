"""Where the write path's time goes: one use-case transaction, step by step (PostgreSQL).

Not part of ``make bench``; run it when the write-path bar is missed::

    uv run python -m benchmarks.save_profile [--seconds 24] [--rounds 12] [--profile]

Every variant is one committed transaction inserting one business row, plus:

- ``plain``: nothing more;
- ``extra_row``: a second business row (the reference of ``make bench``);
- ``raw_insert``: the outbox INSERT alone, as the storage sends it (on asyncpg
  straight to the driver), for a prebuilt message on the session's connection
  (no storage code);
- ``driver_extra_row`` and ``driver_insert``: the second business row and the
  outbox INSERT sent straight through asyncpg on the session's own connection
  (same transaction, no SQLAlchemy): what the row costs the database and the
  driver, the floor under any storage code;
- ``save``: ``storage.save`` of a prebuilt message (table check, INSERT,
  NOTIFY or after-commit notify, after-commit signal);
- ``save_no_notify``: the same with ``notify`` off;
- ``event``: ``bus.send`` of an event (serialisation, trace and auth headers,
  message, then ``save``) — what ``make bench`` measures;
- ``event_no_notify``: the same with ``notify`` off.

Variants run in short blocks that rotate round by round (the machine is
shared); each figure is the median over rounds of the variant's mean
transaction time, and the cost of a step is the difference of two variants.
This process's CPU time per commit is printed too: other tenants of the
machine move it far less than wall time, so it names client-side costs best.
``--profile`` adds a cProfile of ``event`` (sequential), top functions by own time.
"""

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from spakky.outbox.bus.outbox_event_bus import AsyncOutboxEventBus
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.plugins.outbox_sqlalchemy.operations import OutboxSql
from spakky.plugins.outbox_sqlalchemy.schema import outbox_table
from spakky.plugins.outbox_sqlalchemy.storage import AsyncSqlAlchemyOutboxStorage
from spakky.plugins.sqlalchemy.persistency.transaction import AsyncTransaction
from spakky.tracing.w3c_propagator import W3CTracePropagator
from sqlalchemy import insert

from benchmarks.common import DEFAULT_PG_URL, OrderPlaced, spawn
from benchmarks.ours import TABLE, OursBench, orders

DRIVER_ORDER = f"INSERT INTO {orders.name} (order_id, customer_id) VALUES ($1, $2)"
"""The second business row, as asyncpg takes it."""
DRIVER_INSERT = (
    f"INSERT INTO {TABLE} (id, event_name, payload, headers, created_at, retry_count) "
    "VALUES ($1, $2, $3, $4, $5, 0)"
)
"""The outbox row of a fresh keyless message, as asyncpg takes it."""

type Step = Callable[[Any, str], Awaitable[None]]
"""``step(session, order_id)``: what a variant adds to the transaction."""


def message(order_id: str) -> OutboxMessage:
    """A message like the bus builds, built outside the measured step."""
    return OutboxMessage(
        id=uuid.uuid4(),
        event_name="OrderPlaced",
        payload=b'{"order_id":"' + order_id.encode() + b'","customer_id":"c1"}',
        headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
        created_at=datetime.now(UTC),
    )


def variants(bench: OursBench) -> dict[str, Step]:
    """The steps, keyed by variant name."""
    storage = bench.storage(OutboxConfig())
    quiet = AsyncSqlAlchemyOutboxStorage(
        bench.sessions,
        bench.connections,
        OutboxConfig(),
        bench.storage_config.model_copy(update={"notify": False}),
    )
    bus = AsyncOutboxEventBus(storage, W3CTracePropagator())
    quiet_bus = AsyncOutboxEventBus(quiet, W3CTracePropagator())
    # The storage's own statements, built the way it builds them (the prebuilt INSERT).
    sql = OutboxSql(
        table=outbox_table(TABLE),
        dialect=bench.engine.sync_engine.dialect,
        owner=uuid.uuid4().hex,
        claim_timeout_seconds=OutboxConfig().claim_timeout_seconds,
        claim_lease_seconds=OutboxConfig().claim_lease_seconds,
    )

    async def plain(session: Any, order_id: str) -> None:
        return None

    async def extra_row(session: Any, order_id: str) -> None:
        await session.execute(insert(orders).values(order_id=order_id, customer_id="c2"))

    async def raw_insert(session: Any, order_id: str) -> None:
        connection = await session.connection()
        sent = message(order_id)
        direct = sql.driver_insert(sent)
        if direct is not None:
            await connection.exec_driver_sql(*direct)
        else:
            await connection.execute(*sql.insert(sent))

    async def driver(session: Any) -> Any:
        connection = await session.connection()
        return (await connection.get_raw_connection()).driver_connection

    async def driver_extra_row(session: Any, order_id: str) -> None:
        await (await driver(session)).execute(DRIVER_ORDER, order_id, "c2")

    async def driver_insert(session: Any, order_id: str) -> None:
        sent = message(order_id)
        await (await driver(session)).execute(
            DRIVER_INSERT, sent.id, sent.event_name, sent.payload, json.dumps(sent.headers), sent.created_at
        )

    async def save(session: Any, order_id: str) -> None:
        await storage.save(message(order_id))

    async def save_no_notify(session: Any, order_id: str) -> None:
        await quiet.save(message(order_id))

    async def event(session: Any, order_id: str) -> None:
        await bus.send(OrderPlaced(order_id=order_id, customer_id="c1"))

    async def event_no_notify(session: Any, order_id: str) -> None:
        await quiet_bus.send(OrderPlaced(order_id=order_id, customer_id="c1"))

    return {
        "plain": plain,
        "extra_row": extra_row,
        "raw_insert": raw_insert,
        "driver_extra_row": driver_extra_row,
        "driver_insert": driver_insert,
        "save": save,
        "save_no_notify": save_no_notify,
        "event": event,
        "event_no_notify": event_no_notify,
    }


async def block(
    bench: OursBench, step: Step, concurrency: int, seconds: float, tag: str
) -> tuple[int, float, float]:
    """Transactions with ``step`` from ``concurrency`` callers for ``seconds``; (count, elapsed, CPU s)."""
    deadline = time.perf_counter() + seconds
    done = [0]

    async def caller(index: int) -> None:
        bench.context.clear_context()
        sequence = 0
        while time.perf_counter() < deadline:
            sequence += 1
            order_id = f"{tag}-{index}-{sequence}"
            async with AsyncTransaction(bench.connection_config, bench.sessions) as tx:
                await tx.session.execute(insert(orders).values(order_id=order_id, customer_id="c1"))
                await step(tx.session, order_id)
            done[0] += 1

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(spawn(caller(i)) for i in range(concurrency)))
    return done[0], time.perf_counter() - started, time.process_time() - cpu


async def measure(
    bench: OursBench, steps: dict[str, Step], concurrency: int, seconds: float, rounds: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Per variant, medians over rounds: transaction time and this process's CPU.

    Transaction time in µs per commit per caller; CPU in µs per commit (the
    database server's CPU is not in it).
    """
    names = list(steps)
    for name in names:
        await block(bench, steps[name], concurrency, 0.3, "warm")
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            count, took, used = await block(
                bench, steps[name], concurrency, seconds / rounds / len(names), f"r{round_index}"
            )
            wall[name].append(took * concurrency / max(1, count) * 1e6)
            cpu[name].append(used / max(1, count) * 1e6)
        await bench.truncate()
    return (
        {name: statistics.median(values) for name, values in wall.items()},
        {name: statistics.median(values) for name, values in cpu.items()},
    )


def describe(concurrency: int, times: dict[str, float], cpu: dict[str, float]) -> str:
    """The figures and the differences that name each step's cost."""
    base = times["plain"]
    lines = [
        f"{concurrency} caller(s): µs per transaction (median of rounds), over plain, "
        "and this process's CPU µs per commit"
    ]
    for name, value in times.items():
        lines.append(
            f"  {name:16s} {value:8.0f} µs  (+{value - base:6.0f} µs, commits/s ratio {base / value:.3f}); "
            f"CPU {cpu[name]:6.0f} µs (+{cpu[name] - cpu['plain']:5.0f})"
        )
    steps = (
        ("outbox INSERT statement alone (raw_insert - plain)", "raw_insert", "plain"),
        ("second business row (extra_row - plain)", "extra_row", "plain"),
        ("outbox row, database and driver only (driver_insert - plain)", "driver_insert", "plain"),
        ("second business row, database and driver only (driver_extra_row - plain)", "driver_extra_row", "plain"),
        ("storage code around the INSERT, notify off (save_no_notify - raw_insert)", "save_no_notify", "raw_insert"),
        ("NOTIFY / after-commit notify (save - save_no_notify)", "save", "save_no_notify"),
        ("bus: serialise, headers, message (event - save)", "event", "save"),
        ("bus, notify off (event_no_notify - save_no_notify)", "event_no_notify", "save_no_notify"),
    )
    lines.append("  steps:")
    for text, high, low in steps:
        lines.append(f"    {text}: {times[high] - times[low]:+.0f} µs; CPU {cpu[high] - cpu[low]:+.0f} µs")
    return "\n".join(lines)


async def profile_event(bench: OursBench, steps: dict[str, Step], seconds: float) -> str:
    """Profile sequential ``event`` transactions: the top functions by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    count, _, _ = await block(bench, steps["event"], 1, seconds, "prof")
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    return f"cProfile over {count} event transactions\n{out.getvalue()}"


async def main() -> None:
    """Measure every variant sequentially and with 16 callers; print the breakdown."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=24.0, help="per concurrency level, all variants")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args()
    bench = OursBench(args.pg_url)
    await bench.setup()
    try:
        steps = variants(bench)
        for level in (int(c) for c in args.concurrency.split(",")):
            times, cpu = await measure(bench, steps, level, args.seconds, args.rounds)
            print(describe(level, times, cpu), flush=True)
        if args.profile:
            print(await profile_event(bench, steps, 5.0))
    finally:
        await bench.teardown()


if __name__ == "__main__":
    asyncio.run(main())
