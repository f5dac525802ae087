"""Benchmark sections run identically by both processes (ours and spakky-outbox 8.5.0).

``spakky.outbox`` resolves to whichever implementation the running venv holds,
so one function measures either; ``bench`` is the process's own bench object
(`benchmarks.ours.OursBench` or `benchmarks.legacy_85.LegacyBench`), offering
``storage(config)``, ``transaction(bus)``, ``truncate()``, ``context`` and ``engine``.
"""

from collections.abc import Callable
from typing import Any

from spakky.outbox.bus.outbox_event_bus import AsyncOutboxEventBus
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.relay.relay import AsyncOutboxRelayBackgroundService
from spakky.tracing.w3c_propagator import W3CTracePropagator

from benchmarks.common import (
    EVENT,
    CountingTransport,
    commit_to_send,
    drain,
    idle_statements,
    progress,
    write_path,
)


async def bench_write(bench: Any, sizes: dict[str, Any], *, label: str) -> dict[str, Any]:
    """Commits/s with and without an event through the outbox bus and storage."""
    await bench.truncate()
    bus = AsyncOutboxEventBus(bench.storage(OutboxConfig()), W3CTracePropagator())
    progress(f"{label} write path")
    return await write_path(
        bench.transaction(bus),
        bench.context.clear_context,
        seconds=sizes["write_seconds"],
        rounds=sizes.get("write_rounds", 8),
        concurrency_levels=sizes["write_concurrency"],
        warmup=sizes.get("write_warmup", 0.5),
    )


async def bench_latency(bench: Any, sizes: dict[str, Any], *, label: str) -> dict[str, Any]:
    """Commit-to-send latency at a fixed event rate, default settings."""
    await bench.truncate()
    config = OutboxConfig()
    storage = bench.storage(config)
    transaction = bench.transaction(AsyncOutboxEventBus(storage, W3CTracePropagator()))
    transport = CountingTransport(record_times=True)
    relay = AsyncOutboxRelayBackgroundService(storage, transport, config)
    progress(f"{label} latency: {sizes['latency_rate']}/s for {sizes['latency_seconds']} s")

    async def write(order_id: str) -> None:
        await transaction(order_id, EVENT)

    result = await commit_to_send(
        write,
        relay,
        transport,
        bench.context.clear_context,
        rate=sizes["latency_rate"],
        seconds=sizes["latency_seconds"],
        warmup=sizes.get("latency_warmup", 0.0),
        drain_timeout=config.polling_interval_seconds * 3 + 2,
    )
    progress(f"{label} latency: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")
    return result


async def bench_idle(
    bench: Any, sizes: dict[str, Any], *, label: str, note: str | None = None
) -> dict[str, Any]:
    """Statements per second of an idle relay at default settings."""
    await bench.truncate()
    config = OutboxConfig()
    relay = AsyncOutboxRelayBackgroundService(bench.storage(config), CountingTransport(), config)
    progress(f"{label} idle relay for {sizes['idle_seconds']} s")
    result = await idle_statements(bench.engine.sync_engine, relay, seconds=sizes["idle_seconds"])
    if note is not None:
        result["note"] = note
    progress(f"{label} idle: {result['statements_per_s']:.2f} statements/s")
    return result


async def drain_preloaded(
    storage_for: Callable[[OutboxConfig], Any], rows: int, label: str
) -> dict[str, Any]:
    """Drain ``rows`` preloaded messages with one in-process relay at default settings."""
    config = OutboxConfig()
    transport = CountingTransport(rows)
    relay = AsyncOutboxRelayBackgroundService(storage_for(config), transport, config)
    progress(f"{label} drain: {rows} messages, defaults")
    result = await drain(relay, transport, timeout=max(60.0, rows / 100))
    progress(f"{label} drain: {result['rate']:.0f} msg/s")
    return result
