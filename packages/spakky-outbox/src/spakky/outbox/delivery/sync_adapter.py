# Sync twin generated from packages/spakky-outbox/src/spakky/outbox/delivery/async_adapter.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): 07fb489cb9705a663f9047103e083b1a84b0d65a684dcd5898053c1d25f84427
"""What every sync delivery adapter's transport shares: ``send`` queues, ``flush`` confirms.

Spakky's transport contract as both adapters keep it: ``send`` refuses when
the application is not running the transport, else turns the event into an
`OutboundRecord` and hands it to the adapter (`DeliveryAdapter._queue`),
whose answer waits in the caller's context (its task or thread) until its
next ``flush``; ``flush`` hands everything that context queued since its
previous flush to the adapter (`DeliveryAdapter._confirm`), which returns
once the broker confirmed it all or raises the relay's error (see
`spakky.outbox.delivery.batch.report`). An adapter keeps only what differs:
how a record is queued, how a batch is confirmed, and its connection.
"""

from abc import abstractmethod
from typing import override

from spakky.core.service.interfaces.service import IService
from spakky.event.error import EventTransportNotRunningError
from spakky.event.event_publisher import IEventTransport
from spakky.outbox.delivery.batch import (
    BrokerConnection,
    IBrokerConnectionSource,
    OutboundRecord,
    PendingRecords,
)
from spakky.outbox.relay.primitives import Event


class DeliveryAdapter[T](IEventTransport, IService, IBrokerConnectionSource):
    """A sync transport that queues each record (as ``T``) and confirms them per flush."""

    def __init__(self, pending_name: str, connection: BrokerConnection) -> None:
        """Not running yet; ``pending_name`` names the per-context buffer, ``connection`` the broker's state."""
        self._pending: PendingRecords[T] = PendingRecords(pending_name)
        self._connection = connection
        self._running = False

    @property
    @override
    def broker_connection(self) -> BrokerConnection:
        """The broker connection's state as the adapter last saw it (the same object for the adapter's life)."""
        return self._connection

    @override
    def set_stop_event(self, stop_event: Event) -> None:
        """Nothing to stop: publishing happens on demand."""

    @override
    def start(self) -> None:
        """Accept sends."""
        self._running = True

    @override
    def stop(self) -> None:
        """Refuse new sends."""
        self._running = False

    @override
    def send(
        self,
        event_name: str,
        payload: bytes,
        headers: dict[str, str],
        partition_key: str | None = None,
    ) -> None:
        """Queue one record for this context's next `flush`.

        Raises:
            EventTransportNotRunningError: The application is not running the transport.
            EventDeliveryRejectedError: The record is refused before it leaves (too large).
            OutboxBrokerUnavailableError: The broker could not take it (unreachable).
        """
        if not self._running:
            raise EventTransportNotRunningError
        record = OutboundRecord(event_name, payload, headers, partition_key)
        self._pending.add(self._queue(record))

    @override
    def flush(self) -> None:
        """Return once the broker confirmed every record this context sent since its last flush.

        Raises:
            OutboxDeliveryRefusedError: Some records were refused (the rest confirmed).
            OutboxBrokerUnavailableError: Some records were not confirmed (connection, timeout).
        """
        queued = self._pending.take()
        if queued:
            self._confirm(queued)

    @abstractmethod
    def _queue(self, record: OutboundRecord) -> T:
        """Hand ``record`` to the broker client (or keep it); what `flush` later confirms."""
        ...

    @abstractmethod
    def _confirm(self, queued: list[T]) -> None:
        """Return once every one of ``queued`` is confirmed; raise the relay's error otherwise."""
        ...
