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
from spakky.outbox.delivery.async_adapter import AsyncDeliveryAdapter
from spakky.outbox.delivery.batch import (
    BrokerConnection,
    IFlushScopedTransport,
    OutboundRecord,
    report,
)
from spakky.outbox.delivery.rabbitmq.config import RabbitMQDeliveryConfig
from spakky.outbox.delivery.rabbitmq.publisher import RabbitMQOutbound
from spakky.outbox.delivery.sync_adapter import DeliveryAdapter
from spakky.outbox.error import OutboxBrokerUnavailableError

_CALL_GRACE_SECONDS = 5.0
"""Beyond the connect and confirm timeouts, how long the sync transport waits for its loop."""


@Pod()
class AsyncRabbitMQOutboxTransport(AsyncDeliveryAdapter[OutboundRecord], IFlushScopedTransport):
    """RabbitMQ for the async relay: one channel with publisher confirms, a confirmed flush per batch."""

    def __init__(self, config: RabbitMQDeliveryConfig) -> None:
        """Prepare; the connection opens with the first batch (a broker down at start is an outage, not a crash)."""
        self.outbound = RabbitMQOutbound(config)
        super().__init__("spakky_outbox_rabbitmq_async_pending", self.outbound.connection)

    @override
    async def stop_async(self) -> None:
        """Refuse new sends and close the connection."""
        await super().stop_async()
        await self.outbound.close()

    @override
    async def _queue(self, record: OutboundRecord) -> OutboundRecord:
        """Keep ``record`` for the next flush (RabbitMQ has no partitions: one queue is FIFO)."""
        return record

    @override
    async def _confirm(self, queued: list[OutboundRecord]) -> None:
        """Publish ``queued`` on the kept channel; return once RabbitMQ confirmed it all."""
        report(await self.outbound.publish(queued), "rabbitmq")


@Pod()
class RabbitMQOutboxTransport(DeliveryAdapter[OutboundRecord]):
    """RabbitMQ for the sync relay: the async publisher on a loop thread of its own."""

    def __init__(self, config: RabbitMQDeliveryConfig) -> None:
        """Prepare; the loop thread starts and the connection opens with the first batch."""
        super().__init__("spakky_outbox_rabbitmq_pending", BrokerConnection("rabbitmq", config.describe()))
        self._config = config
        self._outbound: RabbitMQOutbound | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

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
                self._outbound = RabbitMQOutbound(self._config, self.broker_connection)
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
    def stop(self) -> None:
        """Refuse new sends, close the connection and end the loop thread."""
        super().stop()
        loop, thread, outbound = self._loop, self._thread, self._outbound
        if loop is None or thread is None or outbound is None:
            return
        self._call(outbound.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_CALL_GRACE_SECONDS)
        loop.close()
        self._loop = self._thread = self._outbound = None

    @override
    def _queue(self, record: OutboundRecord) -> OutboundRecord:
        """Keep ``record`` for the next flush."""
        return record

    @override
    def _confirm(self, queued: list[OutboundRecord]) -> None:
        """Publish ``queued`` on the loop thread; return once RabbitMQ confirmed it all."""
        report(self._call(self.outbound.publish(queued)), "rabbitmq")
