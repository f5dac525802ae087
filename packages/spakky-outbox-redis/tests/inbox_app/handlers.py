"""Consumers of ``PaymentReceived`` writing Redis business keys: transactional, lease and sync handlers."""

from spakky.core.common.mutability import immutable
from spakky.data.aspects.transactional import Transactional
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.event.stereotype.event_handler import EventHandler, on_event
from spakky.outbox.inbox import Idempotent, InboxMode
from spakky.plugins.outbox_redis.codec import RedisKeys
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.transaction import (
    current_async_pipeline,
    current_pipeline,
)


@immutable
class PaymentReceived(AbstractIntegrationEvent):
    """A payment arrived for an order; ``fail`` makes every handler raise after its write."""

    order_id: str
    fail: bool = False


class HandlerFailedError(Exception):
    """Raised by a handler asked to fail."""


@EventHandler()
class Payments:
    """Books each payment once: a booking pushed in the handler's MULTI/EXEC, in the outbox's slot."""

    def __init__(self, config: RedisOutboxConfig) -> None:
        """Write business keys under the outbox's prefix."""
        self.keys = RedisKeys(config.key_prefix)
        self.runs = 0

    @Transactional()
    @Idempotent()
    @on_event(PaymentReceived)
    async def book(self, event: PaymentReceived) -> None:
        """Push the run number on the order's bookings; raise after it when asked to fail."""
        self.runs += 1
        await current_async_pipeline().rpush(self.keys.business(f"bookings:{event.order_id}"), self.runs)
        if event.fail:
            raise HandlerFailedError(event.order_id)


@EventHandler()
class Receipts:
    """Sends a receipt (an effect outside the database): lease mode."""

    def __init__(self) -> None:
        """Count the receipts sent."""
        self.sent: list[str] = []

    @Idempotent(mode=InboxMode.LEASE, lease_seconds=30)
    @on_event(PaymentReceived)
    async def send(self, event: PaymentReceived) -> None:
        """Send the receipt; raise before sending when asked to fail."""
        if event.fail:
            raise HandlerFailedError(event.order_id)
        self.sent.append(event.order_id)


@EventHandler()
class SyncPayments:
    """The sync flavour: a plain method, the sync transaction and inbox."""

    def __init__(self, config: RedisOutboxConfig) -> None:
        """Write business keys under the outbox's prefix."""
        self.keys = RedisKeys(config.key_prefix)

    @Transactional()
    @Idempotent(consumer="sync-book")
    @on_event(PaymentReceived)
    def book(self, event: PaymentReceived) -> None:
        """Push a sync booking."""
        current_pipeline().rpush(self.keys.business(f"sync-bookings:{event.order_id}"), 0)
