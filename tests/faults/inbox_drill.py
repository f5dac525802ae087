"""The inbox drill (issue 19.5): duplicates really in the broker, a consumer killed mid-handler, every effect once.

Relay processes (``worker.py``) drain a PostgreSQL outbox through our
delivery adapter (RabbitMQ or Kafka); a consumer process
(``inbox_consumer.py``), a Spakky service with spakky-rabbitmq's or
spakky-kafka's consumer, books each event with an ``@Transactional()``
``@Idempotent()`` handler writing one business row (`tests.faults.inbox_app`).
Mid-drain the drill:

1. holds a relay right after the broker confirmed a batch and SIGKILLs it
   there, before the outbox marks the batch published: once the claim lapses
   a replacement sends the batch again, so the broker holds it twice;
2. holds the consumer inside a handler's transaction (business row written,
   not committed) and SIGKILLs it there, then starts a new consumer: the
   broker redelivers what the dead one had not acknowledged.

Then it counts, from the drill's own tables and the broker: committed,
deliveries the consumers got (duplicates included), duplicates the inbox
skipped, handler calls the kill interrupted, effects (business rows), and
checks 0 duplicated and 0 missing effects with duplicates really delivered.

``make test`` runs a small size (``test_inbox_drill.py``); the full size runs
as a command and prints the report::

    uv run python -m tests.faults.inbox_drill --broker rabbitmq --events 20000 --keys 100
    uv run python -m tests.faults.inbox_drill --broker kafka --events 20000 --keys 100
"""

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import TypeAdapter
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import STATS_COUNT_CAP
from spakky.plugins.outbox_sqlalchemy.inbox import inbox_table
from sqlalchemy import Select, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.faults.brokers import KafkaSink, RabbitMQSink
from tests.faults.drill import (
    RELAY_SETTINGS,
    REPORTS,
    Drill,
    FaultReport,
    Target,
    wait_held,
)
from tests.faults.inbox_app.handlers import (
    CONTROL_ENV,
    DESTINATION_ENV,
    TABLES_ENV,
    DrillTables,
    InboxDrillEvent,
)
from tests.faults.inbox_consumer import KAFKA_TANSU_ENV, STOP_FILE
from tests.faults.sink import HOLD_IN_HANDLER
from tests.faults.targets import sql_target

if TYPE_CHECKING:
    from confluent_kafka import Consumer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
RELAYS = 2
LOAD_CHUNK = 500
"""Events per loading transaction."""
DRAIN_ROUNDS = 3
"""Clean consumer stops the drain may take (each one returns what was still unacknowledged)."""


class InboxBroker(Protocol):
    """The broker of one drill, as the relays, the consumers and the counts see it."""

    name: str

    @property
    def sink(self) -> RabbitMQSink | KafkaSink:
        """Where the relays deliver (their variables, the queue or topic)."""
        ...

    def consumer_env(self) -> dict[str, str]:
        """The consumer process's broker variables."""
        ...

    def drained(self) -> bool:
        """Whether the broker has nothing left the consumers have not acknowledged (as far as it tells)."""
        ...

    def records(self) -> int | None:
        """How many messages the broker received in all (duplicates included); None when it cannot tell."""
        ...

    def close(self) -> None:
        """Remove the queue or topic's reader."""
        ...


@dataclass
class RabbitMQInboxBroker:
    """A durable queue of this run on a RabbitMQ server; spakky-rabbitmq consumes it."""

    url: str
    name: str = "rabbitmq"
    _sink: RabbitMQSink | None = None

    @property
    def sink(self) -> RabbitMQSink:
        """The queue, created on first use."""
        if self._sink is None:
            self._sink = RabbitMQSink(self.url, f"InboxDrill{uuid.uuid4().hex[:10]}")
            self._sink.create()
        return self._sink

    def consumer_env(self) -> dict[str, str]:
        """spakky-rabbitmq's connection variables."""
        from tests.e2e.common import rabbitmq_env

        return rabbitmq_env(self.url)

    def drained(self) -> bool:
        """No message ready in the queue (unacknowledged ones return to it when their consumer's channel closes)."""
        return self.sink.count() == 0

    def records(self) -> int | None:
        """A queue keeps no count of what went through it."""
        return None

    def close(self) -> None:
        """Delete the queue."""
        if self._sink is not None:
            self._sink.delete()


