"""The Kafka producer both transports share: records, topics, outcomes.

I/O happens in librdkafka's own threads; what is left here blocks only where
librdkafka blocks (opening, creating a topic, flushing, closing). Each of those
has an ``_async`` twin that runs it in a worker thread, which the async
transport calls; queueing a record never blocks, so both flavours call
`KafkaOutbound.produce` directly.
"""

import asyncio
import logging
import threading

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from spakky.event.error import EventDeliveryRejectedError
from spakky.outbox.delivery.batch import (
    BrokerConnection,
    OutboundRecord,
    RecordFate,
    RecordOutcome,
)
from spakky.outbox.delivery.kafka.config import KafkaDeliveryConfig
from spakky.outbox.error import OutboxBrokerUnavailableError

logger = logging.getLogger(__name__)

REFUSALS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_TIMESTAMP,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError.POLICY_VIOLATION,
})
"""Errors that belong to one record (its size, content or topic name): a refusal, spending its budget."""
TOPIC_GONE = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION})
"""Errors that say the topic does not exist (any more): it is created again before the retry."""
FENCED = frozenset({KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})
"""Errors after which this producer delivers nothing more: fenced after the epoch bump librdkafka makes
when records time out (Tansu fences it for good). A new producer (a new producer id) is made for the next batch."""
BROKER_DOWN = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._AUTHENTICATION})
"""Client errors that mean the brokers cannot be reached (for the health state)."""
QUEUE_FULL_POLL_SECONDS = 0.1
"""How long to serve delivery reports when the local queue is full, before trying again."""


