"""Real brokers behind the drill relays: what the relays deliver through, read back from the broker.

A `BrokerSink` replaces the file sink: the relay processes deliver through a
real transport (our delivery adapter, or spakky-kafka / spakky-rabbitmq 8.5),
chosen by the variables in ``env``; the drill counts what the broker holds and
reads every event back from it afterwards, in the broker's own order (a Kafka
partition's offsets, a RabbitMQ queue's FIFO). The worker reads
``FAULT_TRANSPORT`` (see ``worker.py``).
"""

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

from tests.faults.proxy import FaultProxy
from tests.faults.sink import Delivery

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

TRANSPORT_ENV = "FAULT_TRANSPORT"
"""Which spakky plugin's transport a worker loads instead of the file sink (``spakky-kafka``, ``spakky-rabbitmq``)."""
QUIET_SECONDS = 2.0
"""A read of a topic from offset 0 ends once its end offsets are reached and nothing new came this long."""
GAP_PATIENCE_SECONDS = 10.0
"""How long the live Kafka reader waits for a hole in a partition's offsets to be served before it reads on."""
KAFKA_IDEMPOTENCE_OFF_ENV = "FAULT_KAFKA_IDEMPOTENCE_OFF"
"""Set: spakky-kafka's aiokafka producer runs with idempotence off (Tansu refuses its InitProducerId v0)."""


class BrokerSink(Protocol):
    """Where the drill relays deliver, as the drill reads it."""

    name: str
    """``kafka`` or ``rabbitmq``."""
    notes: list[str]
    """What the last `read` found beside the records (records a live reader missed, errors): for the report."""

    @property
    def destination(self) -> str:
        """The topic or queue: the drill's events are named after it."""
        ...

    def env(self, transport: str) -> dict[str, str]:
        """The relays' variables for ``transport`` (``ours``, ``spakky``)."""
        ...

    def count(self) -> int:
        """How many records the broker holds (delivered so far, duplicates included)."""
        ...

    def read(self) -> list[Delivery]:
        """Every delivered event, in the broker's order (``at_ns``: position; ``pid``: partition)."""
        ...


def _delivery(value: bytes, position: int, partition: int) -> Delivery:
    body = json.loads(value)
    return Delivery(body["key"], int(body["seq"]), position, partition)


