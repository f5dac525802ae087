"""Where one relay cycle's time goes on PostgreSQL: claim, send, flush, acknowledge, the rest (issue 21).

Not part of ``make bench``; run it when the drain is far from the bare loop::

    uv run python -m benchmarks.cycle_profile [--rows 10000] [--rounds 2] [--profile]
    uv run python -m benchmarks.cycle_profile --relay-cpu
    uv run python -m benchmarks.cycle_profile --redis [--rows 20000] [--rounds 3] [--profile]

One relay at defaults (batch 100) runs its real cycle (`relay_batch`) over a
preloaded table through a no-op transport, keyless and with 100 keys; the
storage's and the transport's methods are timed where the relay calls them,
and every statement SQLAlchemy sends is counted and timed, with BEGIN and
COMMIT of the transactions that are not autocommit, so the claim's round trips
are counted, not guessed. Beside it, the bare asyncpg claim + acknowledge
loop of `benchmarks.storage_limit` on the same rows gives the floor.

Figures are ms per cycle (mean over every cycle of the lane and the rounds)
and the client's CPU per message (``time.process_time``, which the machine's
load moves less than wall time);
``relay (rest)`` is the cycle minus the timed steps: the relay's own Python
work per batch (states, telemetry, headers). Lanes alternate round by round
(the machine is shared). ``--profile`` adds a cProfile of the keyed lane's
cycles, top functions by own time. ``--relay-cpu`` measures only the relay's
own CPU per message: `relay_batch` over prebuilt batches (the in-memory
storage's capabilities, claims and acknowledgements that do nothing), the
least of five rounds of 500 batches, which the machine's load moves little.
``--redis`` puts the Redis relay beside the bare script loop of
`benchmarks.storage_limit` (`bare_redis`): both drain the same preload,
lanes and sides alternating, and each side reports the client's CPU per
message (least of the rounds), the server's time per message (Redis ``INFO
commandstats``: what the scripts and every other command cost there) and the
commands it sent per 100 messages; with ``--profile``, a cProfile of each
side's keyed drain. Nothing is asserted.
"""

import argparse
import asyncio
import cProfile
import io
import pstats
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, override
from uuid import UUID, uuid4

from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.relay.relay import AsyncOutboxRelayBackgroundService
from spakky.outbox.testing.async_memory import AsyncInMemoryOutboxStorage
from spakky.outbox.testing.memory_state import InMemoryOutboxState
from sqlalchemy import event

from benchmarks.common import DEFAULT_PG_URL, DEFAULT_REDIS_URL, CountingTransport
from benchmarks.ours import OursBench, RedisBench
from benchmarks.storage_limit import (
    KEYS,
    bare_postgres,
    bare_redis,
    ours_drain,
    preload_lane,
)

SCHEMA = "spakky_bench_cycle"
"""A schema of its own: other benchmarks may run at the same time on the machine."""

REDIS_PREFIX = "{spakky-bench-cycle}"
"""A key prefix of its own, for the same reason."""

STEPS = ("claim", "send", "flush", "acknowledge", "renew")
"""Storage and transport calls of one cycle, timed where the relay makes them."""


class StatementLog:
    """Per step of the cycle: statements and transaction round trips sent, and statement time."""

    def __init__(self) -> None:
        self.step = "other"
        """The step running now (set by `Timings.wrap`)."""
        self.statements: dict[str, int] = defaultdict(int)
        self.transactions: dict[str, int] = defaultdict(int)
        """BEGIN and COMMIT/ROLLBACK sent (transactions that are not autocommit)."""
        self.seconds: dict[str, float] = defaultdict(float)
        self._started: dict[int, float] = {}

    def attach(self, engine: Any) -> None:
        """Listen on ``engine`` (a sync engine) for statements and transaction boundaries."""

        def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
            self._started[id(cursor)] = time.perf_counter()

        def after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
            self.statements[self.step] += 1
            self.seconds[self.step] += time.perf_counter() - self._started.pop(id(cursor), time.perf_counter())

        def boundary(conn: Any, *_: Any) -> None:
            # An autocommit connection sends neither BEGIN nor COMMIT.
            if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                self.transactions[self.step] += 1

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
        for name in ("begin", "commit", "rollback"):
            event.listen(engine, name, boundary)

    def reset(self) -> None:
        """Forget what was counted (the warm-up's)."""
        self.statements.clear()
        self.transactions.clear()
        self.seconds.clear()


