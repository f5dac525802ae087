"""One kept AMQP connection and confirm-mode channel, publishing whole batches.

Every publish of a batch is in flight at once on the channel; the batch is
done when RabbitMQ confirmed (or nacked, or returned) each of them. Queues and
the exchange are declared once per connection, the way spakky-rabbitmq
declares them, and declared again when RabbitMQ returns a message as
unroutable (its queue was deleted) before that message is published once more.
A lost connection is reopened on the next batch, with backoff while the
server stays unreachable.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import cast

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, ChannelFrame
from pamqp import commands as spec
from pamqp.base import Frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from spakky.outbox.delivery.batch import (
    BrokerConnection,
    OutboundRecord,
    RecordFate,
    RecordOutcome,
)
from spakky.outbox.delivery.rabbitmq.config import RabbitMQDeliveryConfig
from spakky.outbox.error import OutboxBrokerUnavailableError
from spakky.outbox.relay.backoff import backoff_delay

logger = logging.getLogger(__name__)

PERSISTENT = 2
"""AMQP ``delivery_mode`` of a message RabbitMQ writes to disk (survives a broker restart)."""
NO_ROUTE = 312
"""``basic.return`` reply code of a mandatory message no queue takes."""
RECONNECT_BACKOFF_BASE_SECONDS = 0.1
"""First pause before reconnecting after a failed attempt; doubles up to the configured maximum."""

_CHANNEL_TROUBLE = (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError, OSError)
"""Failures of the connection or channel as a whole (never of one message)."""


def _body_frames(payload: bytes, max_size: int) -> list[ContentBody]:
    """The body frames of one message (none for an empty body), each at most ``max_size`` bytes."""
    return [ContentBody(payload[start : start + max_size]) for start in range(0, len(payload), max_size)]


def _forget(message_ids: dict[str, int], message_id: str, _: object) -> None:
    """Drop a settled message's id from the channel's return lookup."""
    message_ids.pop(message_id, None)


class RabbitMQOutbound:
    """Publishes batches with publisher confirms over one kept connection."""

    def __init__(self, config: RabbitMQDeliveryConfig, connection: BrokerConnection | None = None) -> None:
        """Prepare; nothing connects until the first batch. ``connection`` tracks the state (a new one by default)."""
        self.config = config
        self.connection = connection if connection is not None else BrokerConnection("rabbitmq", config.describe())
        self._amqp: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._declared: set[str] = set()
        self._exchange_declared = False
        self._failed_attempts = 0
        self._next_attempt = 0.0
        self._opening = asyncio.Lock()
        self._publishing = asyncio.Lock()

    async def publish(self, records: list[OutboundRecord]) -> list[RecordOutcome]:
        """Publish ``records`` (persistent, mandatory) and wait for every confirm.

        Returns the outcome of each record: confirmed; refused (nacked, or
        unroutable even after its queue was declared again); unconfirmed when
        the connection failed or the confirms did not come in time (the
        connection is then dropped and reopened for the next batch).

        Raises:
            OutboxBrokerUnavailableError: No connection could be opened.
        """
        # One batch on the channel at a time: a relay's batches in flight still overlap
        # one batch's confirms with the next one's claim, but never two batches' publishes,
        # so a queue declared again for one batch cannot appear in the middle of another
        # (whose earlier messages of a key would come back while its later ones are routed).
        async with self._publishing:
            return await self._publish_batch(records)

    async def _publish_batch(self, records: list[OutboundRecord]) -> list[RecordOutcome]:
        outcomes = [RecordOutcome(record) for record in records]
        await self._open()
        try:
            async with asyncio.timeout(self.config.confirm_timeout_seconds):
                await self._declare({o.record.event_name for o in outcomes})
                returned = await self._publish(self._live_channel(), outcomes)
                if returned:
                    # Unroutable although declared: the queue (or its binding) was deleted.
                    names = {o.record.event_name for o in returned}
                    logger.warning(
                        "RabbitMQ returned %d messages as unroutable; declaring %s again", len(returned), sorted(names)
                    )
                    self._declared -= names
                    self._exchange_declared = False
                    await self._declare(names)
                    for outcome in await self._publish(self._live_channel(), returned):
                        outcome.settle(RecordFate.REFUSED, outcome.reason)
        except (*_CHANNEL_TROUBLE, TimeoutError) as error:
            reason = f"rabbitmq: {type(error).__name__}: {error}"
            await self._drop(reason)
            for outcome in outcomes:
                if outcome.fate is RecordFate.PENDING:
                    outcome.settle(RecordFate.UNCONFIRMED, reason)
        else:
            self.connection.up()
        return outcomes

    async def _publish(self, channel: AbstractChannel, outcomes: list[RecordOutcome]) -> list[RecordOutcome]:
        """Publish every record at once; settle each by its confirm; return the unroutable ones.

        Raises:
            AMQPError: The channel or connection failed (a failure of the whole batch).
        """
        confirmations = await self._write(channel, outcomes)
        try:
            await asyncio.wait(confirmations)
        finally:
            for confirmation in confirmations:
                confirmation.cancel()
        returned: list[RecordOutcome] = []
        trouble: BaseException | None = None
        for outcome, confirmation in zip(outcomes, confirmations, strict=True):
            error = confirmation.exception() if not confirmation.cancelled() else asyncio.CancelledError()
            if error is None:
                outcome.settle(RecordFate.CONFIRMED)
            elif isinstance(error, aiormq.exceptions.PublishError):
                returned_frame = error.message.delivery
                assert isinstance(returned_frame, spec.Basic.Return)
                reason = f"rabbitmq: returned {returned_frame.reply_code} {returned_frame.reply_text}"
                outcome.settle(RecordFate.PENDING, reason)
                if returned_frame.reply_code == NO_ROUTE:
                    returned.append(outcome)
                else:
                    outcome.settle(RecordFate.REFUSED, reason)
            elif isinstance(error, aiormq.exceptions.DeliveryError):
                outcome.settle(RecordFate.REFUSED, "rabbitmq: nacked by the broker")
            else:
                trouble = trouble or error
        if trouble is not None:
            raise trouble
        return returned

    async def _write(self, channel: AbstractChannel, outcomes: list[RecordOutcome]) -> list[asyncio.Future[object]]:
        """Write every record's publish in one frame set; the confirmation future of each.

        What ``basic_publish`` does per message (a delivery tag, a confirmation
        the channel settles on ack, nack or return, a message id to match a
        return by), done for the whole batch under the channel's lock, with
        one write to the socket instead of one per message and no wait for
        each write to drain: a third of the CPU per message and 2-3x the
        confirmed rate on this machine (``docs/benchmarks.md``).

        Raises:
            ChannelInvalidStateError: The channel is closed.
        """
        if not isinstance(channel, aiormq.Channel):
            raise aiormq.exceptions.ChannelInvalidStateError(f"not an aiormq channel: {channel!r}")
        exchange = self.config.exchange_name or ""
        confirmations: list[asyncio.Future[object]] = []
        frames: list[Frame | ContentHeader | ContentBody] = []
        async with channel.lock:
            first_tag = channel.delivery_tag + 1
            for outcome in outcomes:
                record = outcome.record
                message_id = uuid.uuid4().hex
                properties = spec.Basic.Properties(
                    headers=dict(record.headers), delivery_mode=PERSISTENT, message_id=message_id
                )
                frames += (
                    spec.Basic.Publish(exchange=exchange, routing_key=record.event_name, mandatory=True),
                    ContentHeader(properties=properties, body_size=len(record.payload)),
                    *_body_frames(record.payload, channel.max_content_size),
                )
                channel.delivery_tag += 1
                confirmation = cast("asyncio.Future[object]", channel.create_future())
                channel.confirmations[channel.delivery_tag] = confirmation
                channel.message_id_delivery_tag[message_id] = channel.delivery_tag
                confirmation.add_done_callback(partial(_forget, channel.message_id_delivery_tag, message_id))
                confirmations.append(confirmation)
            try:
                await channel.write_queue.put(ChannelFrame.marshall(channel.number, frames))
            except BaseException:
                # Never written: give the tags back, or the broker's next confirms would settle the wrong futures.
                for tag in range(first_tag, channel.delivery_tag + 1):
                    channel.confirmations.pop(tag, None)
                channel.delivery_tag = first_tag - 1
                for written in confirmations:
                    written.cancel()
                raise
        return confirmations

    async def _declare(self, names: set[str]) -> None:
        """Declare the exchange and the queues not declared on this connection yet (once each).

        An existing exchange or queue is taken as it is (a passive declare
        first), whatever arguments it was made with (quorum queues, dead-letter
        exchanges); a missing one is declared as spakky-rabbitmq declares it.
        """
        exchange = self.config.exchange_name
        if exchange is not None and not self._exchange_declared:
            if not await self._exists(lambda channel: channel.exchange_declare(exchange, passive=True)):
                await self._live_channel().exchange_declare(exchange, exchange_type="direct")
            self._exchange_declared = True
        for name in sorted(names - self._declared):
            if not await self._exists(lambda channel, queue=name: channel.queue_declare(queue, passive=True)):
                await self._live_channel().queue_declare(name, durable=True)
            if exchange is not None:
                await self._live_channel().queue_bind(name, exchange, routing_key=name)
            self._declared.add(name)

    async def _exists(self, passive_declare: Callable[[AbstractChannel], Awaitable[object]]) -> bool:
        """Run a passive declare; False when RabbitMQ says the entity is missing (it closes the channel)."""
        try:
            await passive_declare(self._live_channel())
        except aiormq.exceptions.ChannelNotFoundEntity:
            await self._reopen_channel()
            return False
        return True

    def _live_channel(self) -> AbstractChannel:
        channel = self._channel
        if channel is None:
            raise aiormq.exceptions.ChannelInvalidStateError("channel closed")
        return channel

    async def _reopen_channel(self) -> None:
        amqp = self._amqp
        if amqp is None:
            raise aiormq.exceptions.ChannelInvalidStateError("connection closed")
        self._channel = await amqp.channel(publisher_confirms=True)

    async def _open(self) -> AbstractChannel:
        """The kept channel, opening the connection first when there is none.

        Raises:
            OutboxBrokerUnavailableError: RabbitMQ cannot be reached (or a
                reconnection is not due yet after a failed attempt).
        """
        async with self._opening:
            channel, amqp = self._channel, self._amqp
            if channel is not None and amqp is not None and not channel.is_closed and not amqp.is_closed:
                return channel
            await self._drop(None)
            wait = self._next_attempt - time.monotonic()
            if wait > 0:
                raise OutboxBrokerUnavailableError(
                    f"rabbitmq: reconnecting in {wait:.1f} s ({self.connection.last_error or 'unreachable'})"
                )
            try:
                async with asyncio.timeout(self.config.connect_timeout_seconds):
                    amqp = aiormq.Connection(self.config.connection_url(), context=self.config.tls_context())
                    self._amqp = amqp
                    await amqp.connect()
                    self._channel = await amqp.channel(publisher_confirms=True)
            except (*_CHANNEL_TROUBLE, RuntimeError, TimeoutError) as error:
                reason = f"{type(error).__name__}: {error}"
                await self._drop(reason)
                self._failed_attempts += 1
                self._next_attempt = time.monotonic() + backoff_delay(
                    self._failed_attempts - 1, RECONNECT_BACKOFF_BASE_SECONDS, self.config.reconnect_backoff_max_seconds
                )
                raise OutboxBrokerUnavailableError(f"rabbitmq: {self.connection.last_error}") from None
            if self._failed_attempts:
                logger.info("Reconnected to %s after %d failed attempts", self.connection.target, self._failed_attempts)
            self._failed_attempts = 0
            self._declared.clear()
            self._exchange_declared = False
            self.connection.up()
            return self._channel

    async def _drop(self, reason: str | None) -> None:
        """Close and forget the connection (after a failure: ``reason``, kept for health)."""
        amqp, self._amqp, self._channel = self._amqp, None, None
        if reason is not None:
            self.connection.down(reason)
            logger.warning("RabbitMQ connection to %s dropped: %s", self.connection.target, self.connection.last_error)
        if amqp is not None and not amqp.is_closed:
            try:
                await asyncio.wait_for(amqp.close(), 5)
            except Exception as error:  # closing a broken connection may fail in many ways
                logger.debug("Closing the RabbitMQ connection failed: %s", error)

    async def close(self) -> None:
        """Close the connection (the adapter stopped)."""
        await self._drop(None)
        self.connection.closed()