@dataclass
class KafkaInboxBroker:
    """A topic of this run on a Kafka broker; spakky-kafka consumes it in a group of this run."""

    bootstrap: str
    tansu: bool
    partitions: int = 4
    name: str = "kafka"
    group: str = field(default_factory=lambda: f"inbox-drill-{uuid.uuid4().hex[:10]}")
    _sink: KafkaSink | None = None
    _offsets: object = None

    @property
    def sink(self) -> KafkaSink:
        """The topic, created on first use with `partitions` partitions."""
        if self._sink is None:
            self._sink = KafkaSink(
                self.bootstrap, f"InboxDrill{uuid.uuid4().hex[:10]}", partitions=self.partitions, tansu=self.tansu
            )
            self._sink.create()
        return self._sink

    def consumer_env(self) -> dict[str, str]:
        """spakky-kafka's variables: this run's group, topics created with `partitions`."""
        env = {
            "SPAKKY_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "SPAKKY_KAFKA__GROUP_ID": self.group,
            "SPAKKY_KAFKA__CLIENT_ID": "spakky-outbox-inbox-drill",
            "SPAKKY_KAFKA__NUMBER_OF_PARTITIONS": str(self.partitions),
        }
        if self.tansu:
            env[KAFKA_TANSU_ENV] = "1"
        return env

    def _reader(self) -> "Consumer":
        """A client of the group that never joins it: it reads offsets only (created on first use)."""
        from confluent_kafka import Consumer

        if self._offsets is None:
            self._offsets = Consumer({
                "bootstrap.servers": self.bootstrap,
                "group.id": self.group,
                "enable.auto.commit": False,
            })
        assert isinstance(self._offsets, Consumer)
        return self._offsets

    def _partitions(self) -> "list[TopicPartition]":
        from confluent_kafka import TopicPartition

        return [TopicPartition(self.sink.topic, p) for p in range(self.partitions)]

    def drained(self) -> bool:
        """The group's committed offset is at the end of every partition (spakky-kafka commits after its handlers)."""
        reader, partitions = self._reader(), self._partitions()
        committed = reader.committed(partitions, timeout=10)
        ends = [reader.get_watermark_offsets(p, timeout=10)[1] for p in partitions]
        return all(max(c.offset, 0) >= end for c, end in zip(committed, ends, strict=True))

    def records(self) -> int | None:
        """Records in the topic, read from the start of every partition up to its end offset.

        Counted, not computed from offsets: Tansu's offsets are not one per record.
        """
        from confluent_kafka import Consumer, TopicPartition

        ends = {p.partition: self._reader().get_watermark_offsets(p, timeout=10)[1] for p in self._partitions()}
        reader = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": f"{self.group}-reader",
            "enable.auto.commit": False,
        })
        try:
            reader.assign([TopicPartition(self.sink.topic, p, 0) for p in ends])
            deadline, count = time.monotonic() + 120, 0
            reached = {p: end == 0 for p, end in ends.items()}
            while not all(reached.values()):
                if time.monotonic() > deadline:
                    raise AssertionError(f"the topic was not read to its end in 120 s ({count} records)")
                for message in reader.consume(1000, 0.5):
                    partition, offset = message.partition(), message.offset()
                    if message.error() is not None or partition is None or offset is None:
                        continue
                    count += 1
                    reached[partition] = reached[partition] or offset + 1 >= ends[partition]
            return count
        finally:
            reader.close()

    def close(self) -> None:
        """Close the offsets reader (the private broker takes the topic with it)."""
        from confluent_kafka import Consumer

        if isinstance(self._offsets, Consumer):
            self._offsets.close()


