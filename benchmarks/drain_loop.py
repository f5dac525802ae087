"""Drain loop, Redis beside PostgreSQL (asyncpg) in one run: fetch 100, acknowledge, repeat.

Usage (workspace root)::

    uv run python -m benchmarks.drain_loop [--rows N] [--rounds R]

Reuses the bench harness (`benchmarks.ours`): the same preloads (PostgreSQL
``generate_series``, Redis's own SAVE script looped server-side), the same
storages, no relay and no transport, so the figure is the storage's own cost
of claiming and acknowledging. Rounds alternate Redis and PostgreSQL to cancel
drift on a shared machine; the median of each is printed. Nothing is asserted.
"""

import argparse
import asyncio
import statistics
import time
from typing import Any

from spakky.outbox.ports.storage import IAsyncOutboxBatchAcknowledgement

from benchmarks.common import DEFAULT_PG_URL, DEFAULT_REDIS_URL, preload
from benchmarks.ours import TABLE, OursBench, RedisBench

BATCH = 100
MAX_RETRY = 5


async def drain_loop(storage: Any, rows: int) -> float:
    """Claim and acknowledge until ``rows`` messages went through; return msg/s."""
    assert isinstance(storage, IAsyncOutboxBatchAcknowledgement)
    done = 0
    started = time.perf_counter()
    while done < rows:
        batch = await storage.fetch_pending(BATCH, MAX_RETRY)
        if not batch:
            raise RuntimeError(f"outbox empty after {done} of {rows}")
        await storage.mark_published_many([m.id for m in batch])
        done += len(batch)
    return rows / (time.perf_counter() - started)


async def main() -> None:
    """Run alternating rounds and print the medians side by side."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args()
    pg = OursBench(args.pg_url)
    rd = RedisBench(args.redis_url)
    await pg.setup()
    rates: dict[str, list[float]] = {"redis": [], "postgresql": []}
    try:
        for _ in range(args.rounds):
            await rd.preload(args.rows)
            rates["redis"].append(await drain_loop(rd.storage(), args.rows))
            await preload(pg.engine, TABLE, args.rows)
            rates["postgresql"].append(await drain_loop(pg.storage(), args.rows))
            print(
                f"round: redis {rates['redis'][-1]:,.0f} msg/s, "
                f"postgresql {rates['postgresql'][-1]:,.0f} msg/s",
                flush=True,
            )
    finally:
        await rd.close()
        await pg.teardown()
    r, p = (statistics.median(rates[n]) for n in ("redis", "postgresql"))
    print(
        f"median of {args.rounds}, {args.rows:,} messages, batch {BATCH}: "
        f"redis {r:,.0f} msg/s, postgresql {p:,.0f} msg/s, redis/postgresql {r / p:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
