"""RabbitMQ delivery transports: Spakky's `IAsyncEventTransport` / `IEventTransport` on aiormq.

``send`` queues a message; ``flush`` publishes every message the caller sent
since its previous flush on one kept confirm-mode channel, all in flight at
once, and returns when RabbitMQ confirmed each (see `RabbitMQOutbound`). A
nacked or unroutable message is refused alone; a lost connection makes the
batch an outage, retried by the relay on a new connection.

The sync transport runs the same publisher on an event loop of its own, in a
thread it starts on first use, so both flavours publish alike.
"""

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, override

from spakky.core.pod.annotations.pod import Pod
from spakky.core.service.interfaces.service import IAsyncService, IService
from spakky.event.error import EventTransportNotRunningError
from spakky.event.event_publisher import IAsyncEventTransport, IEventTransport
from spakky.outbox.delivery.batch import (
    BrokerConnection,
    IBrokerConnectionSource,
    OutboundRecord,
    PendingRecords,
    report,
)
from spakky.outbox.delivery.rabbitmq.config import RabbitMQDeliveryConfig
from spakky.outbox.delivery.rabbitmq.publisher import RabbitMQOutbound
from spakky.outbox.error import OutboxBrokerUnavailableError

_CALL_GRACE_SECONDS = 5.0
"""Beyond the connect and confirm timeouts, how long the sync transport waits for its loop."""


@Pod()
class AsyncRabbitMQOutboxTransport(IAsyncEventTransport, IAsyncService, IBrokerConnectionSource):
    """RabbitMQ for the async relay: one channel with publisher confirms, a confirmed flush per batch."""

    def __init__(self, config: RabbitMQDeliveryConfig) -> None:
        """Prepare; the connection opens with the first batch."""
        self.outbound = RabbitMQOutbound(config)
        self._pending: PendingRecords[OutboundRecord] = PendingRecords("spakky_outbox_rabbitmq_async_pending")
        self._running = False

    @property
    @override
    def broker_connection(self) -> BrokerConnection:
        """The kept connection's state."""
        return self.outbound.connection

    @override
    def set_stop_event(self, stop_event: asyncio.Event) -> None:
        """Nothing to stop: publishing happens on demand."""

    @override
    async def start_async(self) -> None:
        """Accept sends; the connection opens with the first batch (a broker down at start is an outage, not a crash)."""
        self._running = True

    @override
    async def stop_async(self) -> None:
        """Refuse new sends and close the connection."""
        self._running = False
        await self.outbound.close()

    @override
    async def send(
        self,
        event_name: str,
        payload: bytes,
        headers: dict[str, str],
        partition_key: str | None = None,
    ) -> None:
        """Queue one message for the next `flush` (RabbitMQ has no partitions: one queue is FIFO).

        Raises:
            EventTransportNotRunningError: The application is not running the transport.
        """
        if not self._running:
            raise EventTransportNotRunningError
        self._pending.add(OutboundRecord(event_name, payload, headers, partition_key))

    @override
    async def flush(self) -> None:
        """Publish what this task sent since its last flush; return once RabbitMQ confirmed it all.

        Raises:
            OutboxDeliveryRefusedError: Some messages were nacked or unroutable (the rest confirmed).
            OutboxBrokerUnavailableError: RabbitMQ could not be reached or did not confirm in time.
        """
        records = self._pending.take()
        if records:
            report(await self.outbound.publish(records), "rabbitmq")


@Pod()
class RabbitMQOutboxTransport(IEventTransport, IService, IBrokerConnectionSource):
    """RabbitMQ for the sync relay: the async publisher on a loop thread of its own."""

    def __init__(self, config: RabbitMQDeliveryConfig) -> None:
        """Prepare; the loop thread starts and the connection opens with the first batch."""
        self._config = config
        self._connection = BrokerConnection("rabbitmq", config.describe())
        self._outbound: RabbitMQOutbound | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending: PendingRecords[OutboundRecord] = PendingRecords("spakky_outbox_rabbitmq_pending")
        self._running = False

    @property
    @override
    def broker_connection(self) -> BrokerConnection:
        """The kept connection's state (the same object across the publisher's restarts)."""
        return self._connection

    @property
    def outbound(self) -> RabbitMQOutbound:
        """The publisher, created on the loop thread at first use."""
        self._started_loop()
        assert self._outbound is not None
        return self._outbound

    def _started_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="outbox-rabbitmq", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
                self._outbound = RabbitMQOutbound(self._config, self._connection)
            return self._loop

    def _call[T](self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop thread and wait for it.

        Raises:
            OutboxBrokerUnavailableError: The loop did not finish it within the
                connect and confirm timeouts.
        """
        timeout = self._config.connect_timeout_seconds + self._config.confirm_timeout_seconds + _CALL_GRACE_SECONDS
        future = asyncio.run_coroutine_threadsafe(coroutine, self._started_loop())
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise OutboxBrokerUnavailableError(f"rabbitmq: no answer within {timeout:g} s") from None

    @override
    def set_stop_event(self, stop_event: threading.Event) -> None:
        """Nothing to stop: publishing happens on demand."""

    @override
    def start(self) -> None:
        """Accept sends; the loop thread and the connection start with the first batch."""
        self._running = True

    @override
    def stop(self) -> None:
        """Refuse new sends, close the connection and end the loop thread."""
        self._running = False
        loop, thread, outbound = self._loop, self._thread, self._outbound
        if loop is None or thread is None or outbound is None:
            return
        self._call(outbound.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_CALL_GRACE_SECONDS)
        loop.close()
        self._loop = self._thread = self._outbound = None

    @override
    def send(
        self,
        event_name: str,
        payload: bytes,
        headers: dict[str, str],
        partition_key: str | None = None,
    ) -> None:
        """Queue one message for the next `flush`.

        Raises:
            EventTransportNotRunningError: The application is not running the transport.
        """
        if not self._running:
            raise EventTransportNotRunningError
        self._pending.add(OutboundRecord(event_name, payload, headers, partition_key))

    @override
    def flush(self) -> None:
        """Publish what this thread sent since its last flush; return once RabbitMQ confirmed it all.

        Raises:
            OutboxDeliveryRefusedError: Some messages were nacked or unroutable (the rest confirmed).
            OutboxBrokerUnavailableError: RabbitMQ could not be reached or did not confirm in time.
        """
        records = self._pending.take()
        if records:
            report(self._call(self.outbound.publish(records)), "rabbitmq")