@dataclass
class KafkaSink:
    """One topic on a Kafka-protocol broker (Tansu here), created up front with ``partitions``.

    Two readers: a live one follows the topic while the relays deliver (`count`,
    for progress), and `read` reads every partition again from offset 0 up to its
    end offset once they stopped, so what the live reader passed over is still
    counted, and said (`notes`).

    Why the live reader must not trust the order it is served in: Tansu (memory
    engine) reserves a batch's offsets before it stores the batch, and a fetch
    returns the stored batches at or after the asked offset. While two producers
    write one partition, a fetch can so be served the later batch before the
    earlier one is stored, and a reader that goes on from there never sees the
    earlier one although the broker acknowledged and keeps it (see
    docs/operations.md, "Tansu"). The live reader therefore takes a partition's
    records in offset order only: past a hole it seeks back to the hole and reads
    again, and it gives up on a hole only after `GAP_PATIENCE_SECONDS`.
    """

    bootstrap: str
    topic: str
    partitions: int = 4
    tansu: bool = True
    name: str = "kafka"
    _reader: object = field(default=None, repr=False)
    _records: set[tuple[int, int, bytes]] = field(default_factory=set[tuple[int, int, bytes]], repr=False)
    """(partition, offset, value) of every record the live reader took; a re-read adds nothing."""
    errors: list[str] = field(default_factory=list[str])
    """What the readers were handed instead of a record (fetch errors, offset resets), in order."""
    rewinds: list[tuple[int, int, int]] = field(default_factory=list[tuple[int, int, int]])
    """(partition, hole's offset, offset served instead) each time the live reader was served past a hole."""
    _next: dict[int, int] = field(default_factory=dict[int, int], repr=False)
    """Per partition: the offset the live reader takes next."""
    _holes: dict[tuple[int, int], float] = field(default_factory=dict[tuple[int, int], float], repr=False)
    """(partition, offset) of each hole the live reader is waiting on: since when (monotonic)."""
    notes: list[str] = field(default_factory=list[str])
    """What the last `read` found beside the records (records the live reader missed, errors): for the report."""

    @property
    def destination(self) -> str:
        """The topic."""
        return self.topic

    def create(self) -> None:
        """Create the topic (both transports then find it existing)."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.create_topics([NewTopic(self.topic, self.partitions)])[self.topic].result(30)

    def env(self, transport: str) -> dict[str, str]:
        """Our adapter (``ours``) or spakky-kafka's transport (``spakky``) on this broker."""
        if transport == "ours":
            return {
                "SPAKKY_OUTBOX__DELIVERY": "kafka",
                "SPAKKY_OUTBOX_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
                "SPAKKY_OUTBOX_KAFKA__TOPIC_PARTITIONS": str(self.partitions),
            }
        env = {
            TRANSPORT_ENV: "spakky-kafka",
            "SPAKKY_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "SPAKKY_KAFKA__GROUP_ID": f"drill-{uuid.uuid4().hex}",
            "SPAKKY_KAFKA__CLIENT_ID": "spakky-outbox-drill",
            "SPAKKY_KAFKA__NUMBER_OF_PARTITIONS": str(self.partitions),
        }
        if self.tansu:
            env[KAFKA_IDEMPOTENCE_OFF_ENV] = "1"
        return env

    def _new_consumer(self) -> "Consumer":
        """A consumer of no group's offsets, every partition assigned from offset 0."""
        from confluent_kafka import Consumer, TopicPartition

        reader = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": f"drill-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            # A position the broker calls out of range goes back to the start (read
            # again, counted once), never to the end, which would pass over records.
            "auto.offset.reset": "earliest",
        })
        reader.assign([TopicPartition(self.topic, p, 0) for p in range(self.partitions)])
        return reader

    def _consumer(self) -> "Consumer":
        """The live reader (created on first use)."""
        if self._reader is None:
            self._reader = self._new_consumer()
        return cast("Consumer", self._reader)

    def _take(self, messages: "list[Message]", into: set[tuple[int, int, bytes]]) -> None:
        for message in messages:
            value, error = message.value(), message.error()
            if error is not None:
                self.errors.append(f"partition {message.partition()} offset {message.offset()}: {error}")
            elif value is not None:
                into.add((message.partition() or 0, message.offset() or 0, value))

    def count(self) -> int:
        """Records read from the topic so far by the live reader (what is readable now is read first)."""
        consumer = self._consumer()
        # Served past a hole, stop here: the next call reads again from it, once the
        # broker had time to store it (a call must not spin on a hole).
        while (batch := consumer.consume(1000, 0.05)) and not self._take_in_order(consumer, batch):
            pass
        return len(self._records)

    def _take_in_order(self, consumer: "Consumer", messages: "list[Message]") -> bool:
        """Take each partition's records in offset order; served past a hole, seek back to it (then True)."""
        from confluent_kafka import KafkaException, TopicPartition

        rewind: dict[int, int] = {}
        for message in messages:
            partition, offset, value, error = message.partition(), message.offset(), message.value(), message.error()
            if error is not None:
                self.errors.append(f"partition {partition} offset {offset}: {error}")
                continue
            if partition is None or offset is None or value is None or partition in rewind:
                continue
            expected = self._next.get(partition, 0)
            if offset > expected:
                new = (partition, expected) not in self._holes
                if not self._hole_given_up(partition, expected, offset):
                    if new:
                        self.rewinds.append((partition, expected, offset))
                    rewind[partition] = expected
                    continue
            self._holes.pop((partition, offset), None)
            self._records.add((partition, offset, value))
            self._next[partition] = max(expected, offset + 1)
        for partition, offset in rewind.items():
            try:
                consumer.seek(TopicPartition(self.topic, partition, offset))
            except KafkaException as error:  # the final read from offset 0 still counts what is there
                self.errors.append(f"partition {partition}: could not seek back to {offset}: {error}")
        return bool(rewind)

    def _hole_given_up(self, partition: int, offset: int, served: int) -> bool:
        """Whether the live reader stops waiting for ``offset`` (missing for `GAP_PATIENCE_SECONDS`) and goes on."""
        since = self._holes.setdefault((partition, offset), time.monotonic())
        if time.monotonic() - since < GAP_PATIENCE_SECONDS:
            return False
        del self._holes[(partition, offset)]
        self.errors.append(
            f"partition {partition}: offsets {offset}-{served - 1} never served in {GAP_PATIENCE_SECONDS:g} s; read on"
        )
        return True

    def end_offsets(self) -> dict[int, int]:
        """Each partition's end offset (high watermark) as the broker reports it now."""
        from confluent_kafka import TopicPartition

        consumer = self._consumer()
        return {
            p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
            for p in range(self.partitions)
        }

    def read_from_start(self, timeout: float = 120) -> set[tuple[int, int, bytes]]:
        """Every record of every partition, read by a fresh consumer from offset 0 (nothing may be produced meanwhile).

        Read until every partition reached its end offset and nothing new came
        for `QUIET_SECONDS`: Tansu's end offset can stand below the records it
        serves (4,381 for 4,400 here), so reaching it is not the end.
        """
        ends = self.end_offsets()
        records: set[tuple[int, int, bytes]] = set()
        reached = {p: end == 0 for p, end in ends.items()}
        reader = self._new_consumer()
        deadline = time.monotonic() + timeout
        new_at = time.monotonic()
        try:
            while not all(reached.values()) or time.monotonic() - new_at < QUIET_SECONDS:
                if time.monotonic() > deadline:
                    self.errors.append(f"the topic was not read to its end offsets {ends} in {timeout:g} s")
                    break
                batch = reader.consume(1000, 0.2)
                before = len(records)
                self._take(batch, records)
                if len(records) > before:
                    new_at = time.monotonic()
                for message in batch:
                    partition, offset = message.partition(), message.offset()
                    if message.error() is None and partition is not None and offset is not None:
                        reached[partition] = reached[partition] or offset + 1 >= ends[partition]
        finally:
            reader.close()
        return records

    def read(self) -> list[Delivery]:
        """Every record of every partition, partition by partition in offset order.

        The live reader's records, and a fresh read of every partition from
        offset 0 once nothing new arrives (the relays have stopped); `notes` says
        what the live reader missed and what either reader was handed instead of a record.
        """
        deadline = time.monotonic() + 5
        seen = self.count()
        while time.monotonic() < deadline:  # nothing more arrives: the relays have stopped
            time.sleep(0.2)
            if self.count() == seen:
                break
            seen = len(self._records)
        fresh = self.read_from_start()
        if self._reader is not None:
            self._consumer().close()
            self._reader = None
        missed = fresh - self._records
        self.notes = []
        if self.rewinds:
            shown = [f"partition {p}: {o} asked, {served} served" for p, o, served in self.rewinds[:5]]
            self.notes.append(
                f"the broker served the live reader past a hole {len(self.rewinds)} times; "
                f"it read again from the hole ({shown})"
            )
        if missed:
            offsets = sorted((p, o) for p, o, _ in missed)
            self.notes.append(
                f"the live reader missed {len(missed)} records a read from offset 0 found "
                f"(partition, offset: {offsets[:20]})"
            )
        if self.errors:
            self.notes.append(f"readers' errors ({len(self.errors)}): {self.errors[:5]}")
        records = sorted(self._records | fresh)
        return [_delivery(value, i, partition) for i, (partition, _, value) in enumerate(records)]


