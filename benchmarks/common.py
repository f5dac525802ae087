"""Measurement code shared by both benchmark processes (ours and spakky-outbox 8.5.0).

This module is imported by `benchmarks.ours` (workspace venv) and by
`benchmarks.legacy_85` (``.venv-bench``), so it only uses the standard library,
SQLAlchemy and the spakky 8.5.0 packages both environments hold (spakky core,
spakky-domain, spakky-event). Each process prints its figures as one JSON line
prefixed by `RESULT_PREFIX` on stdout; progress goes to stderr.

Nothing here asserts on timings: the scripts measure and report.
"""

import argparse
import asyncio
import contextvars
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, override

from spakky.core.common.mutability import immutable
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.event.event_publisher import IAsyncEventTransport
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

RESULT_PREFIX = "BENCH-RESULT "
"""Marks the stdout line carrying a process's JSON result."""

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_MARIADB_URL = "mysql://root@127.0.0.1:3306/test"
HOT_KEY = "hot"
"""Partition key of the long key whose oldest message another instance holds."""


def progress(message: str) -> None:
    """Print a timestamped progress line on stderr."""
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(description: str) -> tuple[set[str], dict[str, Any]]:
    """Read ``--only`` (comma-separated sections) and ``--config`` (JSON sizes)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--only", default="", help="comma-separated sections")
    parser.add_argument("--config", default="{}", help="JSON object of sizes")
    args = parser.parse_args()
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    return sections, json.loads(args.config)


def emit(result: dict[str, Any]) -> None:
    """Print the process's result for `benchmarks.run` to collect."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def driver_url(base: str, driver: str) -> str:
    """Return ``base`` with its driver replaced, e.g. ``postgresql+asyncpg``."""
    return make_url(base).set(drivername=driver).render_as_string(hide_password=False)


def schema_connect_args(driver: str, schema: str) -> dict[str, Any]:
    """Connect arguments that put ``schema`` first on the search path."""
    if "asyncpg" in driver:
        return {"server_settings": {"search_path": schema}}
    return {"options": f"-csearch_path={schema}"}


async def reset_schema(admin: AsyncEngine, schema: str, *, drop_only: bool = False) -> None:
    """Drop ``schema`` with everything in it and (unless ``drop_only``) recreate it."""
    async with admin.begin() as connection:
        await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        if not drop_only:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))


async def vacuum_analyze(engine: AsyncEngine, table: str) -> None:
    """VACUUM ANALYZE ``table`` (fresh statistics and visibility map after a preload)."""
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    async with autocommit.connect() as connection:
        await connection.execute(text(f"VACUUM ANALYZE {table}"))


def preload_sql(table: str, *, keyed: bool, keys: int) -> str:
    """``INSERT ... SELECT generate_series`` of ``:n`` pending messages.

    Keyless: no partition key. Keyed: ``:hot`` rows of the key `HOT_KEY` come
    first (oldest), the rest spread round-robin over ``keys - 1`` other keys.
    Both outbox tables accept these columns; ours adds its sequence itself.
    """
    if keyed:
        others = max(1, keys - 1)
        key = (
            f"CASE WHEN gs <= :hot THEN '{HOT_KEY}' ELSE "
            f"'k' || lpad(((gs - :hot - 1) % {others})::text, 5, '0') END"
        )
    else:
        key = "NULL"
    return (
        f"INSERT INTO {table} (id, event_name, payload, headers, partition_key, "
        "created_at, retry_count) "
        "SELECT gen_random_uuid(), 'OrderPlaced', "
        """convert_to('{"order_id":"' || gs || '","customer_id":"c' || (gs % 1000) || '"}', 'UTF8'), """
        f"CAST('{{}}' AS json), {key}, "
        "now() - interval '1 hour' + gs * interval '1 microsecond', 0 "
        "FROM generate_series(1, :n) AS gs"
    )


async def preload(
    engine: AsyncEngine, table: str, n: int, *, keyed: bool = False, keys: int = 1000
) -> float:
    """Insert ``n`` pending messages (half of them on `HOT_KEY` when keyed); return seconds."""
    started = time.perf_counter()
    params: dict[str, Any] = {"n": n}
    if keyed:
        params["hot"] = n // 2
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {table}"))
        await connection.execute(text(preload_sql(table, keyed=keyed, keys=keys)), params)
    await vacuum_analyze(engine, table)
    return time.perf_counter() - started


