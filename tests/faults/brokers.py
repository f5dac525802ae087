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
from typing import Protocol

from tests.faults.proxy import FaultProxy
from tests.faults.sink import Delivery

TRANSPORT_ENV = "FAULT_TRANSPORT"
"""Which spakky plugin's transport a worker loads instead of the file sink (``spakky-kafka``, ``spakky-rabbitmq``)."""
KAFKA_IDEMPOTENCE_OFF_ENV = "FAULT_KAFKA_IDEMPOTENCE_OFF"
"""Set: spakky-kafka's aiokafka producer runs with idempotence off (Tansu refuses its InitProducerId v0)."""


class BrokerSink(Protocol):
    """Where the drill relays deliver, as the drill reads it."""

    name: str
    """``kafka`` or ``rabbitmq``."""

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
    """One topic on a Kafka-protocol broker (Tansu here), created up front with ``partitions``."""

    bootstrap: str
    topic: str
    partitions: int = 4
    tansu: bool = True
    name: str = "kafka"
    _reader: object = field(default=None, repr=False)
    _records: list[tuple[int, int, bytes]] = field(default_factory=list[tuple[int, int, bytes]], repr=False)

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

    def _consumer(self) -> object:
        """The reader: every partition assigned from offset 0 (created on first use)."""
        from confluent_kafka import Consumer, TopicPartition

        if self._reader is None:
            reader = Consumer({
                "bootstrap.servers": self.bootstrap,
                "group.id": f"drill-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            })
            reader.assign([TopicPartition(self.topic, p, 0) for p in range(self.partitions)])
            self._reader = reader
        return self._reader

    def count(self) -> int:
        """Records read from the topic so far (what is readable now is read first)."""
        from confluent_kafka import Consumer

        consumer = self._consumer()
        assert isinstance(consumer, Consumer)
        while batch := consumer.consume(1000, 0.05):
            for message in batch:
                value = message.value()
                if message.error() is None and value is not None:
                    self._records.append((message.partition() or 0, message.offset() or 0, value))
        return len(self._records)

    def read(self) -> list[Delivery]:
        """Every record of every partition, partition by partition in offset order."""
        from confluent_kafka import Consumer

        deadline = time.monotonic() + 5
        seen = self.count()
        while time.monotonic() < deadline:  # nothing more arrives: the relays have stopped
            time.sleep(0.2)
            if self.count() == seen:
                break
            seen = len(self._records)
        consumer = self._consumer()
        assert isinstance(consumer, Consumer)
        consumer.close()
        self._reader = None
        records = sorted(self._records)
        return [_delivery(value, i, partition) for i, (partition, _, value) in enumerate(records)]


@dataclass
class RabbitMQSink:
    """One durable queue on a RabbitMQ server (the default exchange routes to it by name)."""

    url: str
    queue: str
    name: str = "rabbitmq"
    relay_url: str | None = None
    """Where the relays connect (a fault proxy's URL); None: `url`, which the drill reads from."""
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
