"""The async outbox event bus: replaces IAsyncEventBus via @Primary."""

from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.core.pod.annotations.primary import Primary
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.event.auth_propagation import AuthContextSnapshotHeaderInjector
from spakky.event.event_publisher import IAsyncEventBus
from spakky.outbox.bus.message_factory import OutboxMessageFactory, missing_storage
from spakky.outbox.common.config import RelayMode
from spakky.outbox.ports.storage import IAsyncOutboxStorage
from spakky.outbox.ports.tracing import IOutboxTracer
from spakky.tracing.propagator import ITracePropagator


@Primary()
@Pod()
class AsyncOutboxEventBus(IAsyncEventBus):
    """Stores integration events in the outbox, in the caller's transaction (async)."""

    _storage: IAsyncOutboxStorage | None
    _factory: OutboxMessageFactory

    def __init__(
        self,
        storage: IAsyncOutboxStorage | None,
        propagator: ITracePropagator,
        auth_snapshot_headers: AuthContextSnapshotHeaderInjector | None = None,
        tracer: IOutboxTracer | None = None,
    ) -> None:
        """Wire the storage (None: only the other flavour exists), the header policy and the tracer."""
        self._storage = storage
        self._factory = OutboxMessageFactory(propagator, auth_snapshot_headers, tracer)

    @override
    async def send(self, event: AbstractIntegrationEvent) -> None:
        """Serialise the event and save it; the relay delivers it after commit.

        Raises:
            OutboxStorageFlavourMissingError: No storage of this flavour is
                registered (only the other one).
        """
        if self._storage is None:
            raise missing_storage(event.event_name, RelayMode.ASYNC)
        message = self._factory.build(event)
        with self._factory.storing(message):
            await self._storage.save(message)