@dataclass
class InboxReport:
    """What one inbox drill counted."""

    broker: str
    committed: int
    keys: int
    broker_records: int | None
    """Messages the broker received, duplicates included (Kafka: the topic read back)."""
    resent: int
    """The killed relay's batch: confirmed by the broker, then sent again."""
    resent_seen_twice: int
    """Events of that batch the consumers got at least twice."""
    deliveries: int
    """Deliveries the consumers got, duplicates included (the delivery log)."""
    distinct_delivered: int
    skipped: int
    """Deliveries the inbox skipped as duplicates."""
    interrupted: int
    """Deliveries whose handler neither committed nor was skipped (killed mid-handler)."""
    effects: int
    """Business rows."""
    distinct_effects: int
    consumers: int
    """Consumer processes started (the first, the one after the kill, any the drain needed)."""
    seconds: float
    phases: dict[str, float] = field(default_factory=dict[str, float])
    """Seconds from the drill's start at which each step ended."""

    @property
    def duplicate_deliveries(self) -> int:
        """Deliveries beyond the first of their event."""
        return self.deliveries - self.distinct_delivered

    @property
    def duplicated_effects(self) -> int:
        """Business rows beyond the first of their event."""
        return self.effects - self.distinct_effects

    @property
    def missing_effects(self) -> int:
        """Committed events with no business row."""
        return self.committed - self.distinct_effects

    def line(self) -> str:
        """The report, one line."""
        records = "n/a (a queue keeps no count)" if self.broker_records is None else str(self.broker_records)
        return (
            f"inbox drill [{self.broker}]: committed={self.committed} over {self.keys} keys, "
            f"broker_records={records}, relay batch resent after SIGKILL={self.resent} "
            f"(seen twice or more: {self.resent_seen_twice}), deliveries={self.deliveries} "
            f"(duplicates {self.duplicate_deliveries}), skipped_by_inbox={self.skipped}, "
            f"interrupted_by_consumer_kill={self.interrupted}, effects={self.effects}, "
            f"duplicated_effects={self.duplicated_effects}, missing_effects={self.missing_effects}; "
            f"{self.consumers} consumer processes, {self.seconds:.0f} s ("
            + ", ".join(f"{name} {at:.0f}" for name, at in self.phases.items())
            + ")"
        )

    def problems(self) -> list[str]:
        """Every check the drill failed; empty when it passed."""
        checks = {
            "duplicated effects": self.duplicated_effects == 0,
            "missing effects": self.missing_effects == 0,
            "no duplicate delivered by the broker": self.duplicate_deliveries > 0,
            # Not every one of them: on Tansu a consumer restarted from its committed
            # offset can pass over records that share an offset (its offsets are not
            # one per record), so a second copy may go unseen; the effects checks above
            # are what must hold whatever the broker skips.
            "the killed relay's batch was not delivered twice": self.resent > 0 and self.resent_seen_twice > 0,
            "the inbox skipped no duplicate": self.skipped > 0,
            "the consumer kill interrupted no handler": self.interrupted > 0,
        }
        if self.broker_records is not None:
            checks["the broker holds no duplicate"] = self.broker_records > self.committed
        return [name for name, ok in checks.items() if not ok]


def _events(count: int, keys: int, destination: str) -> list[OutboxMessage]:
    """Event ``i`` is seq ``i // keys`` of key ``i % keys``, stored as the outbox bus stores it."""
    adapter = TypeAdapter(InboxDrillEvent)
    messages: list[OutboxMessage] = []
    for index in range(count):
        event = InboxDrillEvent(key=f"k{index % keys:03d}", seq=index // keys)
        messages.append(
            OutboxMessage(
                id=uuid.uuid4(),
                event_name=destination,
                payload=adapter.dump_json(event),
                headers={},
                created_at=datetime.now(UTC),
                partition_key=event.key,
            )
        )
    return messages


class Consumers:
    """The drill's consumer processes, one running at a time."""

    def __init__(self, broker: InboxBroker, control: Path, env: dict[str, str]) -> None:
        self.broker = broker
        self.control = control
        self.env = env
        self.started: list[subprocess.Popen[bytes]] = []

    @property
    def live(self) -> subprocess.Popen[bytes]:
        return self.started[-1]

    def check_alive(self) -> None:
        if self.live.poll() is not None and self.live.returncode != -signal.SIGKILL:
            raise AssertionError(f"consumer process {self.live.pid} died; see {self.control}/consumer-*.log")

    async def start(self, timeout: float = 120) -> None:
        """Start a consumer and wait until it consumes."""
        self.spawn()
        await self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start a consumer process (`wait_ready` waits for it)."""
        (self.control / STOP_FILE).unlink(missing_ok=True)
        with (self.control / f"consumer-{len(self.started)}.log").open("wb") as log:
            self.started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.faults.inbox_consumer", self.broker.name, str(self.control)],
                    cwd=ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    async def wait_ready(self, timeout: float = 120) -> None:
        """Wait until the live consumer consumes."""
        ready = self.control / f"consumer-ready-{self.live.pid}"
        await _until(ready.exists, timeout, "the consumer did not start", self.check_alive)

    def kill(self) -> None:
        self.live.send_signal(signal.SIGKILL)
        self.live.wait()

    def stop(self) -> None:
        """Stop the live consumer cleanly (stop file, then SIGTERM, then SIGKILL)."""
        (self.control / STOP_FILE).touch()
        for ask in (lambda: None, self.live.terminate, self.live.kill):
            ask()
            try:
                self.live.wait(20)
                return
            except subprocess.TimeoutExpired:
                continue


async def _until(
    condition: Callable[[], bool], timeout: float, what: str, check: Callable[[], None] = lambda: None
) -> None:
    """Poll ``condition`` (in a thread: it may ask a server) until true; past ``timeout`` fail saying ``what``."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        check()
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g} s")
        await asyncio.sleep(0.05)


