"""Fault drills: real relay processes drain an outbox while the test breaks things.

A `Target` is one outbox backend (its relays' settings, and an in-process
storage for loading events and reading state through the port). A `Drill`
preloads events, runs relay processes (``worker.py``), lets the test inject
faults, and finally checks and reports: committed, delivered, duplicates,
reorderings, lost, abandoned, and how long recovery took.
"""

import asyncio
import contextlib
import contextvars
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import OutboxStats
from spakky.outbox.error import OutboxStorageUnavailableError
from spakky.outbox.ports.storage import IAsyncOutboxAdministration, IAsyncOutboxStorage

from tests.faults.brokers import BrokerSink
from tests.faults.sink import (
    HOLD_AFTER_FLUSH,
    OUTAGE_FILE,
    Delivery,
    count_deliveries,
    read_deliveries,
)

WORKER = Path(__file__).with_name("worker.py")

RELAY_SETTINGS = {
    "SPAKKY_OUTBOX__BATCH_SIZE": "50",
    "SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS": "0.2",
    "SPAKKY_OUTBOX__CLAIM_LEASE_SECONDS": "2",
    "SPAKKY_OUTBOX__CLAIM_TIMEOUT_SECONDS": "30",
    "SPAKKY_OUTBOX__MAX_RETRY_COUNT": "3",
    "SPAKKY_OUTBOX__RETRY_BACKOFF_BASE_SECONDS": "0.05",
    "SPAKKY_OUTBOX__RETRY_BACKOFF_MAX_SECONDS": "0.2",
    "SPAKKY_OUTBOX__OUTAGE_BACKOFF_MAX_SECONDS": "1",
}
"""Relay settings of every drill: short leases and backoffs keep drills short."""


@dataclass
class Target:
    """One outbox backend under a drill."""

    name: str
    backend: str
    """``worker.py`` BACKEND argument: ``sqlalchemy``, ``redis`` or ``mongodb``."""
    env: dict[str, str]
    """The relays' ``SPAKKY_*`` settings (pointing through a fault proxy where there is one)."""
    storage: IAsyncOutboxStorage
    """In-process storage on the same outbox, for loading and reading state."""
    write: Callable[[list[OutboxMessage]], Awaitable[None]]
    """Save messages in one business transaction, as a use case would."""
    rows: Callable[[list[UUID]], Awaitable[list[dict[str, Any]]]] | None = None
    """The stored state of these messages, read straight from the storage (SQL targets); None: not offered."""
    relay_settings: dict[str, str] = field(default_factory=dict[str, str])
    """Settings this target's relays need on top of `RELAY_SETTINGS` (drills that honour them merge them)."""


def load_message(
    index: int, keys: int, poison: bool = False, prefix: str = "k", event_name: str = "FaultDrillEvent"
) -> OutboxMessage:
    """Event ``index`` of a drill: key ``index % keys``, rank ``seq`` within its key."""
    key, seq = f"{prefix}{index % keys:03d}", index // keys
    body: dict[str, Any] = {"key": key, "seq": seq}
    if poison:
        body["poison"] = True
    return OutboxMessage(
        id=uuid.uuid4(),
        event_name=event_name,
        payload=json.dumps(body).encode(),
        headers={},
        created_at=datetime.now(UTC),
        partition_key=key,
    )


@dataclass
class FaultReport:
    """What one drill counted."""

    scenario: str
    target: str
    committed: int = 0
    delivered: int = 0
    duplicates: int = 0
    reorderings: int = 0
    """First deliveries of a key that came after a later event of that key."""
    stale: int = 0
    """Deliveries, duplicates included, that came after a later event of their key:
    the order a consumer sees step back (a redelivered batch, a paused relay's
    stale send). An inbox drops these; see docs/inbox.md."""
    lost: int = 0
    abandoned: int = 0
    recovery: str = ""
    notes: list[str] = field(default_factory=list[str])
    lost_ids: list[UUID] = field(default_factory=list[UUID])
    """The lost messages' ids, in commit order."""
    lost_state: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    """What the storage held for the first `LOST_SHOWN` lost messages when the report was made (SQL targets)."""

    def line(self) -> str:
        """One summary line for the terminal report."""
        text = (
            f"{self.scenario} [{self.target}]: committed={self.committed} delivered={self.delivered} "
            f"duplicates={self.duplicates} reorderings={self.reorderings} stale={self.stale} lost={self.lost} "
            f"abandoned={self.abandoned}"
        )
        if self.recovery:
            text += f"; {self.recovery}"
        return text + "".join(f"; {n}" for n in self.notes)