@immutable
class OrderPlaced(AbstractIntegrationEvent):
    """The integration event every benchmark writes."""

    order_id: str
    customer_id: str


class CountingTransport(IAsyncEventTransport):
    """In-memory transport: counts records, optionally timestamps them by order id."""

    def __init__(self, target: int = 0, *, record_times: bool = False) -> None:
        """Count sends; set `done` once ``target`` records were sent."""
        self.target = target
        self.sent = 0
        self.flushes = 0
        self.done = asyncio.Event()
        self.record_times = record_times
        self.sent_at: dict[str, float] = {}

    @override
    async def send(
        self,
        event_name: str,
        payload: bytes,
        headers: dict[str, str],
        partition_key: str | None = None,
    ) -> None:
        if self.record_times:
            now = time.perf_counter()
            order_id = str(json.loads(payload)["order_id"])
            self.sent_at.setdefault(order_id, now)
        self.sent += 1
        if self.target and self.sent >= self.target:
            self.done.set()

    @override
    async def flush(self) -> None:
        self.flushes += 1


def spawn[T](coroutine: Awaitable[T]) -> "asyncio.Task[T]":
    """Run ``coroutine`` as a task in an empty context: its own Spakky context id."""

    async def wrapper() -> T:
        return await coroutine

    return asyncio.get_running_loop().create_task(wrapper(), context=contextvars.Context())


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (``q`` in 0..1) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def stop_relay(relay: Any) -> str | None:
    """Stop ``relay``; return the error its task ended with, if any (8.5.0's can die)."""
    try:
        await relay.stop_async()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


# --------------------------------------------------------------------- drain
async def drain(relay: Any, transport: CountingTransport, timeout: float) -> dict[str, Any]:
    """Run ``relay`` over a preloaded outbox until ``transport`` saw its target."""
    relay.set_stop_event(asyncio.Event())
    started = time.perf_counter()
    await relay.start_async()
    completed = True
    try:
        await asyncio.wait_for(transport.done.wait(), timeout)
    except TimeoutError:
        completed = False
    relay_error = await stop_relay(relay)
    elapsed = time.perf_counter() - started
    return {
        "relay_error": relay_error,
        "messages": transport.target,
        "sent": transport.sent,
        "flushes": transport.flushes,
        "seconds": round(elapsed, 3),
        "rate": transport.sent / elapsed,
        "completed": completed,
    }


# ---------------------------------------------------------------- write path
type Transaction = Callable[[str, str], Awaitable[None]]
"""``transaction(order_id, mode)``: one committed business transaction.

Modes: `PLAIN` (the business row only), `EVENT` (plus one outbox event through
the event bus), `EXTRA_ROW` (plus a second business row instead: the cost of
any one more statement, a floor for the event's cost).
"""

PLAIN = "plain"
EVENT = "event"
EXTRA_ROW = "extra_row"


@dataclass
class _Counter:
    commits: int = 0
    errors: int = 0
    first_error: str | None = None


async def _workers(
    transaction: Transaction,
    clear_context: Callable[[], None],
    concurrency: int,
    seconds: float,
    mode: str,
    tag: str,
) -> tuple[int, int, float, str | None]:
    counter = _Counter()
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        clear_context()  # each worker is its own Spakky context: its own session
        sequence = 0
        while time.perf_counter() < deadline:
            sequence += 1
            try:
                await transaction(f"{tag}-{index}-{sequence}", mode)
            except Exception as error:  # keep measuring; report the failure
                counter.errors += 1
                counter.first_error = counter.first_error or f"{type(error).__name__}: {error}"
                continue
            counter.commits += 1

    started = time.perf_counter()
    await asyncio.gather(*(spawn(worker(i)) for i in range(concurrency)))
    return counter.commits, counter.errors, time.perf_counter() - started, counter.first_error


@dataclass
class RotatedRates:
    """What `rotate_modes` measured at one concurrency."""

    rate: dict[str, float]
    """Commits/s per mode over every round."""
    per_round: list[dict[str, float]]
    """Each round's commits/s per mode."""
    errors: int
    first_error: str | None

    def median_ratio(self, mode: str, reference: str = PLAIN) -> float:
        """Median over rounds of ``mode``'s rate divided by ``reference``'s in the same round."""
        ratios = [r[mode] / r[reference] for r in self.per_round if r[reference]]
        return statistics.median(ratios) if ratios else math.nan