async def _until_async(
    condition: Callable[[], Awaitable[bool]], timeout: float, what: Callable[[], Awaitable[str]],
    check: Callable[[], None],
) -> None:
    """`_until` for a coroutine condition; ``what`` says where things stood."""
    deadline = time.monotonic() + timeout
    while not await condition():
        check()
        if time.monotonic() > deadline:
            raise AssertionError(f"{await what()} after {timeout:g} s")
        await asyncio.sleep(0.1)


class Counts:
    """Reads the drill's tables."""

    def __init__(self, engine: AsyncEngine, tables: DrillTables) -> None:
        self.engine = engine
        self.tables = tables

    async def scalar(self, statement: Select[tuple[int]]) -> int:
        async with self.engine.connect() as connection:
            return int((await connection.execute(statement)).scalar_one())

    async def distinct_effects(self) -> int:
        effects = self.tables.effects
        return await self.scalar(select(func.count()).select_from(select(effects.c.key, effects.c.seq).distinct().subquery()))

    async def rows(self, pid: int | None = None) -> tuple[int, int, int]:
        """(deliveries, effects, skips), of consumer ``pid`` or of all."""
        counts: list[int] = []
        for table in (self.tables.deliveries, self.tables.effects, self.tables.skips):
            statement = select(func.count()).select_from(table)
            if pid is not None:
                statement = statement.where(table.c.pid == pid)
            counts.append(await self.scalar(statement))
        return counts[0], counts[1], counts[2]

    async def in_flight(self, pid: int) -> int:
        """Deliveries consumer ``pid`` logged whose handler has not finished (committed or skipped)."""
        deliveries, effects, skips = await self.rows(pid)
        return deliveries - effects - skips

    async def deliveries_of(self, pairs: set[tuple[str, int]]) -> Counter[tuple[str, int]]:
        deliveries = self.tables.deliveries
        async with self.engine.connect() as connection:
            result = await connection.execute(select(deliveries.c.key, deliveries.c.seq))
            return Counter((key, seq) for key, seq in result if (key, seq) in pairs)

    async def distinct_delivered(self) -> int:
        deliveries = self.tables.deliveries
        return await self.scalar(
            select(func.count()).select_from(select(deliveries.c.key, deliveries.c.seq).distinct().subquery())
        )


@contextmanager
def _tables_dropped(engine_url: str, tables: DrillTables, inbox: str) -> Iterator[None]:
    """Drop this run's tables and inbox table afterwards (synchronously: the loop may be closing)."""
    from sqlalchemy import create_engine

    try:
        yield
    finally:
        engine = create_engine(make_url(engine_url).set(drivername="postgresql+psycopg"))
        try:
            with engine.begin() as connection:
                tables.metadata.drop_all(connection, checkfirst=True)
                inbox_table(inbox).drop(connection, checkfirst=True)
        finally:
            engine.dispose()