class KafkaOutbound:
    """One idempotent producer, the topics it knows exist, and the outcome of every record it took."""

    def __init__(self, config: KafkaDeliveryConfig) -> None:
        """Prepare; nothing connects until `open`."""
        self.config = config
        self.connection = BrokerConnection("kafka", config.describe())
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._topics: set[str] = set()
        self._lock = threading.Lock()

    @property
    def producer(self) -> Producer:
        """The running producer, opened on first use (and again after a fatal error).

        Raises:
            OutboxBrokerUnavailableError: librdkafka refused the settings.
        """
        producer = self._producer
        if producer is None:
            with self._lock:
                if self._producer is None:
                    self._producer = self._new_producer()
                producer = self._producer
        return producer

    def _new_producer(self) -> Producer:
        settings = self.config.producer_settings() | {"error_cb": self._on_client_error}
        try:
            return Producer(settings, logger=logger)
        except KafkaException as error:
            raise OutboxBrokerUnavailableError(f"kafka producer: {error}") from None

    def _on_client_error(self, error: KafkaError) -> None:
        """Librdkafka's own reports: brokers down, authentication failed, fatal producer state."""
        if error.fatal():
            logger.error("Kafka producer failed fatally (a new one is made for the next batch): %s", error)
            self._producer = None
        if error.fatal() or error.code() in BROKER_DOWN:
            self.connection.down(str(error))

    def open(self) -> None:
        """Create the producer now (it connects in the background)."""
        _ = self.producer

    async def open_async(self) -> None:
        """`open` in a worker thread."""
        await asyncio.to_thread(self.open)

    def close(self) -> None:
        """Deliver what is still queued (up to the confirm timeout), then drop the producer."""
        producer, self._producer = self._producer, None
        if producer is not None:
            left = producer.flush(self.config.confirm_timeout_seconds)
            if left:
                logger.error("Kafka producer closed with %d records unconfirmed", left)
        self.connection.closed()

    async def close_async(self) -> None:
        """`close` in a worker thread."""
        await asyncio.to_thread(self.close)

    def knows_topic(self, topic: str) -> bool:
        """Whether ``topic`` needs no creation check (it was created or seen, or creation is off)."""
        return not self.config.create_topics or topic in self._topics

    def ensure_topic(self, topic: str) -> None:
        """Create ``topic`` unless it exists; remember it (blocking: one admin round trip).

        Raises:
            EventDeliveryRejectedError: The broker refuses the topic name.
            OutboxBrokerUnavailableError: The brokers did not answer.
        """
        if self._admin is None:
            self._admin = AdminClient(self.config.connection_settings(), logger=logger)
        new = NewTopic(
            topic,
            num_partitions=self.config.topic_partitions,
            replication_factor=self.config.topic_replication_factor,
        )
        timeout = self.config.confirm_timeout_seconds
        try:
            self._admin.create_topics([new], request_timeout=timeout)[topic].result(timeout)
        except KafkaException as error:
            code = error.args[0].code() if error.args and isinstance(error.args[0], KafkaError) else None
            if code == KafkaError.TOPIC_EXCEPTION:
                raise EventDeliveryRejectedError([f"kafka topic {topic!r}: {error}"]) from None
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                self.connection.down(str(error))
                raise OutboxBrokerUnavailableError(f"kafka: could not create topic {topic!r}: {error}") from None
        except Exception as error:  # the future's timeout, or the admin client's own failure
            self.connection.down(str(error))
            raise OutboxBrokerUnavailableError(f"kafka: could not create topic {topic!r}: {error}") from None
        self._topics.add(topic)

    async def ensure_topic_async(self, topic: str) -> None:
        """`ensure_topic` in a worker thread."""
        await asyncio.to_thread(self.ensure_topic, topic)

    def produce(self, record: OutboundRecord) -> RecordOutcome | None:
        """Queue ``record`` in the producer; None when its local queue is full (serve reports, retry).

        Raises:
            EventDeliveryRejectedError: The record is refused before it leaves (too large).
        """
        outcome = RecordOutcome(record)
        headers: dict[str, str | bytes | None] = dict(record.headers)
        try:
            self.producer.produce(
                record.event_name,
                record.payload,
                record.partition_key.encode() if record.partition_key is not None else None,
                headers=headers,
                on_delivery=lambda error, message: self._on_delivery(outcome, error, message),
            )
        except BufferError:
            return None
        except KafkaException as error:
            kafka_error = error.args[0] if error.args and isinstance(error.args[0], KafkaError) else None
            if kafka_error is not None and kafka_error.code() in REFUSALS:
                raise EventDeliveryRejectedError([f"kafka: {kafka_error}"]) from None
            raise OutboxBrokerUnavailableError(f"kafka: {error}") from None
        return outcome

    def serve(self, timeout: float) -> None:
        """Serve delivery reports for up to ``timeout`` (the local queue was full)."""
        self.producer.poll(timeout)

    async def serve_async(self, timeout: float) -> None:
        """`serve` in a worker thread."""
        await asyncio.to_thread(self.serve, timeout)

    def _on_delivery(self, outcome: RecordOutcome, error: KafkaError | None, message: Message) -> None:
        """Librdkafka's report on one record (called from flush or poll)."""
        if error is None:
            outcome.settle(RecordFate.CONFIRMED)
            self.connection.up()
            return
        code = error.code()
        if code in REFUSALS:
            outcome.settle(RecordFate.REFUSED, f"kafka: {error.str()}")
            return
        if code in TOPIC_GONE:
            self._topics.discard(outcome.record.event_name)
        if code in FENCED and self._producer is not None:
            logger.warning("Kafka producer fenced (a new one is made for the next batch): %s", error.str())
            self._producer = None
        outcome.settle(RecordFate.UNCONFIRMED, f"kafka: {error.str()}")

    def flush(self) -> None:
        """Wait for the brokers' reports on everything queued (blocking, up to the confirm timeout)."""
        producer = self.producer
        left = producer.flush(self.config.confirm_timeout_seconds)
        if left:
            # Unconfirmed in time: take them out of the queue so they are not sent after the
            # relay released the batch (their reports come as unconfirmed purges).
            producer.purge(in_queue=True, in_flight=False)
            producer.poll(0)

    async def flush_async(self) -> None:
        """`flush` in a worker thread."""
        await asyncio.to_thread(self.flush)
