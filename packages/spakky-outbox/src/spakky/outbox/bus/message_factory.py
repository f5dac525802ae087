"""What both outbox buses share: the credential filter, the message factory and the flavour error."""

import re
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from uuid import uuid4

from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.event.auth_propagation import AuthContextSnapshotHeaderInjector
from spakky.outbox.bus.serializer import IntegrationEventSerializer
from spakky.outbox.common.config import RelayMode
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.error import OutboxStorageFlavourMissingError
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


class OutboxMessageFactory:
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
        """The event as an outbox message: serialised payload, trace and auth headers without credentials."""
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


def missing_storage(event_name: str, mode: RelayMode) -> OutboxStorageFlavourMissingError:
    """The error of a bus whose flavour of storage is not registered (``mode``: the bus's flavour)."""
    here, there, wanted, publisher, use_case = (
        ("asynchronous", "synchronous", "IAsyncOutboxStorage", "IEventPublisher", "a sync")
        if mode is RelayMode.ASYNC
        else ("synchronous", "asynchronous", "IOutboxStorage", "IAsyncEventPublisher", "an async")
    )
    return OutboxStorageFlavourMissingError(
        f"{event_name} was published from {here} code, but the outbox storage is "
        f"{there} only (no {wanted} Pod). Publish it with {publisher} from {use_case} "
        f"use case, or register an {wanted} Pod too"
    )
