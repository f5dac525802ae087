"""What listing abandoned messages costs Redis: one script copying every payload beside the chunked listing.

``list_abandoned`` (behind ``spakky-outbox abandoned``) was one Lua script
reading every field of every listed message, payload included: 100,000
abandoned 1 KB messages held the shared Redis for 13.2 s (issue 17.4). It now
reads chunks of `LIST_CHUNK` messages, each one short script, and never reads
payloads or headers.

This seeds ``--messages`` abandoned messages of ``--payload-bytes`` under a
private key prefix, lists them all with the current storage, then with the
previous script (kept here, run as it was), and prints for each: the longest
SLOWLOG entry of the listing, the number of scripts, the wall time, and
``used_memory_peak`` before and after, with the previous/current ratios.

By default it starts its own ``redis-server`` (SLOWLOG logs every command of
1 ms or more; the previous script would block every other user of a shared
server for seconds);
``--url`` runs it on another server instead, under a prefix of its own that is
deleted afterwards. The current listing runs first: the previous one raises
the server's memory peak, which never comes down.

Usage (from the workspace root; about a minute at the defaults)::

    .venv/bin/python -m benchmarks.redis_listing
    .venv/bin/python -m benchmarks.redis_listing --messages 20000 --url redis://127.0.0.1:6390/0

Never point ``--url`` at a Redis others use: the previous script holds it for
seconds (every client with a 5 s socket timeout fails meanwhile with "Timeout
reading from ..."), and the benchmark resets its SLOWLOG and command statistics.

Nothing here asserts on timings: the script measures and prints.
"""

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any, cast

import redis
from spakky.outbox.common.config import OutboxConfig
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.codec import (
    MESSAGE_FIELDS,
    RedisKeys,
    to_message,
    unframe,
)
from spakky.plugins.outbox_redis.config import OUTBOX_SEGMENT, RedisOutboxConfig
from spakky.plugins.outbox_redis.storage import AsyncRedisOutboxStorage
from spakky.plugins.outbox_redis.storage_base import LIST_CHUNK
from spakky_outbox_testservices.redis_servers import private_redis

PREVIOUS_SCRIPT = f"""
local o = ARGV[1] .. ':{OUTBOX_SEGMENT}'
local FIELDS = {{{", ".join(f"'{name}'" for name in MESSAGE_FIELDS)}}}
local out, n_out = {{}}, 0
local function put(v)
  if v then
    out[n_out + 1] = #v
    out[n_out + 2] = ':'
    out[n_out + 3] = v
    n_out = n_out + 3
  else
    n_out = n_out + 1
    out[n_out] = '-'
  end
end
local t = redis.call('TIME')
put(tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)))
for _, id in ipairs(redis.call('ZRANGE', o .. ':dead', 0, tonumber(ARGV[2]) - 1)) do
  local f = redis.call('HMGET', o .. ':msg:' .. id, unpack(FIELDS))
  put(id)
  for i = 1, #FIELDS do put(f[i]) end
end
return table.concat(out)
"""
"""``LIST_ABANDONED`` before issue 17.4 (its shared preamble cut to what it used): the ARGV[2]
oldest abandoned messages, every field, in one script."""

_SEED_BATCH = 2_000


@dataclass(frozen=True)
class Run:
    """What one listing cost."""

    listed: int
    scripts: int
    max_script_ms: float
    mean_script_ms: float
    wall_seconds: float
    peak_before: int
    peak_after: int


def seed(client: redis.Redis, keys: RedisKeys, count: int, payload_bytes: int) -> None:
    """Write ``count`` abandoned messages as the storage keeps them (hash, and the dead set by seq)."""
    payload = json.dumps({"blob": "x" * max(0, payload_bytes - 12)}).encode()
    now = datetime.now(UTC)
    stamp = str(int(now.timestamp() * 1000))
    for start in range(0, count, _SEED_BATCH):
        pipe = client.pipeline(transaction=False)
        for seq in range(start + 1, min(count, start + _SEED_BATCH) + 1):
            message_id = str(uuid.uuid4())
            pipe.hset(
                keys.message(message_id),
                mapping={
                    "event_name": "OrderPlaced",
                    "payload": payload,
                    "headers": '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}',
                    "created_at": now.isoformat(),
                    "retry_count": 5,
                    "seq": seq,
                    "partition_key": f"k{seq % 100:03d}",
                    "last_error": "ConnectionError: broker unreachable",
                    "abandoned_at": stamp,
                },
            )
            pipe.zadd(f"{keys.outbox}:dead", {message_id: seq})
        pipe.execute()
    client.set(f"{keys.outbox}:seq", count)


def timed(client: redis.Redis, prefix: str, listing: Callable[[], int]) -> Run:
    """Run ``listing``; read its scripts (commandstats), the longest (SLOWLOG, naming ``prefix``), the memory peak."""
    client.slowlog_reset()
    client.config_resetstat()
    peak_before = int(client.info("memory")["used_memory_peak"])
    started = time.perf_counter()
    listed = listing()
    wall = time.perf_counter() - started
    peak_after = int(client.info("memory")["used_memory_peak"])
    stats = cast(dict[str, dict[str, float]], client.info("commandstats"))
    calls = sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("eval", "evalsha"))
    usec = sum(float(stats.get(f"cmdstat_{name}", {}).get("usec", 0)) for name in ("eval", "evalsha"))
    entries: list[dict[str, Any]] = client.slowlog_get(10_000)
    durations = [
        int(e["duration"])
        for e in entries
        if e["command"].startswith(b"EVAL") and prefix.encode() in e["command"]
    ]
    return Run(listed, calls, max(durations, default=0) / 1000, usec / max(calls, 1) / 1000, wall, peak_before, peak_after)