@dataclass
class RabbitMQSink:
    """One durable queue on a RabbitMQ server (the default exchange routes to it by name)."""

    url: str
    queue: str
    name: str = "rabbitmq"
    relay_url: str | None = None
    """Where the relays connect (a fault proxy's URL); None: `url`, which the drill reads from."""
    notes: list[str] = field(default_factory=list[str])
    """Nothing to say: a queue is read once, in order."""
    _read: list[Delivery] | None = field(default=None, repr=False)
    _taken: list[bytes] = field(default_factory=list[bytes], repr=False)
    """Bodies taken off the queue before it was deleted (`take_and_delete`), in queue order."""

    @property
    def destination(self) -> str:
        """The queue."""
        return self.queue

    def env(self, transport: str) -> dict[str, str]:
        """Our adapter (``ours``) or spakky-rabbitmq's transport (``spakky``) on this server."""
        url = self.relay_url or self.url
        if transport == "ours":
            return {"SPAKKY_OUTBOX__DELIVERY": "rabbitmq", "SPAKKY_OUTBOX_RABBITMQ__URL": url}
        from tests.e2e.common import rabbitmq_env

        return {TRANSPORT_ENV: "spakky-rabbitmq", **rabbitmq_env(url)}

    def _connection(self) -> object:
        import pika

        parameters = pika.URLParameters(self.url)
        parameters.socket_timeout = 5
        parameters.connection_attempts = 1
        return pika.BlockingConnection(parameters)

    def create(self) -> None:
        """Declare the queue durable (as both transports would)."""
        import pika

        connection = self._connection()
        assert isinstance(connection, pika.BlockingConnection)
        try:
            connection.channel().queue_declare(self.queue, durable=True)
        finally:
            connection.close()

    def delete(self) -> None:
        """Delete the queue (gone already: nothing to do)."""
        import pika

        connection = self._connection()
        assert isinstance(connection, pika.BlockingConnection)
        try:
            connection.channel().queue_delete(self.queue)
        finally:
            if connection.is_open:
                connection.close()

    def count(self) -> int:
        """Messages ready in the queue (0 while the server does not answer)."""
        import pika

        try:
            connection = self._connection()
        except pika.exceptions.AMQPError:
            return 0
        assert isinstance(connection, pika.BlockingConnection)
        try:
            declared = connection.channel().queue_declare(self.queue, passive=True)
            return len(self._taken) + int(declared.method.message_count)
        except pika.exceptions.AMQPError:
            return len(self._taken)
        finally:
            if connection.is_open:
                connection.close()

    def _take_all(self) -> list[bytes]:
        """Consume the queue until it stays empty for 2 s, then delete it (only if still empty)."""
        import pika

        connection = self._connection()
        assert isinstance(connection, pika.BlockingConnection)
        bodies: list[bytes] = []
        try:
            while True:
                channel = connection.channel()
                channel.basic_qos(prefetch_count=1000)
                for method, _, body in channel.consume(self.queue, auto_ack=True, inactivity_timeout=2):
                    if method is None:
                        break
                    bodies.append(body)
                channel.cancel()
                try:
                    # if_empty: a message that arrived after the last one read keeps the queue.
                    channel.queue_delete(self.queue, if_empty=True)
                except pika.exceptions.ChannelClosedByBroker:
                    continue
                return bodies
        finally:
            if connection.is_open:
                connection.close()

    def take_and_delete(self) -> int:
        """Take every message off the queue, then delete it (only once empty); return how many were taken in all.

        Call it while nothing publishes (the relays paused): what a deletion
        destroys is the operator's doing, so the drill reads it first.
        """
        self._taken += self._take_all()
        return len(self._taken)

    def read(self) -> list[Delivery]:
        """Take every message off the queue, in queue order (once; later calls return the same)."""
        if self._read is None:
            bodies = self._taken + self._take_all()
            self._read = [_delivery(body, i, 0) for i, body in enumerate(bodies)]
        return self._read



@dataclass
class ProxiedBroker:
    """A broker the relays reach through a fault proxy (the drill reads RabbitMQ directly, Kafka through the proxy too)."""

    sink: BrokerSink
    proxy: FaultProxy