STATS_TIMEOUT_SECONDS = 30.0
"""Server-side limit of the drill's own `stats` reads (the MongoDB wire server, busy with three relays, needs over 5 s)."""

LOST_SHOWN = 20
"""Lost messages whose stored state a report reads and prints."""

REPORTS: list[FaultReport] = []
"""Every drill's report, printed at the end of the session by the conftest."""


class Drill:
    """Relay processes draining one target's outbox, with faults on demand."""

    def __init__(
        self,
        target: Target,
        control: Path,
        *,
        relays: int,
        flush_delay: float = 0.0,
        settings: Mapping[str, str] = RELAY_SETTINGS,
        broker: BrokerSink | None = None,
    ) -> None:
        """Prepare ``relays`` worker processes writing to ``control``, configured by ``settings``.

        With a ``broker``, the relays deliver to it (its topic or queue is the
        events' name) instead of the file sink, and deliveries are read back from it.
        """
        self.target = target
        self.broker = broker
        self.event_name = broker.destination if broker is not None else "FaultDrillEvent"
        self.control = control
        self.relays = relays
        self.flush_delay = flush_delay
        self.settings = settings
        self.released_at = 0.0
        """When `start` let the relays go (monotonic)."""
        self.workers: list[subprocess.Popen[bytes]] = []
        self.committed: list[OutboxMessage] = []
        self.poison: set[tuple[str, int]] = set()

    async def load(self, count: int, keys: int, *, poison_every: int = 0, chunk: int = 500) -> None:
        """Commit ``count`` events over ``keys`` keys in chunked transactions; every ``poison_every``-th is poison."""
        messages = [
            load_message(
                i, keys, poison=bool(poison_every) and i % poison_every == poison_every - 1, event_name=self.event_name
            )
            for i in range(count)
        ]
        for start in range(0, count, chunk):
            await self.target.write(messages[start : start + chunk])
        self.committed += messages
        self.poison |= {_key_seq(m) for m in messages if b'"poison"' in m.payload}

    @asynccontextmanager
    async def live_traffic(self, *, keys: int = 10, per_commit: int = 10) -> AsyncIterator[None]:
        """Keep committing fresh events on keys of their own while the block runs, as a live service does.

        A poison message is only recognised while other messages go through;
        without traffic, a poison message heading the last undelivered key looks
        exactly like a broker outage (see docs/usage.md).
        """
        stop = asyncio.Event()

        async def write() -> None:
            index = 0
            while not stop.is_set():
                messages = [load_message(index + i, keys, prefix="live", event_name=self.event_name) for i in range(per_commit)]
                await self.target.write(messages)
                self.committed += messages
                index += per_commit
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)

        writer = asyncio.create_task(write())
        try:
            yield
        finally:
            stop.set()
            await writer

    async def wait_abandoned(self, count: int, timeout: float) -> None:
        """Wait until ``count`` messages are abandoned."""
        deadline = time.monotonic() + timeout
        while (stats := await self._stats()).abandoned < count:
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"{stats.abandoned}/{count} poison messages abandoned after {timeout:g} s; {stats}")
            await asyncio.sleep(0.05)

    def start(self) -> None:
        """Spawn the relays, wait until each built its app, then let them go together."""
        env = self._env()
        for index in range(self.relays):
            self.workers.append(self._spawn(env, index))
        deadline = time.monotonic() + 90
        while len(list(self.control.glob("ready-*"))) < len(self.workers):
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"relay processes did not build their apps in 90 s; logs in {self.control}")
            time.sleep(0.02)
        (self.control / "go").touch()
        self.released_at = time.monotonic()

    def spawn_replacement(self) -> None:
        """Start one more relay (after a kill), released at once."""
        self.workers.append(self._spawn(self._env(), len(self.workers)))

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **self.settings, **self.target.env, "FAULT_FLUSH_DELAY": str(self.flush_delay)}
        env["PYTHONPATH"] = os.pathsep.join([str(WORKER.parent), env.get("PYTHONPATH", "")])
        return env

    def _spawn(self, env: dict[str, str], index: int) -> subprocess.Popen[bytes]:
        with (self.control / f"relay-{index}.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, str(WORKER), self.target.backend, str(self.control)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def check_alive(self) -> None:
        dead = [i for i, w in enumerate(self.workers) if w.poll() is not None and w.returncode != -signal.SIGKILL]
        if dead:
            raise AssertionError(f"relay processes {dead} died; see {self.control}/relay-*.log")

    def delivered_count(self) -> int:
        return self.broker.count() if self.broker is not None else count_deliveries(self.control)

    async def wait_delivered(self, count: int, timeout: float, what: str) -> float:
        """Wait until ``count`` deliveries exist; return when (monotonic). Fails naming ``what``."""
        deadline = time.monotonic() + timeout
        while self.delivered_count() < count:
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: {self.delivered_count()}/{count} delivered after {timeout:g} s; "
                    f"logs in {self.control}"
                )
            await asyncio.sleep(0.02)
        return time.monotonic()

    async def stats(self) -> OutboxStats:
        """The outbox's counts right now."""
        return await self._stats()

    async def _stats(self) -> OutboxStats:
        """The outbox's counts; asked again when the storage reports itself unavailable once."""
        storage = self.target.storage
        assert isinstance(storage, IAsyncOutboxAdministration)
        try:
            return await storage.stats(STATS_TIMEOUT_SECONDS)
        except OutboxStorageUnavailableError:
            return await storage.stats(STATS_TIMEOUT_SECONDS)  # the dead pooled connection is gone now

    async def wait_settled(self, timeout: float) -> None:
        """Wait until nothing is pending in the outbox (every message published or abandoned)."""
        deadline = time.monotonic() + timeout
        while (stats := await self._stats()).pending:
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"{stats.pending} messages still pending after {timeout:g} s; {stats}")
            await asyncio.sleep(0.05)

    def kill(self, index: int) -> int:
        """SIGKILL relay ``index``, as a crashed pod; return its pid."""
        worker = self.workers[index]
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        return worker.pid

    def arm_hold_after_flush(self, after_batches: int) -> None:
        """Put the after-flush hold in place now, for the first relay that has flushed ``after_batches`` batches."""
        (self.control / HOLD_AFTER_FLUSH).write_text(str(after_batches))

    async def hold_after_flush(self, timeout: float) -> tuple[int, list[str]]:
        """Stop the next relay to flush a batch right after the broker confirmed it, before the outbox hears of it.

        Return that relay's index and its batch (``KEY SEQ`` lines): SIGKILL
        it now and the broker holds the batch while the outbox sends it again
        once the claim lapses (see ``worker.py``).
        """
        if not any(self.control.glob(f"{HOLD_AFTER_FLUSH}*")):  # unless armed (or taken) already
            (self.control / HOLD_AFTER_FLUSH).touch()
        held = await wait_held(self.control, HOLD_AFTER_FLUSH, timeout, self.check_alive)
        index = next(i for i, w in enumerate(self.workers) if w.pid == held.pid)
        return index, held.lines

    def pause(self, index: int, paused: bool) -> None:
        """SIGSTOP relay ``index`` (a GC pause, a frozen VM) or SIGCONT it again."""
        self.workers[index].send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def broker_outage(self, down: bool) -> None:
        """Make every send and flush of every relay fail (True) or work again (False)."""
        flag = self.control / OUTAGE_FILE
        if down:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop every relay cleanly (stop file, then SIGTERM, then SIGKILL)."""
        (self.control / "stop").touch()
        deadline = time.monotonic() + 20
        for worker in self.workers:
            try:
                worker.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.terminate()
        for worker in self.workers:
            try:
                worker.wait(5)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    def deliveries(self) -> list[Delivery]:
        return self.broker.read() if self.broker is not None else read_deliveries(self.control)

    async def report(self, scenario: str) -> FaultReport:
        """Count what the drill did; the test asserts on it, the session prints it."""
        deliveries = self.deliveries()
        storage = self.target.storage
        assert isinstance(storage, IAsyncOutboxAdministration)
        abandoned = await storage.list_abandoned(limit=10_000)
        committed = {_key_seq(m) for m in self.committed}
        seen: set[tuple[str, int]] = set()
        last: dict[str, int] = {}
        reorderings = stale = 0
        for d in deliveries:
            pair = (d.key, d.seq)
            behind = d.seq < last.get(d.key, -1)
            stale += int(behind)
            last[d.key] = max(d.seq, last.get(d.key, -1))
            if pair in seen:
                continue
            seen.add(pair)
            reorderings += int(behind)
        # By id: a listing need not carry payloads (Redis reads none).
        by_id = {m.id: _key_seq(m) for m in self.committed}
        abandoned_pairs = {by_id[m.id] for m in abandoned if m.id in by_id}
        report = FaultReport(
            scenario=scenario,
            target=self.target.name,
            committed=len(committed),
            delivered=len(seen),
            duplicates=len(deliveries) - len(seen),
            reorderings=reorderings,
            stale=stale,
            lost=len(committed - seen - abandoned_pairs),
            abandoned=len(abandoned_pairs),
        )
        if self.broker is not None:
            report.notes += self.broker.notes
        if report.lost:
            await self._explain_lost(report, seen | abandoned_pairs)
        REPORTS.append(report)
        return report

    async def _explain_lost(self, report: FaultReport, accounted: set[tuple[str, int]]) -> None:
        """Name the lost messages and what the storage holds for them: unsent, or marked published unseen?"""
        lost = [m for m in self.committed if _key_seq(m) not in accounted]
        report.lost_ids = [m.id for m in lost]
        rows = self.target.rows
        if rows is None:
            report.notes.append(f"lost ids (first {LOST_SHOWN}): {[str(i) for i in report.lost_ids[:LOST_SHOWN]]}")
            return
        try:
            report.lost_state = await rows(report.lost_ids[:LOST_SHOWN])
        except Exception as error:  # the report is made anyway; say why the state is missing
            report.notes.append(f"lost messages' stored state unreadable: {error!r}")
            return
        published = sum(1 for row in report.lost_state if row.get("published_at") is not None)
        report.notes.append(
            f"{published} of the {len(report.lost_state)} lost messages read back are marked published "
            f"(the broker acknowledged them: lost or unread at the broker), the others were never acknowledged; "
            f"stored state: {report.lost_state}"
        )


@dataclass(frozen=True)
class Held:
    """A process stopped at a drill's hold, and what it holds."""

    pid: int
    lines: list[str]


