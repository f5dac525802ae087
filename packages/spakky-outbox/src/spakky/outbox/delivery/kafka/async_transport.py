"""Kafka delivery for the async relay: Spakky's `IAsyncEventTransport` on confluent-kafka.

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
from spakky.outbox.delivery.async_adapter import AsyncDeliveryAdapter
from spakky.outbox.delivery.batch import (
    IFlushScopedTransport,
    OutboundRecord,
    RecordOutcome,
    report,
)
from spakky.outbox.delivery.kafka.config import KafkaDeliveryConfig
from spakky.outbox.delivery.kafka.producer import QUEUE_FULL_POLL_SECONDS, KafkaOutbound


@Pod()
class AsyncKafkaOutboxTransport(AsyncDeliveryAdapter[RecordOutcome], IFlushScopedTransport):
    """Kafka for the async relay: one producer, a confirmed flush per batch."""

    def __init__(self, config: KafkaDeliveryConfig) -> None:
        """Prepare the producer; it connects when the application starts."""
        self.outbound = KafkaOutbound(config)
        super().__init__("spakky_outbox_kafka_pending", self.outbound.connection)

    @override
    async def start_async(self) -> None:
        """Open the producer (it connects in the background; sends may start at once)."""
        await self.outbound.open_async()
        await super().start_async()

    @override
    async def stop_async(self) -> None:
        """Refuse new sends, deliver what is queued, close the producer."""
        await super().stop_async()
        await self.outbound.close_async()

    @override
    async def _queue(self, record: OutboundRecord) -> RecordOutcome:
        """Queue ``record`` in the producer (creating its topic first, once).

        Raises:
            EventDeliveryRejectedError: The record is refused before it leaves (too large).
            OutboxBrokerUnavailableError: The topic could not be created (brokers unreachable).
        """
        outbound = self.outbound
        if not outbound.knows_topic(record.event_name):
            await outbound.ensure_topic_async(record.event_name)
        while (outcome := outbound.produce(record)) is None:
            await outbound.serve_async(QUEUE_FULL_POLL_SECONDS)
        return outcome

    @override
    async def _confirm(self, queued: list[RecordOutcome]) -> None:
        """Wait for the brokers' reports on ``queued``, then report them."""
        await self.outbound.flush_async()
        report(queued, "kafka")
