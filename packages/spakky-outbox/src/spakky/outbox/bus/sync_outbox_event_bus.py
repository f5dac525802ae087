# Sync twin generated from packages/spakky-outbox/src/spakky/outbox/bus/async_outbox_event_bus.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): 0e225e3ce92b29f7cdaf3aac02ce2a142e8f9994f84ba50bf5c44b770e902aae
"""The sync outbox event bus: replaces IEventBus via @Primary."""

from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.core.pod.annotations.primary import Primary
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.event.auth_propagation import AuthContextSnapshotHeaderInjector
from spakky.event.event_publisher import IEventBus
from spakky.outbox.bus.message_factory import OutboxMessageFactory, missing_storage
from spakky.outbox.common.config import RelayMode
from spakky.outbox.ports.storage import IOutboxStorage
from spakky.outbox.ports.tracing import IOutboxTracer
from spakky.tracing.propagator import ITracePropagator


@Primary()
@Pod()
class OutboxEventBus(IEventBus):
    """Stores integration events in the outbox, in the caller's transaction (sync)."""

    _storage: IOutboxStorage | None
    _factory: OutboxMessageFactory

    def __init__(
        self,
        storage: IOutboxStorage | None,
        propagator: ITracePropagator,
        auth_snapshot_headers: AuthContextSnapshotHeaderInjector | None = None,
        tracer: IOutboxTracer | None = None,
    ) -> None:
        """Wire the storage (None: only the other flavour exists), the header policy and the tracer."""
        self._storage = storage
        self._factory = OutboxMessageFactory(propagator, auth_snapshot_headers, tracer)

    @override
    def send(self, event: AbstractIntegrationEvent) -> None:
        """Serialise the event and save it; the relay delivers it after commit.

        Raises:
            OutboxStorageFlavourMissingError: No storage of this flavour is
                registered (only the other one).
        """
        if self._storage is None:
            raise missing_storage(event.event_name, RelayMode.SYNC)
        message = self._factory.build(event)
        with self._factory.storing(message):
            self._storage.save(message)