async def current_listing(url: str, prefix: str, limit: int) -> int:
    """List ``limit`` abandoned messages with the storage as it is; return how many came back."""
    config = RedisOutboxConfig().model_copy(update={"url": url, "key_prefix": prefix})
    connections = RedisOutboxConnectionManager(config)
    try:
        storage = AsyncRedisOutboxStorage(connections, config, OutboxConfig())
        return len(await storage.list_abandoned(limit))
    finally:
        await connections.aclose()


def previous_listing(client: redis.Redis, keys: RedisKeys, limit: int) -> int:
    """List ``limit`` abandoned messages with the previous single script; return how many decoded."""
    reply = client.register_script(PREVIOUS_SCRIPT)(keys=[keys.pending], args=[keys.prefix, limit])
    items = unframe(cast(bytes, reply))
    width = 1 + len(MESSAGE_FIELDS)
    return len([to_message(cast(bytes, items[i]), items[i + 1 : i + width]) for i in range(1, len(items), width)])


def megabytes(value: int) -> str:
    """Bytes as MB with one decimal."""
    return f"{value / 1_048_576:.1f} MB"


def ratio(previous: float, current: float) -> str:
    """``previous / current``, or ``-`` when the current figure is nil."""
    return f"{previous / current:,.0f}x" if current > 0 else "-"


def report(current: Run, previous: Run) -> None:
    """Print both runs side by side, with previous/current ratios."""
    rows: list[tuple[str, str, str, str]] = [
        ("messages listed", str(previous.listed), str(current.listed), ""),
        ("scripts run", str(previous.scripts), str(current.scripts), ""),
        (
            "longest script (SLOWLOG)",
            f"{previous.max_script_ms:,.1f} ms",
            f"{current.max_script_ms:,.1f} ms",
            ratio(previous.max_script_ms, current.max_script_ms),
        ),
        (
            "mean script (commandstats)",
            f"{previous.mean_script_ms:,.1f} ms",
            f"{current.mean_script_ms:,.1f} ms",
            "",
        ),
        ("wall time", f"{previous.wall_seconds:.2f} s", f"{current.wall_seconds:.2f} s", ""),
        ("used_memory_peak before", megabytes(previous.peak_before), megabytes(current.peak_before), ""),
        ("used_memory_peak after", megabytes(previous.peak_after), megabytes(current.peak_after), ""),
        (
            "peak growth",
            megabytes(previous.peak_after - previous.peak_before),
            megabytes(current.peak_after - current.peak_before),
            ratio(previous.peak_after - previous.peak_before, current.peak_after - current.peak_before),
        ),
    ]
    print(f"{'':28} {'previous (1 script)':>22} {'current (chunked)':>20} {'ratio':>8}")
    for name, before, now, times in rows:
        print(f"{name:28} {before:>22} {now:>20} {times:>8}")


def bench(url: str, messages: int, payload_bytes: int) -> None:
    """Seed, list with the current storage, list with the previous script, print, clean up."""
    prefix = f"{{bench-listing-{uuid.uuid4().hex[:8]}}}"
    keys = RedisKeys(prefix)
    client = redis.Redis.from_url(url, socket_timeout=120)
    try:
        started = time.perf_counter()
        seed(client, keys, messages, payload_bytes)
        print(
            f"seeded {messages:,} abandoned messages of {payload_bytes} B under {prefix} "
            f"in {time.perf_counter() - started:.1f} s; chunk of the current listing: {LIST_CHUNK}"
        )
        threshold = cast(dict[str, str], client.config_get("slowlog-log-slower-than"))
        print(f"SLOWLOG logs scripts of {threshold['slowlog-log-slower-than']} us or more")
        # a first call of each loads its script outside the measure
        asyncio.run(current_listing(url, prefix, 1))
        current = timed(client, prefix, lambda: asyncio.run(current_listing(url, prefix, messages)))
        previous_listing(client, keys, 1)
        previous = timed(client, prefix, lambda: previous_listing(client, keys, messages))
        report(current, previous)
    finally:
        keys_left = cast(Iterator[bytes], client.scan_iter(match=f"{prefix}*", count=10_000))
        while batch := list(islice(keys_left, 10_000)):
            client.delete(*batch)
        client.close()


def main() -> None:
    """Parse the arguments and run the benchmark on a private server or on ``--url``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--payload-bytes", type=int, default=1024)
    parser.add_argument("--url", help="an existing Redis (default: a private redis-server)")
    args = parser.parse_args()
    if args.url:
        bench(args.url, args.messages, args.payload_bytes)
        return
    # 1 ms: every chunk worth noting, and not the commands inside the scripts (SLOWLOG logs those too)
    with private_redis("--slowlog-log-slower-than", "1000", "--slowlog-max-len", "10000") as server:
        bench(server.url, args.messages, args.payload_bytes)


if __name__ == "__main__":
    main()