async def rotate_modes(
    transaction: Transaction,
    clear_context: Callable[[], None],
    modes: Sequence[str],
    *,
    concurrency: int,
    seconds: float,
    rounds: int,
    warmup: float,
) -> RotatedRates:
    """Commits/s per mode, in short blocks that rotate through the modes round by round.

    The machine is shared, so its speed drifts within seconds: each round runs
    every mode for ``seconds / rounds`` back to back (the first mode rotating),
    so that ratios taken as medians of the rounds' own ratios move with a burst
    of outside load in one round, not in one mode.
    """
    for mode in modes:
        await _workers(transaction, clear_context, concurrency, warmup, mode, "warm")
    commits = dict.fromkeys(modes, 0)
    elapsed = dict.fromkeys(modes, 0.0)
    per_round: list[dict[str, float]] = []
    errors = 0
    first_error: str | None = None
    for round_index in range(rounds):
        shift = round_index % len(modes)
        rates: dict[str, float] = {}
        for mode in [*modes[shift:], *modes[:shift]]:
            done, failed, took, error = await _workers(
                transaction, clear_context, concurrency, seconds / rounds, mode, f"r{round_index}{mode}"
            )
            commits[mode] += done
            elapsed[mode] += took
            rates[mode] = done / took
            errors += failed
            first_error = first_error or error
        per_round.append(rates)
    rate = {mode: commits[mode] / elapsed[mode] for mode in modes}
    return RotatedRates(rate, per_round, errors, first_error)


async def write_path(
    transaction: Transaction,
    clear_context: Callable[[], None],
    *,
    seconds: float,
    concurrency_levels: Sequence[int] = (1, 16),
    rounds: int = 8,
    warmup: float = 0.5,
) -> dict[str, Any]:
    """Commits/s without an event, with one, and with one extra row instead (see `rotate_modes`)."""
    result: dict[str, Any] = {}
    for concurrency in concurrency_levels:
        measured = await rotate_modes(
            transaction, clear_context, (PLAIN, EVENT, EXTRA_ROW),
            concurrency=concurrency, seconds=seconds, rounds=rounds, warmup=warmup,
        )
        rate, per_round = measured.rate, measured.per_round
        entry: dict[str, Any] = {
            "without_event_per_s": rate[PLAIN],
            "with_event_per_s": rate[EVENT],
            "extra_row_per_s": rate[EXTRA_ROW],
            "ratio": measured.median_ratio(EVENT),
            "extra_row_ratio": measured.median_ratio(EXTRA_ROW),
            "round_ratios": [
                {mode: round(r[mode] / r[PLAIN], 3) for mode in (EVENT, EXTRA_ROW)}
                for r in per_round
                if r[PLAIN]
            ],
            "errors": measured.errors,
        }
        if measured.first_error:
            entry["first_error"] = measured.first_error
        result[f"c{concurrency}"] = entry
        progress(
            f"write path x{concurrency}: {rate[PLAIN]:.0f}/s without, {rate[EVENT]:.0f}/s "
            f"with event (median ratio {entry['ratio']:.2f}); one extra row instead: "
            f"{entry['extra_row_ratio']:.2f}; errors {measured.errors}"
        )
    return result