@asynccontextmanager
async def _postgres_target(postgres_url: str) -> AsyncIterator[Target]:
    """A fresh outbox table on PostgreSQL through asyncpg (relays and consumers connect directly)."""
    url = make_url(postgres_url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    config = OutboxConfig().model_copy(
        update={
            "claim_lease_seconds": float(RELAY_SETTINGS["SPAKKY_OUTBOX__CLAIM_LEASE_SECONDS"]),
            "claim_timeout_seconds": float(RELAY_SETTINGS["SPAKKY_OUTBOX__CLAIM_TIMEOUT_SECONDS"]),
        }
    )
    async with sql_target("postgres", url, url, config) as target:
        yield target


async def run_inbox_drill(
    postgres_url: str, broker: InboxBroker, control: Path, *, events: int, keys: int
) -> InboxReport:
    """Run the drill once (see the module docstring) and return its counts; the caller judges them."""
    started = time.monotonic()
    run = uuid.uuid4().hex[:12]
    tables, inbox = DrillTables.named(f"inbox_drill_{run}"), f"inbox_drill_{run}_inbox"
    async with _postgres_target(postgres_url) as target:
        db_url = target.env["SPAKKY_SQLALCHEMY__CONNECTION_STRING"]
        engine = create_async_engine(db_url, pool_size=2)
        with _tables_dropped(db_url, tables, inbox):
            try:
                async with engine.begin() as connection:
                    await connection.run_sync(tables.metadata.create_all)
                report = await _drill(target, broker, control, Counts(engine, tables), events=events, keys=keys,
                                      consumer_env={
                                          **os.environ,
                                          **target.env,
                                          **broker.consumer_env(),
                                          "SPAKKY_OUTBOX__RELAY": "off",
                                          "SPAKKY_SQLALCHEMY__POOL_TIMEOUT": "600",
                                          "SPAKKY_OUTBOX_SQLALCHEMY__INBOX_TABLE_NAME": inbox,
                                          DESTINATION_ENV: broker.sink.destination,
                                          TABLES_ENV: f"inbox_drill_{run}",
                                          CONTROL_ENV: str(control),
                                      })
            finally:
                await engine.dispose()
    report.seconds = time.monotonic() - started
    REPORTS.append(
        FaultReport(
            scenario="inbox: relay SIGKILLed after a confirmed flush, consumer SIGKILLed mid-handler",
            target=broker.name,
            committed=report.committed,
            delivered=report.distinct_delivered,
            duplicates=report.duplicate_deliveries,
            lost=report.missing_effects,
            notes=[report.line()],
        )
    )
    return report


async def _drill(
    target: Target, broker: InboxBroker, control: Path, counts: Counts, *, events: int, keys: int,
    consumer_env: dict[str, str],
) -> InboxReport:
    began = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = time.monotonic() - began

    consumers = Consumers(broker, control, consumer_env)
    relays = Drill(target, control, relays=RELAYS, settings=RELAY_SETTINGS | broker.sink.env("ours"), broker=None)
    messages = _events(events, keys, broker.sink.destination)
    for start in range(0, events, LOAD_CHUNK):
        await target.write(messages[start : start + LOAD_CHUNK])
    relays.committed = messages
    phase("loaded")
    deadline = 120 + events / 20
    """Seconds each phase may take: generous for a loaded 2-core machine, no speed check."""

    def check() -> None:
        relays.check_alive()
        consumers.check_alive()

    async def where() -> str:
        deliveries, effects, skips = await counts.rows()
        stats = await relays.stats()
        return (
            f"{await counts.distinct_effects()}/{events} effects ({deliveries} deliveries, {effects} rows, "
            f"{skips} skipped), {stats.pending} pending in the outbox; logs in {control}"
        )

    # Mid-drain: some of the outbox published, most of it still to come (below
    # the cap at which the storage's stats stop counting). The hold is armed
    # before the relays start: a relay fast enough to drain everything while
    # the drill reads the stats would otherwise never flush again.
    published = min(events // 10, STATS_COUNT_CAP // 2)
    relays.arm_hold_after_flush(max(1, published // int(RELAY_SETTINGS["SPAKKY_OUTBOX__BATCH_SIZE"])))
    try:
        consumers.spawn()  # both boot at once: a process takes seconds to build its app on a busy machine
        relays.start()
        await consumers.wait_ready()
        phase("relays and consumer up")
        await _until_async(lambda: _published_at_least(relays, published), deadline, where, check)
        killed, batch = await relays.hold_after_flush(deadline)
        relays.kill(killed)
        relays.spawn_replacement()
        phase("relay killed")
        await _until_async(lambda: _at_least(counts, events // 2), deadline, where, check)
        (control / HOLD_IN_HANDLER).touch()
        await wait_held(control, HOLD_IN_HANDLER, deadline, check)
        consumers.kill()
        phase("consumer killed")
        await consumers.start()
        phase("consumer up again")
        await _until_async(lambda: _settled(relays, counts, events), deadline, where, check)
        phase("every effect")
        relays.stop()
        phase("relays stopped")
        await _drain(consumers, counts, deadline, where, check)
        phase("drained")
    finally:
        relays.stop()
        if consumers.started and consumers.live.poll() is None:
            consumers.stop()
    resent = {(key, int(seq)) for key, seq in (line.split() for line in batch)}
    deliveries, effects, skips = await counts.rows()
    seen = await counts.deliveries_of(resent)
    return InboxReport(
        broker=broker.name,
        committed=events,
        keys=keys,
        broker_records=await asyncio.to_thread(broker.records),
        resent=len(resent),
        resent_seen_twice=sum(1 for pair in resent if seen[pair] >= 2),
        deliveries=deliveries,
        distinct_delivered=await counts.distinct_delivered(),
        skipped=skips,
        interrupted=deliveries - effects - skips,
        effects=effects,
        distinct_effects=await counts.distinct_effects(),
        consumers=len(consumers.started),
        seconds=0.0,
        phases=phases,
    )


async def _published_at_least(relays: Drill, count: int) -> bool:
    return (await relays.stats()).published >= count


async def _at_least(counts: Counts, effects: int) -> bool:
    return await counts.distinct_effects() >= effects


async def _settled(relays: Drill, counts: Counts, events: int) -> bool:
    """Every event has its effect and nothing is pending in the outbox (the resent batch went out too)."""
    return (await relays.stats()).pending == 0 and await counts.distinct_effects() == events


async def _drain(
    consumers: Consumers, counts: Counts, deadline: float, where: Callable[[], Awaitable[str]],
    check: Callable[[], None],
) -> None:
    """Let the consumers take everything the broker still holds, then stop the live one cleanly.

    Done when the broker reports nothing left and the live consumer has no
    handler running; the clean stop then returns any delivery still
    unacknowledged to the broker, and another consumer takes it.
    """
    broker = consumers.broker

    async def idle() -> bool:
        return await asyncio.to_thread(broker.drained) and await counts.in_flight(consumers.live.pid) == 0

    for _ in range(DRAIN_ROUNDS):
        await _until_async(idle, deadline, where, check)
        consumers.stop()
        if await asyncio.to_thread(broker.drained):
            return
        await consumers.start()
    raise AssertionError(f"the broker still held deliveries after {DRAIN_ROUNDS} clean consumer stops")


def main() -> int:
    """``python -m tests.faults.inbox_drill``: run the drill on the machine's services and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=["rabbitmq", "kafka"], required=True)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=100)
    arguments = parser.parse_args()
    import tempfile

    from spakky_outbox_testservices.resolve import resolve_kafka, resolve_service

    control = Path(tempfile.mkdtemp(prefix="inbox-drill-"))
    print(f"control files and process logs in {control}")
    with resolve_service("postgres") as postgres_url:
        if arguments.broker == "rabbitmq":
            with resolve_service("rabbitmq") as rabbitmq_url:
                report = _run(postgres_url, RabbitMQInboxBroker(rabbitmq_url), control, arguments)
        else:
            with resolve_kafka() as kafka:
                report = _run(postgres_url, KafkaInboxBroker(kafka.bootstrap, kafka.tansu), control, arguments)
    print(report.line())
    problems = report.problems()
    for problem in problems:
        print(f"FAILED: {problem}")
    return 1 if problems else 0


def _run(postgres_url: str, broker: InboxBroker, control: Path, arguments: argparse.Namespace) -> InboxReport:
    try:
        return asyncio.run(
            run_inbox_drill(postgres_url, broker, control, events=arguments.events, keys=arguments.keys)
        )
    finally:
        broker.close()


if __name__ == "__main__":
    sys.exit(main())
