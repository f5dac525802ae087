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
from spakky.core.service.interfaces.service import IAsyncService
from spakky.event.error import EventTransportNotRunningError
from spakky.event.event_publisher import IAsyncEventTransport
from spakky.outbox.delivery.batch import (
    BrokerConnection,
    IBrokerConnectionSource,
    IFlushScopedTransport,
    OutboundRecord,
    PendingRecords,
    RecordOutcome,
    report,
)
from spakky.outbox.delivery.kafka.config import KafkaDeliveryConfig
from spakky.outbox.delivery.kafka.producer import QUEUE_FULL_POLL_SECONDS, KafkaOutbound
from spakky.outbox.relay.primitives import AsyncEvent


@Pod()
class AsyncKafkaOutboxTransport(IAsyncEventTransport, IAsyncService, IBrokerConnectionSource, IFlushScopedTransport):
    """Kafka for the async relay: one producer, a confirmed flush per batch."""

    def __init__(self, config: KafkaDeliveryConfig) -> None:
        """Prepare the producer; it connects when the application starts."""
        self.outbound = KafkaOutbound(config)
        self._pending: PendingRecords[RecordOutcome] = PendingRecords("spakky_outbox_kafka_pending")
        self._running = False

    @property
    @override
    def broker_connection(self) -> BrokerConnection:
        """The producer's connection state (librdkafka's reports and the delivery reports)."""
        return self.outbound.connection

    @override
    def set_stop_event(self, stop_event: AsyncEvent) -> None:
        """Nothing to stop: publishing happens on demand."""

    @override
    async def start_async(self) -> None:
        """Open the producer (it connects in the background; sends may start at once)."""
        await self.outbound.open_async()
        self._running = True

    @override
    async def stop_async(self) -> None:
        """Refuse new sends, deliver what is queued, close the producer."""
        self._running = False
        await self.outbound.close_async()

    @override
    async def send(
        self,
        event_name: str,
        payload: bytes,
        headers: dict[str, str],
        partition_key: str | None = None,
    ) -> None:
        """Queue one record for the next `flush` (creating its topic first, once).

        Raises:
            EventTransportNotRunningError: The application is not running the transport.
            EventDeliveryRejectedError: The record is refused before it leaves (too large).
            OutboxBrokerUnavailableError: The topic could not be created (brokers unreachable).
        """
        if not self._running:
            raise EventTransportNotRunningError
        outbound = self.outbound
        if not outbound.knows_topic(event_name):
            await outbound.ensure_topic_async(event_name)
        record = OutboundRecord(event_name, payload, headers, partition_key)
        while (outcome := outbound.produce(record)) is None:
            await outbound.serve_async(QUEUE_FULL_POLL_SECONDS)
        self._pending.add(outcome)

    @override
    async def flush(self) -> None:
        """Return once the brokers acknowledged every record this task sent since its last flush.

        Raises:
            OutboxDeliveryRefusedError: Some records were refused (the rest confirmed).
            OutboxBrokerUnavailableError: Some records were not confirmed in time.
        """
        outcomes = self._pending.take()
        if not outcomes:
            return
        await self.outbound.flush_async()
        report(outcomes, "kafka")
