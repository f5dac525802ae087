"""Relay processes at default settings (issue 8): scale-out, recovery, cross-process wake-up.

Runs in the workspace venv (``python -m benchmarks.processes``, normally
started by `benchmarks.run`). Every scenario uses the fault drills' machinery
(``tests/faults``): real relay processes (``worker.py``, a Spakky application
each) relay to a file sink whose flush takes ``relays_flush_seconds``; the sink
stamps every delivery with the system-wide monotonic clock, so this process can
time deliveries and count lost, duplicated and reordered events afterwards.
Relays run at the defaults (claim lease 10 s, claim timeout 300 s, batch 100,
polling 1 s): no ``SPAKKY_OUTBOX__*`` variable is set.

Sections (each on PostgreSQL and Redis):

- ``relays_drain``: drain time with 1 and 3 relays over 100 and 1,000 keys;
- ``relays_kill``: SIGKILL one of three relays mid-drain; how long until every
  key (the killed relay's included) is delivered again;
- ``relays_restart``: restart the storage mid-drain (a private PostgreSQL with
  ``pg_ctl restart -m fast``, a private redis-server with AOF stopped and
  started again about a second later); how long until deliveries resume;
- ``relays_latency``: commit-to-send with the relay in another process, events
  committed one per transaction at a fixed rate.

Prints one JSON result line (see `benchmarks.common`).
"""

import asyncio
import itertools
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.ports.storage import IAsyncOutboxAdministration
from spakky.plugins.outbox_sqlalchemy.schema import outbox_table
from spakky_outbox_testservices.redis_servers import private_redis
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from benchmarks.common import (
    DEFAULT_PG_URL,
    DEFAULT_REDIS_URL,
    emit,
    parse_args,
    progress,
    quantile,
)
from tests.faults.drill import Drill, FaultReport, Target, load_message, resume_after
from tests.faults.sink import Delivery
from tests.faults.targets import redis_target, sql_target

DEFAULT_SETTINGS: dict[str, str] = {}
"""Relay settings: none, so every relay runs at the defaults."""
TABLE_ENV = "SPAKKY_OUTBOX_SQLALCHEMY__TABLE_NAME"
KILL_ATTEMPTS = 3
"""Runs of the SIGKILL scenario until the killed relay died holding a claim
(timed from outside, the kill sometimes lands between two of its batches)."""
LOAD_CHUNK = 5_000


@dataclass
class Outbox:
    """A drill target and the URL this process reaches its server by."""

    target: Target
    url: str


type OutboxFactory = Callable[[], AbstractAsyncContextManager[Outbox]]


def asyncpg_url(url: str) -> str:
    """``url`` with the asyncpg driver."""
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


@asynccontextmanager
async def postgres_outbox(url: str) -> AsyncIterator[Outbox]:
    """A fresh outbox table on the PostgreSQL at ``url``."""
    direct = asyncpg_url(url)
    async with sql_target("postgres", direct, direct, OutboxConfig()) as target:
        yield Outbox(target, direct)


@asynccontextmanager
async def redis_outbox(url: str) -> AsyncIterator[Outbox]:
    """A fresh key prefix on the Redis at ``url``."""
    async with redis_target("redis", url, url, OutboxConfig()) as target:
        yield Outbox(target, url)


