"""MongoDB section of ``make bench``: drain rate and claim cost at 10k and 1M pending.

Runs in the workspace venv (``python -m benchmarks.mongodb``, normally started
by `benchmarks.run`) against the MongoDB replica set named by ``MONGODB_URL``.
With no such server it prints ``not run: <reason>`` and reports that instead
of figures: this machine has no MongoDB, and the in-process mongoeco wire
server that runs the tests is a Python stand-in whose timings say nothing
about MongoDB, so it is never measured here.
"""

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.config import MongoOutboxConfig, redact_url
from spakky.plugins.outbox_mongodb.documents import CODEC_OPTIONS, to_document
from spakky.plugins.outbox_mongodb.storage import AsyncMongoOutboxStorage

from benchmarks.common import (
    HOT_KEY,
    emit,
    parse_args,
)
from benchmarks.ours import _claims  # pyright: ignore[reportPrivateUsage] - the shared claim-cost loop
from benchmarks.sections import drain_preloaded

DATABASE = "spakky_bench"
COLLECTION = "bench_outbox"


async def not_run_reason(url: str | None) -> str | None:
    """Why the section cannot run here, or None when a MongoDB answers at ``url``."""
    if not url:
        return "MONGODB_URL unset (no MongoDB server here; the mongoeco wire server is not measured)"
    client = AsyncMongoClient[dict[str, Any]](url, serverSelectionTimeoutMS=3000)
    try:
        hello = await client.admin.command("hello")
    except PyMongoError as error:
        return f"MONGODB_URL={redact_url(url)} does not answer ({type(error).__name__})"
    finally:
        await client.close()
    if str(hello.get("gitVersion", "")).startswith("mongoeco"):
        return "MONGODB_URL points at the mongoeco wire server, whose figures are not MongoDB figures"
    return None


class MongoBench:
    """Our MongoDB storage on a benchmark collection."""

    def __init__(self, url: str) -> None:
        """Prepare the connection manager (indexes included) and a raw client."""
        self.config = MongoOutboxConfig().model_copy(
            update={"url": url, "database": DATABASE, "collection": COLLECTION}
        )
        self.connections = MongoOutboxConnectionManager(self.config, OutboxConfig())
        self.raw = AsyncMongoClient[dict[str, Any]](url).get_database(DATABASE, codec_options=CODEC_OPTIONS)[COLLECTION]

    def storage(self, config: OutboxConfig | None = None) -> AsyncMongoOutboxStorage:
        """A storage instance with its own owner token."""
        return AsyncMongoOutboxStorage(self.connections, config or OutboxConfig())

    async def preload(self, rows: int, *, keyed: bool = False, keys: int = 1000) -> float:
        """Insert ``rows`` pending messages as the storage stores them; return seconds.

        Keyed: the first half belongs to the hot key, the rest round-robins over ``keys``.
        """
        started = time.perf_counter()
        await self.raw.drop()
        self.connections.create_indexes()
        created = datetime.now(UTC) - timedelta(hours=1)
        hot = rows // 2 if keyed else 0
        batch: list[dict[str, Any]] = []
        for i in range(rows):
            key = None if not keyed else HOT_KEY if i < hot else f"k{(i - hot) % max(1, keys - 1):05d}"
            message = OutboxMessage(
                uuid.uuid4(), "OrderPlaced", f'{{"order_id":"{i}","customer_id":"c"}}'.encode(), {},
                created + timedelta(microseconds=i * 1000), partition_key=key,
            )
            batch.append(to_document(message))
            if len(batch) >= 10_000:
                await self.raw.insert_many(batch, ordered=False)
                batch = []
        if batch:
            await self.raw.insert_many(batch, ordered=False)
        return time.perf_counter() - started

    async def close(self) -> None:
        """Drop the benchmark collection and close the clients."""
        await self.raw.drop()
        await self.raw.database.client.close()
        await self.connections.aclose()


async def bench_mongodb_drain(bench: MongoBench, sizes: dict[str, Any]) -> dict[str, Any]:
    """Drain a preloaded MongoDB outbox at default settings."""
    rows = sizes["mongodb_drain_rows"]
    await bench.preload(rows)
    return await drain_preloaded(bench.storage, rows, "ours (MongoDB)")


async def bench_mongodb_claim(bench: MongoBench, sizes: dict[str, Any]) -> dict[str, Any]:
    """One claim of 100 over growing backlogs, keyless and keyed (MongoDB)."""

    async def load(rows: int, keyed: bool) -> float:
        return await bench.preload(rows, keyed=keyed, keys=sizes["claim_keys"])

    return await _claims("ours (MongoDB)", bench.storage, load, sizes, sizes["mongodb_claim_sizes"])


SECTIONS = {"mongodb_drain": bench_mongodb_drain, "mongodb_claim": bench_mongodb_claim}


async def main() -> None:
    """Run the requested sections, or report why they cannot run, as one JSON line."""
    sections, sizes = parse_args(__doc__ or "")
    wanted = [n for n in SECTIONS if not sections or n in sections]
    url = sizes.get("mongodb_url") or os.environ.get("MONGODB_URL")
    reason = await not_run_reason(url)
    result: dict[str, Any] = {"implementation": "spakky-outbox (this workspace)", "driver": "pymongo async"}
    if reason is not None or url is None:
        print(f"not run: {reason}", flush=True)
        emit(result | {name: {"not_run": reason} for name in wanted})
        return
    bench = MongoBench(url)
    try:
        for name in wanted:
            result[name] = await SECTIONS[name](bench, sizes)
    finally:
        await bench.close()
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
