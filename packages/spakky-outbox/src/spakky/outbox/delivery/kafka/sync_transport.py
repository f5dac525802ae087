# Sync twin generated from packages/spakky-outbox/src/spakky/outbox/delivery/kafka/async_transport.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): 2c36d22f3038fd2caf4860e96f66f252868250514e37eacab4a453d6ac433566
"""Kafka delivery for the sync relay: Spakky's `IEventTransport` on confluent-kafka.

``send`` queues a record in one long-lived idempotent producer (``acks=all``)
and returns; ``flush`` waits until the brokers acknowledged every record the
caller sent since its previous flush, then reports them (see
`spakky.outbox.delivery.batch`). The record is what spakky-kafka produces:
topic = event name, key = partition key, value = payload, the event's headers.
A topic is created once per process before its first record (with the
configured partitions), never checked per send. Queueing a record never
blocks; what does (opening, topic creation, the flush) goes through `KafkaOutbound`.
"""

from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.delivery.batch import (
    IFlushScopedTransport,
    OutboundRecord,
    RecordOutcome,
    report,
)
from spakky.outbox.delivery.kafka.config import KafkaDeliveryConfig
from spakky.outbox.delivery.kafka.producer import QUEUE_FULL_POLL_SECONDS, KafkaOutbound
from spakky.outbox.delivery.sync_adapter import DeliveryAdapter


@Pod()
class KafkaOutboxTransport(DeliveryAdapter[RecordOutcome], IFlushScopedTransport):
    """Kafka for the sync relay: one producer, a confirmed flush per batch."""

    def __init__(self, config: KafkaDeliveryConfig) -> None:
        """Prepare the producer; it connects when the application starts."""
        self.outbound = KafkaOutbound(config)
        super().__init__("spakky_outbox_kafka_pending", self.outbound.connection)

    @override
    def start(self) -> None:
        """Open the producer (it connects in the background; sends may start at once)."""
        self.outbound.open()
        super().start()

    @override
    def stop(self) -> None:
        """Refuse new sends, deliver what is queued, close the producer."""
        super().stop()
        self.outbound.close()

    @override
    def _queue(self, record: OutboundRecord) -> RecordOutcome:
        """Queue ``record`` in the producer (creating its topic first, once).

        Raises:
            EventDeliveryRejectedError: The record is refused before it leaves (too large).
            OutboxBrokerUnavailableError: The topic could not be created (brokers unreachable).
        """
        outbound = self.outbound
        if not outbound.knows_topic(record.event_name):
            outbound.ensure_topic(record.event_name)
        while (outcome := outbound.produce(record)) is None:
            outbound.serve(QUEUE_FULL_POLL_SECONDS)
        return outcome

    @override
    def _confirm(self, queued: list[RecordOutcome]) -> None:
        """Wait for the brokers' reports on ``queued``, then report them."""
        self.outbound.flush()
        report(queued, "kafka")