async def load(outbox: Outbox, drill: Drill, count: int, keys: int) -> float:
    """Commit ``count`` drill events over ``keys`` keys before the relays start; return seconds.

    PostgreSQL: rows inserted in bulk into the storage's own table (saving
    20,000 events one by one takes ~15 s here, and the drain is what is
    measured); Redis: through the storage's ``save`` in transactions of 2,000.
    """
    started = time.perf_counter()
    if outbox.target.backend != "sqlalchemy":
        await drill.load(count, keys, chunk=2_000)
        return time.perf_counter() - started
    messages = [load_message(i, keys, event_name=drill.event_name) for i in range(count)]
    table = outbox_table(outbox.target.env[TABLE_ENV])
    engine = create_async_engine(outbox.url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            for start in range(0, count, LOAD_CHUNK):
                await connection.execute(
                    insert(table),
                    [
                        {
                            "id": m.id,
                            "event_name": m.event_name,
                            "payload": m.payload,
                            "headers": m.headers,
                            "created_at": m.created_at,
                            "retry_count": 0,
                            "partition_key": m.partition_key,
                        }
                        for m in messages[start : start + LOAD_CHUNK]
                    ],
                )
        async with engine.connect() as connection:
            await connection.execute(text(f'ANALYZE "{table.name}"'))
    finally:
        await engine.dispose()
    drill.committed += messages
    return time.perf_counter() - started


def key_seq(message: OutboxMessage) -> tuple[str, int]:
    """The drill event's key and rank within its key."""
    body = json.loads(message.payload)
    return body["key"], body["seq"]


async def deliver_all(drill: Drill, timeout: float, what: str) -> str | None:
    """Wait until every committed event was delivered at least once; None, or why not."""
    deadline = time.monotonic() + timeout
    wanted = {key_seq(m) for m in drill.committed}
    need = len(wanted)
    while True:
        try:
            await drill.wait_delivered(need, max(0.1, deadline - time.monotonic()), what)
        except AssertionError as error:
            return str(error).split("; logs in")[0]
        missing = wanted - {(d.key, d.seq) for d in drill.deliveries()}
        if not missing:
            return None
        need = drill.delivered_count() + len(missing)


async def with_retries[T](call: Callable[[], Awaitable[T]], attempts: int = 5) -> T:
    """``call()``, retried: after a server restart a pooled connection fails once."""
    for attempt in range(attempts):
        try:
            return await call()
        except Exception:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def late_events(drill: Drill, report: FaultReport, error: str | None) -> int:
    """Correct ``report`` for a scenario stopped at its deadline with events still pending.

    The drill counts every committed event neither delivered nor abandoned as
    lost, which is right once the outbox settled; events the storage still
    holds as pending are late, not lost. Returns how many those are.
    """
    if not error:
        return 0
    storage = drill.target.storage
    assert isinstance(storage, IAsyncOutboxAdministration)
    pending = (await with_retries(storage.stats)).pending
    report.lost = max(0, report.lost - pending)
    return pending


def counts(report: FaultReport, late: int) -> dict[str, int]:
    """The correctness counts of a scenario (``late``: still pending at its deadline)."""
    return {
        "committed": report.committed,
        "delivered": report.delivered,
        "duplicates": report.duplicates,
        "reorderings": report.reorderings,
        "lost": report.lost,
        "abandoned": report.abandoned,
        "pending_at_deadline": late,
    }


def describe(report: FaultReport) -> str:
    """Counts as one progress line."""
    return (
        f"committed {report.committed}, delivered {report.delivered}, duplicates {report.duplicates}, "
        f"reordered {report.reorderings}, lost {report.lost}"
    )


class Scenarios:
    """Runs the scenarios; keeps the control directories of failed ones for their logs."""

    def __init__(self, sizes: dict[str, Any]) -> None:
        """Read the sizes; make a scratch directory for the control files."""
        self.sizes = sizes
        self.flush = float(sizes["relays_flush_seconds"])
        self.root = Path(tempfile.mkdtemp(prefix="spakky-bench-relays-"))
        self.failed = False
        self._runs = 0

    def control(self, name: str) -> Path:
        """A fresh control directory for one drill."""
        self._runs += 1
        path = self.root / f"{self._runs:02d}-{name}"
        path.mkdir()
        return path

    def close(self) -> None:
        """Delete the control files unless a scenario failed (then say where they are)."""
        if self.failed:
            progress(f"relay logs kept in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def note(self, error: str | None) -> None:
        """Remember a failure (keeps the logs)."""
        if error:
            self.failed = True
            progress(f"  ! {error}")

    async def drain(self, outbox: Outbox, *, relays: int, keys: int) -> dict[str, Any]:
        """Drain ``relays_events`` over ``keys`` keys with ``relays`` relay processes."""
        events = int(self.sizes["relays_events"])
        drill = Drill(
            outbox.target, self.control(f"drain-{relays}x{keys}"), relays=relays,
            flush_delay=self.flush, settings=DEFAULT_SETTINGS,
        )
        loaded = await load(outbox, drill, events, keys)
        try:
            drill.start()
            error = await deliver_all(drill, float(self.sizes["relays_deadline_seconds"]), "drain")
        finally:
            drill.stop()
        self.note(error)
        deliveries = drill.deliveries()
        report = await drill.report(f"drain, {relays} relay(s), {keys} keys")
        late = await late_events(drill, report, error)
        first, last = deliveries[0].at_ns / 1e9, deliveries[-1].at_ns / 1e9
        # Drain time runs from the first delivery to the last: the relays' start-up
        # (a Spakky application per process, slower with three on two cores) is
        # reported apart, as the time from the release to the first delivery.
        seconds = last - first
        result = {
            "relays": relays,
            "keys": keys,
            "events": events,
            "load_seconds": round(loaded, 2),
            "seconds": seconds,
            "first_delivery_seconds": first - drill.released_at,
            "from_release_seconds": last - drill.released_at,
            "rate": report.delivered / seconds,
            "error": error,
            **counts(report, late),
        }
        progress(
            f"  {relays} relay(s), {keys} keys: {seconds:.2f} s ({result['rate']:.0f} msg/s); "
            f"first delivery {result['first_delivery_seconds']:.2f} s after the release; {describe(report)}"
        )
        return result

    async def kill(self, outbox: Outbox) -> dict[str, Any]:
        """SIGKILL one of three relays after a quarter of the drain; time every key's resumption.

        The killed relay dies half-way through a flush, holding a claimed batch
        (see `mid_flush`; ``stalled_keys`` shows its keys, none means the timing
        missed). A key it
        held resumes once its lease lapses unrenewed (storages with liveness) or
        its claim times out (the others).
        """
        events = int(self.sizes["relays_events"])
        keys = 100
        drill = Drill(
            outbox.target, self.control("kill"), relays=3, flush_delay=self.flush, settings=DEFAULT_SETTINGS
        )
        await load(outbox, drill, events, keys)
        try:
            drill.start()
            await drill.wait_delivered(events // 4, 120, "deliveries before the kill")
            pid, kill_at = mid_flush(drill.deliveries(), self.flush)
            await asyncio.sleep(max(0.0, kill_at - time.monotonic()))
            drill.kill(next(i for i, w in enumerate(drill.workers) if w.pid == pid))
            killed_at = time.monotonic()
            error = await deliver_all(drill, float(self.sizes["relays_kill_deadline_seconds"]), "after the kill")
        finally:
            drill.stop()
        self.note(error)
        deliveries = drill.deliveries()
        report = await drill.report("SIGKILL one of three relays")
        late = await late_events(drill, report, error)
        stalled = stalled_keys(deliveries, killed_at, threshold=1.0)
        result = {
            "events": events,
            "keys": keys,
            "killed_after_delivered": sum(1 for d in deliveries if d.at_ns < killed_at * 1e9),
            "resumed_seconds": resume_after(deliveries, killed_at, per_key=True) if not error else None,
            "stalled_keys": len(stalled),
            "drained_seconds": deliveries[-1].at_ns / 1e9 - killed_at,
            "error": error,
            **counts(report, late),
        }
        progress(
            f"  every key delivered again {fmt_s(result['resumed_seconds'])} after the kill "
            f"({len(stalled)} keys waited > 1 s); {describe(report)}"
        )
        return result

    async def restart(
        self, outbox: Outbox, restart: Callable[[], None], *, what: str
    ) -> dict[str, Any]:
        """Restart the storage server (``restart()``, blocking) after a quarter of the drain."""
        events = int(self.sizes["relays_events"])
        keys = 100
        drill = Drill(
            outbox.target, self.control("restart"), relays=3, flush_delay=self.flush, settings=DEFAULT_SETTINGS
        )
        await load(outbox, drill, events, keys)
        try:
            drill.start()
            await drill.wait_delivered(events // 4, 120, "deliveries before the restart")
            commanded_at = time.monotonic()
            await asyncio.to_thread(restart)
            accepting_at = time.monotonic()
            error = await deliver_all(drill, float(self.sizes["relays_restart_deadline_seconds"]), "after the restart")
        finally:
            drill.stop()
        self.note(error)
        deliveries = drill.deliveries()
        report = await with_retries(lambda: drill.report(f"storage restart ({what})"))
        late = await late_events(drill, report, error)
        resumed = resume_after(deliveries, accepting_at, per_key=False)
        during = sum(1 for d in deliveries if commanded_at * 1e9 <= d.at_ns < accepting_at * 1e9)
        result = {
            "events": events,
            "keys": keys,
            "how": what,
            "down_seconds": accepting_at - commanded_at,
            "resumed_after_accepting_seconds": resumed,
            "resumed_after_command_seconds": resumed + accepting_at - commanded_at,
            "delivered_while_down": during,
            "error": error,
            **counts(report, late),
        }
        progress(
            f"  {what}: server back after {result['down_seconds']:.2f} s; deliveries resumed "
            f"{resumed:.2f} s later ({result['resumed_after_command_seconds']:.2f} s after the command); "
            f"{describe(report)}"
        )
        return result

    async def latency(self, outbox: Outbox) -> dict[str, Any]:
        """One relay process; this process commits one event per transaction at a fixed rate."""
        rate = float(self.sizes["relays_latency_rate"])
        total = max(1, round(rate * float(self.sizes["relays_latency_seconds"])))
        drill = Drill(outbox.target, self.control("latency"), relays=1, settings=DEFAULT_SETTINGS)
        committed_ns: dict[tuple[str, int], int] = {}
        try:
            drill.start()
            # Unmeasured first, at the same rate: the relay process's start-up
            # (first collection, each statement's first use per connection).
            await paced(outbox, drill, "warm", round(rate * float(self.sizes["relays_latency_warmup"])), rate, {})
            await drill.wait_delivered(len(drill.committed), 60, "the warm-up events")
            writing = await paced(outbox, drill, "k", total, rate, committed_ns)
            error = await deliver_all(drill, 30, "latency events")
        finally:
            drill.stop()
        self.note(error)
        first_at: dict[tuple[str, int], int] = {}
        for d in drill.deliveries():
            first_at.setdefault((d.key, d.seq), d.at_ns)
        latencies = sorted(
            (first_at[k] - t) / 1e6 for k, t in committed_ns.items() if k in first_at
        )
        report = await drill.report("commit-to-send, relay in another process")
        late = await late_events(drill, report, error)
        result = {
            "rate": rate,
            "events": total,
            "achieved_rate": total / writing,
            "p50_ms": quantile(latencies, 0.50),
            "p90_ms": quantile(latencies, 0.90),
            "p99_ms": quantile(latencies, 0.99),
            "max_ms": latencies[-1] if latencies else None,
            "latencies_ms": [round(v, 3) for v in latencies],
            "error": error,
            **counts(report, late),
        }
        progress(
            f"  p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, max {fmt_ms(result['max_ms'])} "
            f"at {result['achieved_rate']:.0f}/s; {describe(report)}"
        )
        return result


async def paced(
    outbox: Outbox,
    drill: Drill,
    prefix: str,
    total: int,
    rate: float,
    committed_ns: dict[tuple[str, int], int],
) -> float:
    """Commit ``total`` events one per transaction at ``rate``/s over 10 keys; return seconds.

    One writer, paced: commits of a key keep their order even when one runs
    late. Each event's commit time (after the commit call returned) goes into
    ``committed_ns``.
    """
    started = time.monotonic()
    for index in range(total):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        message = load_message(index, 10, prefix=prefix)
        await outbox.target.write([message])
        committed_ns[key_seq(message)] = time.monotonic_ns()
        drill.committed.append(message)
    return time.monotonic() - started


def mid_flush(deliveries: list[Delivery], flush: float) -> tuple[int, float]:
    """The relay that delivered last, and when it will be half-way through its next flush.

    Kill it then and it dies holding a claimed batch. Its cycle (acknowledge,
    claim, send, flush) is read from its own recent flushes, since on a loaded
    machine acknowledging and claiming can take longer than the flush itself.
    """
    pid = deliveries[-1].pid
    flushes = sorted({d.at_ns for d in deliveries if d.pid == pid})[-6:]
    gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(flushes)]
    # The shortest recent gap: a longer one may hold a rest after a short claim.
    cycle = min(gaps) if gaps else flush * 1.5
    return pid, flushes[-1] / 1e9 + cycle - flush / 2


def stalled_keys(deliveries: list[Delivery], at: float, *, threshold: float) -> list[str]:
    """Keys whose first delivery after monotonic time ``at`` came more than ``threshold`` s later."""
    at_ns = int(at * 1e9)
    first: dict[str, int] = {}
    for d in deliveries:
        if d.at_ns >= at_ns:
            first.setdefault(d.key, d.at_ns)
    return sorted(k for k, t in first.items() if (t - at_ns) / 1e9 > threshold)


def fmt_s(value: float | None) -> str:
    """Seconds, or a dash."""
    return "-" if value is None else f"{value:.2f} s"


def fmt_ms(value: float | None) -> str:
    """Milliseconds, or a dash."""
    return "-" if value is None else f"{value:.1f} ms"


# ------------------------------------------------------------------ sections
def backends(sizes: dict[str, Any]) -> list[tuple[str, OutboxFactory]]:
    """The shared servers' outboxes: PostgreSQL, and Redis unless skipped."""
    found: list[tuple[str, OutboxFactory]] = [
        ("postgres", lambda: postgres_outbox(sizes.get("pg_url", DEFAULT_PG_URL)))
    ]
    if not sizes.get("skip_redis"):
        found.append(("redis", lambda: redis_outbox(sizes.get("redis_url", DEFAULT_REDIS_URL))))
    return found


async def section_drain(runs: Scenarios) -> dict[str, Any]:
    """1 and 3 relays over 100 and 1,000 keys, per backend."""
    result: dict[str, Any] = {}
    for name, factory in backends(runs.sizes):
        result[name] = {}
        for keys in runs.sizes["relays_keys"]:
            for relays in runs.sizes["relays_counts"]:
                progress(f"relays drain [{name}]: {relays} relay(s), {keys} keys, flush {runs.flush * 1000:.0f} ms")
                async with factory() as outbox:
                    result[name][f"{relays}x{keys}"] = await runs.drain(outbox, relays=relays, keys=keys)
    return result


async def section_kill(runs: Scenarios) -> dict[str, Any]:
    """SIGKILL one of three relays, per backend."""
    result: dict[str, Any] = {}
    for name, factory in backends(runs.sizes):
        for attempt in range(1, KILL_ATTEMPTS + 1):
            progress(f"relays kill [{name}]: SIGKILL one of 3 relays after a quarter of the drain (attempt {attempt})")
            async with factory() as outbox:
                result[name] = await runs.kill(outbox) | {"attempts": attempt}
            if result[name]["stalled_keys"] or result[name]["error"]:
                break
    return result


async def section_restart(runs: Scenarios) -> dict[str, Any]:
    """Restart a private PostgreSQL and a private redis-server (AOF) mid-drain."""
    result: dict[str, Any] = {}
    progress("relays restart [postgres]: private PostgreSQL, pg_ctl restart -m fast")
    result["postgres"] = await restart_postgres(runs)
    if not runs.sizes.get("skip_redis"):
        progress("relays restart [redis]: private redis-server with AOF, down about 1 s")
        result["redis"] = await restart_redis(runs)
    return result


async def restart_postgres(runs: Scenarios) -> dict[str, Any]:
    """The PostgreSQL restart scenario, or why it cannot run here."""
    try:
        from spakky_outbox_testservices.private import running_private_postgres
    except ImportError:
        return {"not_run": "spakky_outbox_testservices.private (private PostgreSQL) is not on this branch"}
    try:
        with running_private_postgres() as server:
            async with postgres_outbox(server.url) as outbox:
                return await runs.restart(outbox, server.restart, what="pg_ctl restart -m fast")
    except pytest.skip.Exception as skipped:
        return {"not_run": str(skipped)}


async def restart_redis(runs: Scenarios) -> dict[str, Any]:
    """The Redis restart scenario (stopped, started again a second after the command)."""
    try:
        with private_redis("--appendonly", "yes") as server:

            def restart() -> None:
                commanded = time.monotonic()
                server.stop()
                # the outage itself: a restart takes this long, not a wait for something
                time.sleep(max(0.0, commanded + float(runs.sizes["redis_down_seconds"]) - time.monotonic()))
                server.start()

            async with redis_outbox(server.url) as outbox:
                return await runs.restart(outbox, restart, what="redis-server stopped (SIGTERM), started 1 s later, AOF on")
    except pytest.skip.Exception as skipped:
        return {"not_run": str(skipped)}


async def section_latency(runs: Scenarios) -> dict[str, Any]:
    """Commit-to-send with the relay in another process, per backend."""
    result: dict[str, Any] = {}
    for name, factory in backends(runs.sizes):
        progress(
            f"relays latency [{name}]: {runs.sizes['relays_latency_rate']}/s for "
            f"{runs.sizes['relays_latency_seconds']} s, relay in another process"
        )
        async with factory() as outbox:
            result[name] = await runs.latency(outbox)
    return result


SECTIONS: dict[str, Callable[[Scenarios], Awaitable[dict[str, Any]]]] = {
    "relays_drain": section_drain,
    "relays_kill": section_kill,
    "relays_restart": section_restart,
    "relays_latency": section_latency,
}


async def main() -> None:
    """Run the requested sections and print the JSON result."""
    sections, sizes = parse_args(__doc__ or "")
    result: dict[str, Any] = {"implementation": "spakky-outbox (this workspace)", "relays": "processes"}
    runs = Scenarios(sizes)
    try:
        for name, section in SECTIONS.items():
            if not sections or name in sections:
                result[name] = await section(runs)
    finally:
        runs.close()
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