# ------------------------------------------------------------------- latency
async def commit_to_send(
    write: Callable[[str], Awaitable[None]],
    relay: Any,
    transport: CountingTransport,
    clear_context: Callable[[], None],
    *,
    rate: float,
    seconds: float,
    warmup: float = 0.0,
    settle: float = 1.0,
    drain_timeout: float = 5.0,
) -> dict[str, Any]:
    """Open-loop writer at ``rate``/s beside a running relay; commit-to-send quantiles.

    The writer first runs ``warmup`` seconds at the same rate, unmeasured, and
    its events are delivered before the measured ones start: a fresh process
    pays once for its first garbage collection of the set-up and for each
    pooled connection's first use of every statement, which is start-up, not
    the steady state the figure is about.
    """
    relay.set_stop_event(asyncio.Event())
    await relay.start_async()
    await asyncio.sleep(settle)  # relay idle, wake-up listener in place
    committed_at: dict[str, float] = {}
    failures: list[str] = []

    async def one(order_id: str) -> None:
        clear_context()
        try:
            await write(order_id)
        except Exception as error:
            failures.append(f"{type(error).__name__}: {error}")
            return
        committed_at[order_id] = time.perf_counter()

    async def paced(prefix: str, total: int) -> float:
        tasks: list[asyncio.Task[None]] = []
        started = time.perf_counter()
        for index in range(total):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(spawn(one(f"{prefix}-{index}")))
        await asyncio.gather(*tasks)
        return time.perf_counter() - started

    async def delivered(deadline: float) -> None:
        while time.perf_counter() < deadline and any(o not in transport.sent_at for o in committed_at):
            await asyncio.sleep(0.01)

    if warmup > 0:
        await paced("warm", round(rate * warmup))
        await delivered(time.perf_counter() + drain_timeout)
        committed_at.clear()
        failures.clear()
    total = max(1, round(rate * seconds))
    writing = await paced("lat", total)
    await delivered(time.perf_counter() + drain_timeout)
    relay_error = await stop_relay(relay)
    latencies = [
        (transport.sent_at[o] - t) * 1000 for o, t in committed_at.items() if o in transport.sent_at
    ]
    result = {
        "relay_error": relay_error,
        "events": total,
        "committed": len(committed_at),
        "delivered": len(latencies),
        "write_failures": len(failures),
        "achieved_rate": len(committed_at) / writing,
        "p50_ms": quantile(latencies, 0.50),
        "p90_ms": quantile(latencies, 0.90),
        "p99_ms": quantile(latencies, 0.99),
        "max_ms": max(latencies) if latencies else math.nan,
        "mean_ms": statistics.fmean(latencies) if latencies else math.nan,
        "latencies_ms": sorted(round(v, 3) for v in latencies),
    }
    if failures:
        result["first_failure"] = failures[0]
    return result


# ---------------------------------------------------------------------- idle
async def idle_statements(
    engine: Engine, relay: Any, *, seconds: float, settle: float = 1.5
) -> dict[str, Any]:
    """Statements (and transactions) per second an idle relay sends through ``engine``."""
    counts = {"statements": 0, "transactions": 0}

    def on_statement(*_: object) -> None:
        counts["statements"] += 1

    def on_begin(*_: object) -> None:
        counts["transactions"] += 1

    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine, "begin", on_begin)
    try:
        relay.set_stop_event(asyncio.Event())
        await relay.start_async()
        await asyncio.sleep(settle)
        statements, transactions = counts["statements"], counts["transactions"]
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - started
        statements = counts["statements"] - statements
        transactions = counts["transactions"] - transactions
        relay_error = await stop_relay(relay)
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        event.remove(engine, "begin", on_begin)
    return {
        "relay_error": relay_error,
        "seconds": round(elapsed, 2),
        "statements": statements,
        "statements_per_s": statements / elapsed,
        "transactions_per_s": transactions / elapsed,
    }


# ---------------------------------------------------------------- claim cost
@dataclass
class ClaimSample:
    """Timings of repeated claims."""

    times_ms: list[float] = field(default_factory=list[float])
    returned: list[int] = field(default_factory=list[int])
    hot_returned: int = 0
    warmup_ms: float = 0.0


async def claim_cost(
    fetch: Callable[[], Awaitable[Sequence[Any]]],
    release: Callable[[Sequence[Any]], Awaitable[None]],
    *,
    reps: int,
    budget_seconds: float,
    min_reps: int = 3,
    before: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Median time of ``fetch()`` (one claim of 100), releasing the claim in between.

    ``before`` runs untimed ahead of every claim (the keyed shape renews the
    other instance's hold there).
    """
    sample = ClaimSample()
    if before is not None:
        await before()
    started = time.perf_counter()
    messages = await fetch()
    sample.warmup_ms = (time.perf_counter() - started) * 1000
    await release(messages)
    budget_start = time.perf_counter()
    for index in range(reps):
        if before is not None:
            await before()
        started = time.perf_counter()
        messages = await fetch()
        sample.times_ms.append((time.perf_counter() - started) * 1000)
        sample.returned.append(len(messages))
        sample.hot_returned += sum(1 for m in messages if m.partition_key == HOT_KEY)
        await release(messages)
        if index + 1 >= min_reps and time.perf_counter() - budget_start > budget_seconds:
            break
    return {
        "median_ms": statistics.median(sample.times_ms),
        "min_ms": min(sample.times_ms),
        "max_ms": max(sample.times_ms),
        "warmup_ms": sample.warmup_ms,
        "reps": len(sample.times_ms),
        "returned_min": min(sample.returned),
        "hot_key_returned": sample.hot_returned,
    }


def env_without_spakky() -> dict[str, str]:
    """The environment minus ``SPAKKY_*`` variables, so defaults really are defaults."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SPAKKY_")}
