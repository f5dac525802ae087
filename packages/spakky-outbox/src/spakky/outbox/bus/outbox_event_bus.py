"""Outbox event buses (sync and async) that replace IEventBus/IAsyncEventBus via @Primary."""

from datetime import UTC, datetime
from typing import override
from uuid import uuid4

from spakky.core.pod.annotations.pod import Pod
from spakky.core.pod.annotations.primary import Primary
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.event.auth_propagation import AuthContextSnapshotHeaderInjector
from spakky.event.event_publisher import IAsyncEventBus, IEventBus
from spakky.outbox.bus.serializer import IntegrationEventSerializer
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.ports.storage import IAsyncOutboxStorage, IOutboxStorage
from spakky.tracing.propagator import ITracePropagator


class _OutboxMessageFactory:
    """Builds outbox messages: payload, trace and auth headers, partition key."""

    def __init__(
        self,
        propagator: ITracePropagator,
        auth_snapshot_headers: AuthContextSnapshotHeaderInjector | None,
    ) -> None:
        self._serializer = IntegrationEventSerializer()
        self._propagator = propagator
        self._auth_snapshot_headers = (
            auth_snapshot_headers or AuthContextSnapshotHeaderInjector()
        )

    def build(self, event: AbstractIntegrationEvent) -> OutboxMessage:
        payload = self._serializer.serialize(event)
        headers: dict[str, str] = {}
        self._propagator.inject(headers)
        self._auth_snapshot_headers.inject(headers)
        return OutboxMessage(
            id=uuid4(),
            event_name=event.event_name,
            payload=payload,
            headers=headers,
            created_at=datetime.now(UTC),
            partition_key=event.partition_key,
        )


@Primary()
@Pod()
class OutboxEventBus(IEventBus):
    """Stores integration events in the outbox, in the caller's transaction (sync)."""

    _storage: IOutboxStorage
    _factory: _OutboxMessageFactory

    def __init__(
        self,
        storage: IOutboxStorage,
        propagator: ITracePropagator,
        auth_snapshot_headers: AuthContextSnapshotHeaderInjector | None = None,
    ) -> None:
        """Wire the storage and the outbound header policy."""
        self._storage = storage
        self._factory = _OutboxMessageFactory(propagator, auth_snapshot_headers)

    @override
    def send(self, event: AbstractIntegrationEvent) -> None:
        """Serialise the event and save it; the relay delivers it after commit."""
        self._storage.save(self._factory.build(event))


@Primary()
@Pod()
class AsyncOutboxEventBus(IAsyncEventBus):
    """Stores integration events in the outbox, in the caller's transaction (async)."""

    _storage: IAsyncOutboxStorage
    _factory: _OutboxMessageFactory

    def __init__(
        self,
        storage: IAsyncOutboxStorage,
        propagator: ITracePropagator,
        auth_snapshot_headers: AuthContextSnapshotHeaderInjector | None = None,
    ) -> None:
        """Wire the storage and the outbound header policy."""
        self._storage = storage
        self._factory = _OutboxMessageFactory(propagator, auth_snapshot_headers)

    @override
    async def send(self, event: AbstractIntegrationEvent) -> None:
        """Serialise the event and save it; the relay delivers it after commit."""
        await self._storage.save(self._factory.build(event))
