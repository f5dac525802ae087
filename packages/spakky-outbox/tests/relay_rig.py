"""Helpers the relay tests share: fresh messages, a relay ready to run a batch, what a transport delivered."""

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import override
from uuid import UUID, uuid4

from spakky.event.event_publisher import IAsyncEventTransport
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.ports.metrics import IOutboxMetrics
from spakky.outbox.ports.storage import IAsyncOutboxStorage
from spakky.outbox.relay.relay import AsyncOutboxRelayBackgroundService
from spakky.outbox.testing.memory import AsyncInMemoryOutboxStorage
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    RecordingEventTransport,
)


class RenewalRefusingStorage(AsyncInMemoryOutboxStorage):
    """Renewals report every claim lost, as after another relay took them over (a lapse the relay did not cause)."""

    @override
    async def renew_claims(self, message_ids: Sequence[UUID]) -> int:
        return 0


def make(key: str | None = None, name: str = "Evt", retry_count: int = 0) -> OutboxMessage:
    """A fresh message."""
    return OutboxMessage(uuid4(), name, b"{}", {}, datetime.now(UTC), partition_key=key, retry_count=retry_count)


def relay_for(
    storage: IAsyncOutboxStorage,
    transport: IAsyncEventTransport,
    cfg: OutboxConfig,
    metrics: IOutboxMetrics | None = None,
) -> AsyncOutboxRelayBackgroundService:
    """An async relay over ``storage`` and ``transport`` (reporting to ``metrics``) with a stop event, ready to run."""
    relay = AsyncOutboxRelayBackgroundService(storage, transport, cfg, metrics)
    relay.set_stop_event(asyncio.Event())
    return relay


def names(transport: AsyncRecordingEventTransport | RecordingEventTransport) -> list[str]:
    """The event names the transport delivered, in order."""
    return [d.event_name for d in transport.delivered]
