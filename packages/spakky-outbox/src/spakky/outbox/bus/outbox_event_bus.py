"""Outbox event buses (sync and async) that replace IEventBus/IAsyncEventBus via @Primary.

Both buses are always registered, but an application may bring a storage of
one flavour only (an ``IAsyncOutboxStorage`` Pod of its own, as the 6.x/8.5
docs show): the bus of the other flavour is then built without a storage and
refuses ``send`` with `OutboxStorageFlavourMissingError`, instead of stopping
the application at startup.
"""

import re
from contextlib import AbstractContextManager, nullcontext
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
from spakky.outbox.error import OutboxStorageFlavourMissingError
from spakky.outbox.ports.storage import IAsyncOutboxStorage, IOutboxStorage
from spakky.outbox.ports.tracing import IOutboxTracer
from spakky.tracing.propagator import ITracePropagator

_AUTHORIZATION_NAME = re.compile(r"\s*(?:\S*[-_])?authorization\s*", re.IGNORECASE)
"""``Authorization``, ``Proxy-Authorization``, ``X-Forwarded-Authorization``, ..."""
_BEARER_VALUE = re.compile(r"\s*bearer\s+\S", re.IGNORECASE)
"""A bearer credential, however it is spaced or cased (``bearer\\t<token>``, ``  Bearer x``)."""


def drop_credentials(headers: dict[str, str]) -> None:
    """Remove every header that carries a credential, before the message is stored.

    Authorization headers go whatever their scheme (a Basic one holds a
    password), and so does any header whose value is a bearer token: a stored
    message outlives the request, and consumers get the signed auth snapshot instead.
    """
    carrying = [
        name for name, value in headers.items()
        if _AUTHORIZATION_NAME.fullmatch(name) or _BEARER_VALUE.match(value)
    ]
    for name in carrying:
        del headers[name]


class _OutboxMessageFactory:
    """Builds outbox messages: payload, trace and auth headers, partition key; opens the store span."""

    def __init__(
        self,
        propagator: ITracePropagator,
        auth_snapshot_headers: AuthContextSnapshotHeaderInjector | None,
        tracer: IOutboxTracer | None,
    ) -> None:
        self._serializer = IntegrationEventSerializer()
        self._propagator = propagator
        self._tracer = tracer
        self._auth_snapshot_headers = (
            auth_snapshot_headers or AuthContextSnapshotHeaderInjector()
        )

    def build(self, event: AbstractIntegrationEvent) -> OutboxMessage:
        payload = self._serializer.serialize(event)
        headers: dict[str, str] = {}
        self._propagator.inject(headers)
        self._auth_snapshot_headers.inject(headers)
        drop_credentials(headers)
        return OutboxMessage(
            id=uuid4(),
            event_name=event.event_name,
            payload=payload,
            headers=headers,
            created_at=datetime.now(UTC),
            partition_key=event.partition_key,
        )

    def storing(self, message: OutboxMessage) -> AbstractContextManager[None]:
        """The tracer's span around the save (it may move the trace headers to itself)."""
        return nullcontext() if self._tracer is None else self._tracer.storing(message)


@Primary()
@Pod()
class OutboxEventBus(IEventBus):
    """Stores integration events in the outbox, in the caller's transaction (sync)."""

    _storage: IOutboxStorage | None
    _factory: _OutboxMessageFactory

    def __init__(
        self,
        storage: IOutboxStorage | None,
        propagator: ITracePropagator,
        auth_snapshot_headers: AuthContextSnapshotHeaderInjector | None = None,
        tracer: IOutboxTracer | None = None,
    ) -> None:
        """Wire the storage (None: only the other flavour exists), the header policy and the tracer."""
        self._storage = storage
        self._factory = _OutboxMessageFactory(propagator, auth_snapshot_headers, tracer)

    @override
    def send(self, event: AbstractIntegrationEvent) -> None:
        """Serialise the event and save it; the relay delivers it after commit.

        Raises:
            OutboxStorageFlavourMissingError: Only an asynchronous storage is
                registered.
        """
        if self._storage is None:
            raise OutboxStorageFlavourMissingError(
                f"{event.event_name} was published from synchronous code, but the "
                "outbox storage is asynchronous only (no IOutboxStorage Pod). "
                "Publish it with IAsyncEventPublisher from an async use case, or "
                "register an IOutboxStorage Pod too"
            )
        message = self._factory.build(event)
        with self._factory.storing(message):
            self._storage.save(message)


@Primary()
@Pod()
class AsyncOutboxEventBus(IAsyncEventBus):
    """Stores integration events in the outbox, in the caller's transaction (async)."""

    _storage: IAsyncOutboxStorage | None
    _factory: _OutboxMessageFactory

    def __init__(
        self,
        storage: IAsyncOutboxStorage | None,
        propagator: ITracePropagator,
        auth_snapshot_headers: AuthContextSnapshotHeaderInjector | None = None,
        tracer: IOutboxTracer | None = None,
    ) -> None:
        """Wire the storage (None: only the other flavour exists), the header policy and the tracer."""
        self._storage = storage
        self._factory = _OutboxMessageFactory(propagator, auth_snapshot_headers, tracer)

    @override
    async def send(self, event: AbstractIntegrationEvent) -> None:
        """Serialise the event and save it; the relay delivers it after commit.

        Raises:
            OutboxStorageFlavourMissingError: Only a synchronous storage is
                registered.
        """
        if self._storage is None:
            raise OutboxStorageFlavourMissingError(
                f"{event.event_name} was published from asynchronous code, but the "
                "outbox storage is synchronous only (no IAsyncOutboxStorage Pod). "
                "Publish it with IEventPublisher from a sync use case, or "
                "register an IAsyncOutboxStorage Pod too"
            )
        message = self._factory.build(event)
        with self._factory.storing(message):
            await self._storage.save(message)