async def wait_held(control: Path, name: str, timeout: float, check: Callable[[], None]) -> Held:
    """Wait until a process took hold ``name`` in ``control`` and reported; ``check`` fails early on a dead process."""
    deadline = time.monotonic() + timeout
    while not (reports := list(control.glob(f"{name}-held-*"))):
        check()
        if time.monotonic() > deadline:
            raise AssertionError(f"no process reached hold {name!r} in {timeout:g} s; logs in {control}")
        await asyncio.sleep(0.01)
    path = reports[0]
    return Held(int(path.name.rsplit("-", 1)[1]), path.read_text(encoding="utf-8").splitlines())


def _key_seq(message: OutboxMessage) -> tuple[str, int]:
    body = json.loads(message.payload)
    return body["key"], body["seq"]


def resume_after(deliveries: list[Delivery], at: float, *, per_key: bool) -> float:
    """Seconds from monotonic time ``at`` to deliveries resuming.

    With ``per_key``, the slowest key: the wait for each key's first delivery
    after ``at`` (a key the killed relay held waits for its lease to lapse).
    """
    at_ns = int(at * 1e9)
    after = [d for d in deliveries if d.at_ns >= at_ns]
    if not after:
        return float("inf")
    if not per_key:
        return (after[0].at_ns - at_ns) / 1e9
    first_after: dict[str, int] = {}
    for d in after:
        first_after.setdefault(d.key, d.at_ns)
    return (max(first_after.values()) - at_ns) / 1e9


def in_fresh_context[T](coroutine: Awaitable[T]) -> Awaitable[T]:
    """Schedule ``coroutine`` as a task in an empty context: its own scoped session."""

    async def run() -> T:
        return await coroutine

    return asyncio.create_task(run(), context=contextvars.Context())