class Timings:
    """Seconds and calls per step, summed over cycles; tells the statement log the step."""

    def __init__(self, log: StatementLog) -> None:
        self.log = log
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap[**P, T](self, step: str, method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """``method`` timed into ``step``."""

        async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            outer, self.log.step = self.log.step, step
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                self.seconds[step] += time.perf_counter() - started
                self.calls[step] += 1
                self.log.step = outer

        return timed


async def relay_lane(bench: OursBench, log: StatementLog, rows: int, *, keyed: bool) -> dict[str, Any]:
    """Drain ``rows`` preloaded rows with `relay_batch` cycles; the per-cycle figures."""
    await preload_lane(bench, rows, keyed=keyed)
    config = OutboxConfig()
    storage = bench.storage(config)
    transport = CountingTransport(rows)
    timings = Timings(log)
    # Instance attributes shadow the methods the relay calls; its capability
    # checks (isinstance on the storage's class) still see the real storage.
    storage.fetch_pending = timings.wrap("claim", storage.fetch_pending)
    storage.mark_published_many = timings.wrap("acknowledge", storage.mark_published_many)
    storage.renew_claims = timings.wrap("renew", storage.renew_claims)
    transport.send = timings.wrap("send", transport.send)
    transport.flush = timings.wrap("flush", transport.flush)
    relay = AsyncOutboxRelayBackgroundService(storage, transport, config)
    await relay.initialize_async()
    log.reset()
    cycles = 0
    cpu = time.process_time()
    started = time.perf_counter()
    while transport.sent < rows:
        if not (await relay.relay_batch()).claimed:
            raise RuntimeError(f"outbox empty after {transport.sent} of {rows}")
        cycles += 1
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    await relay.dispose_async()
    per_cycle = {step: timings.seconds[step] / cycles * 1000 for step in STEPS}
    steps = {
        "claim": per_cycle["claim"],
        "  its statements": log.seconds["claim"] / cycles * 1000,
        **{step: per_cycle[step] for step in STEPS[1:]},
        "relay (rest)": elapsed / cycles * 1000 - sum(per_cycle.values()),
    }
    trips = {step: (log.statements[step] + log.transactions[step]) / cycles for step in STEPS}
    return {
        "cycles": cycles,
        "rate": transport.sent / elapsed,
        "cycle_ms": elapsed / cycles * 1000,
        "cpu_us_per_message": cpu / transport.sent * 1e6,
        "steps_ms": steps,
        "round_trips": trips,
        "claim_statements": log.statements["claim"] / cycles,
    }


class CannedStorage(AsyncInMemoryOutboxStorage):
    """The in-memory storage (liveness and all) whose claims return prebuilt batches, and acknowledgements nothing more."""

    batches: list[list[OutboxMessage]]

    @override
    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        return self.batches.pop()

    @override
    async def mark_published_many(self, message_ids: Sequence[UUID]) -> int:
        return len(message_ids)


async def relay_cpu(*, keyed: bool, batches: int = 500, rounds: int = 5) -> float:
    """The relay's own CPU per message: `relay_batch` over prebuilt batches of 100, no I/O; the least of ``rounds``."""
    config = OutboxConfig()
    storage = CannedStorage(InMemoryOutboxState(), config)
    now = datetime.now(UTC)
    storage.batches = [
        [
            OutboxMessage(uuid4(), "OrderPlaced", b"{}", {}, now, None, 0, now, f"k{i % 100}" if keyed else None)
            for i in range(100)
        ]
        for _ in range(batches * (rounds + 1))
    ]
    relay = AsyncOutboxRelayBackgroundService(storage, CountingTransport(), config)
    await relay.initialize_async()
    for _ in range(batches):  # warm-up
        await relay.relay_batch()
    least = float("inf")
    for _ in range(rounds):
        cpu = time.process_time()
        for _ in range(batches):
            await relay.relay_batch()
        least = min(least, (time.process_time() - cpu) / (batches * 100) * 1e6)
    return least


async def bare_lane(bench: OursBench, rows: int, *, keyed: bool) -> dict[str, Any]:
    """The bare asyncpg loop over the same preload: ms per claim + acknowledge."""
    await preload_lane(bench, rows, keyed=keyed)
    cpu = time.process_time()
    figures = await bare_postgres(bench.url, rows, SCHEMA)
    cpu = time.process_time() - cpu
    cycles = max(1, -(-int(figures["messages"]) // 100))
    return {
        "rate": figures["rate"],
        "cycle_ms": figures["seconds"] / cycles * 1000,
        "cpu_us_per_message": cpu / max(1, int(figures["messages"])) * 1e6,
    }


async def server_usec(bench: RedisBench) -> dict[str, tuple[int, float]]:
    """Calls and microseconds the Redis server spent per command so far (``INFO commandstats``)."""
    info: dict[str, Any] = await bench.raw.info("commandstats")  # pyright: ignore[reportUnknownMemberType]
    return {name.removeprefix("cmdstat_"): (int(s["calls"]), float(s["usec"])) for name, s in info.items()}


async def redis_side(
    bench: RedisBench, who: str, rows: int, *, keyed: bool, profiler: cProfile.Profile | None = None
) -> dict[str, Any]:
    """One drain of ``rows`` fresh messages by ``who`` (bare or ours): client CPU, server time and commands per message."""
    # No hot key: every message goes round-robin over KEYS keys, as in the limit section.
    await bench.preload(rows, keyed=keyed, keys=KEYS + 1, hot=0)
    before = await server_usec(bench)
    cpu = time.process_time()
    if profiler is not None:
        profiler.enable()
    figures = await (bare_redis(bench, rows) if who == "bare" else ours_drain(bench.storage(OutboxConfig()), rows))
    if profiler is not None:
        profiler.disable()
    cpu = time.process_time() - cpu
    after = await server_usec(bench)
    # The two INFO calls themselves are left out.
    commands = {
        name: (calls - before.get(name, (0, 0.0))[0], usec - before.get(name, (0, 0.0))[1])
        for name, (calls, usec) in after.items()
        if name != "info"
    }
    commands = {name: c for name, c in commands.items() if c[0] > 0}
    return {
        "rate": figures["rate"],
        "cpu_us": cpu / rows * 1e6,
        "server_us": sum(usec for _, usec in commands.values()) / rows,
        "commands": {name: calls * 100 / rows for name, (calls, _) in commands.items()},
        "command_us": {name: usec / rows for name, (_, usec) in commands.items()},
    }


async def redis_main(rows: int, rounds: int, *, profile: bool) -> None:
    """The Redis relay beside the bare script loop, lanes and sides alternating; least CPU of the rounds."""
    bench = RedisBench(DEFAULT_REDIS_URL, REDIS_PREFIX)
    lanes = {"keyless": False, "100 keys": True}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    try:
        for keyed in lanes.values():  # warm-up: scripts loaded, connections open
            for who in ("bare", "ours"):
                await redis_side(bench, who, 2_000, keyed=keyed)
        for _ in range(max(1, rounds)):
            for lane, keyed in lanes.items():
                for who in ("bare", "ours"):
                    runs[lane, who].append(await redis_side(bench, who, rows, keyed=keyed))
        for lane in lanes:
            bare, ours = runs[lane, "bare"], runs[lane, "ours"]
            for who, sides in (("bare", bare), ("ours", ours)):
                least = min(sides, key=lambda r: r["cpu_us"])
                rates = sorted(r["rate"] for r in sides)
                print(
                    f"{lane} {who}: client CPU {least['cpu_us']:.2f} us/msg (least of {len(sides)}), "
                    f"server {min(r['server_us'] for r in sides):.2f} us/msg, "
                    f"median {rates[len(rates) // 2]:,.0f} msg/s",
                    flush=True,
                )
                print(
                    "    per 100 messages: "
                    + ", ".join(
                        f"{name} {calls:.2f} ({least['command_us'][name] * 100:.0f} us)"
                        for name, calls in sorted(least["commands"].items())
                    ),
                    flush=True,
                )
        if profile:
            for who in ("bare", "ours"):
                profiler = cProfile.Profile()
                await redis_side(bench, who, rows, keyed=True, profiler=profiler)
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
                print(f"cProfile of {who}, 100-key lane\n{out.getvalue()}", flush=True)
    finally:
        await bench.close()


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one lane, weighted by their cycles."""
    cycles = sum(r["cycles"] for r in runs)

    def mean(pick: Callable[[dict[str, Any]], float]) -> float:
        return sum(pick(r) * r["cycles"] for r in runs) / cycles

    return {
        "cycles": cycles,
        "rate": mean(lambda r: r["rate"]),
        "cycle_ms": mean(lambda r: r["cycle_ms"]),
        "cpu_us_per_message": mean(lambda r: r["cpu_us_per_message"]),
        "steps_ms": {step: mean(lambda r, s=step: r["steps_ms"][s]) for step in runs[0]["steps_ms"]},
        "round_trips": {step: mean(lambda r, s=step: r["round_trips"][s]) for step in STEPS},
        "claim_statements": mean(lambda r: r["claim_statements"]),
    }


def describe(lane: str, ours: dict[str, Any], bare: list[dict[str, Any]]) -> str:
    """One lane's breakdown beside the bare loop."""
    bare_ms = sum(b["cycle_ms"] for b in bare) / len(bare)
    bare_rate = sum(b["rate"] for b in bare) / len(bare)
    bare_cpu = sum(b["cpu_us_per_message"] for b in bare) / len(bare)
    lines = [
        f"{lane}: {ours['cycles']} cycles, {ours['rate']:,.0f} msg/s "
        f"(bare loop {bare_rate:,.0f} msg/s, ratio {ours['rate'] / bare_rate:.2f}); "
        f"ms per cycle {ours['cycle_ms']:.2f} (bare {bare_ms:.2f}); "
        f"client CPU per message {ours['cpu_us_per_message']:.1f} us (bare {bare_cpu:.1f})",
        f"  claim: {ours['round_trips']['claim']:.2f} round trips "
        f"({ours['claim_statements']:.2f} statements + BEGIN/COMMIT); "
        f"acknowledge {ours['round_trips']['acknowledge']:.2f}, renew {ours['round_trips']['renew']:.2f}",
    ]
    for step, value in ours["steps_ms"].items():
        lines.append(f"  {step:18s} {value:7.3f} ms")
    return "\n".join(lines)


async def main() -> None:
    """Alternate the lanes for a few rounds; print each lane's breakdown."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--relay-cpu", action="store_true", help="only the relay's own CPU per message (no database)"
    )
    parser.add_argument(
        "--redis", action="store_true", help="the Redis relay beside the bare script loop (server time too)"
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args()
    if args.redis:
        await redis_main(args.rows, args.rounds, profile=args.profile)
        return
    if args.relay_cpu:
        for lane, keyed in (("keyless", False), ("100 keys", True)):
            print(f"relay's own CPU per message, {lane}: {await relay_cpu(keyed=keyed):.2f} us", flush=True)
        return
    bench = OursBench(args.pg_url, SCHEMA)
    await bench.setup()
    log = StatementLog()
    log.attach(bench.engine.sync_engine)
    lanes = {"keyless": False, "100 keys": True}
    ours: dict[str, list[dict[str, Any]]] = {lane: [] for lane in lanes}
    bare: dict[str, list[dict[str, Any]]] = {lane: [] for lane in lanes}
    try:
        for keyed in lanes.values():  # warm-up: prepared statements on the pool's connections
            await relay_lane(bench, log, 1_000, keyed=keyed)
        for _ in range(args.rounds):
            for lane, keyed in lanes.items():
                ours[lane].append(await relay_lane(bench, log, args.rows, keyed=keyed))
                bare[lane].append(await bare_lane(bench, args.rows, keyed=keyed))
        for lane in lanes:
            print(describe(lane, merge(ours[lane]), bare[lane]), flush=True)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await relay_lane(bench, log, args.rows, keyed=True)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            print(f"cProfile of the 100-key lane\n{out.getvalue()}")
    finally:
        await bench.teardown()


if __name__ == "__main__":
    asyncio.run(main())
