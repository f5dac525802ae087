# Sync twin generated from packages/spakky-outbox/src/spakky/outbox/delivery/kafka/async_transport.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): 04bbd1842087ab4b4fa3d9f6ec9eca82cfdf5fac04d0d60fe28062c9128dd2a9
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
from spakky.core.service.interfaces.service import IService
from spakky.event.error import EventTransportNotRunningError
from spakky.event.event_publisher import IEventTransport
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
from spakky.outbox.relay.primitives import Event


@Pod()
class KafkaOutboxTransport(IEventTransport, IService, IBrokerConnectionSource, IFlushScopedTransport):
    """Kafka for the sync relay: one producer, a confirmed flush per batch."""

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
    def set_stop_event(self, stop_event: Event) -> None:
        """Nothing to stop: publishing happens on demand."""

    @override
    def start(self) -> None:
        """Open the producer (it connects in the background; sends may start at once)."""
        self.outbound.open()
        self._running = True

    @override
    def stop(self) -> None:
        """Refuse new sends, deliver what is queued, close the producer."""
        self._running = False
        self.outbound.close()

    @override
    def send(
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
            outbound.ensure_topic(event_name)
        record = OutboundRecord(event_name, payload, headers, partition_key)
        while (outcome := outbound.produce(record)) is None:
            outbound.serve(QUEUE_FULL_POLL_SECONDS)
        self._pending.add(outcome)

    @override
    def flush(self) -> None:
        """Return once the brokers acknowledged every record this task sent since its last flush.

        Raises:
            OutboxDeliveryRefusedError: Some records were refused (the rest confirmed).
            OutboxBrokerUnavailableError: Some records were not confirmed in time.
        """
        outcomes = self._pending.take()
        if not outcomes:
            return
        self.outbound.flush()
        report(outcomes, "kafka")
