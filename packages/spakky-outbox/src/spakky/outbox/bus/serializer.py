"""Integration-event serialisation with one cached pydantic adapter per event type."""

import dataclasses
from typing import Any

from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError, to_json
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.outbox.error import OutboxSerializationError


class IntegrationEventSerializer:
    """Turns integration events into JSON bytes, building each type's adapter once."""

    _adapters: dict[type[Any], TypeAdapter[Any]]

    def __init__(self) -> None:
        """Start with an empty adapter cache."""
        self._adapters = {}

    def serialize(self, event: AbstractIntegrationEvent) -> bytes:
        """Return the event as JSON bytes.

        Raises:
            OutboxSerializationError: A field cannot be serialised; the error
                names the event type and the field.
        """
        event_type = type(event)
        try:
            adapter = self._adapters.get(event_type)
            if adapter is None:
                adapter = TypeAdapter(event_type)
                self._adapters[event_type] = adapter
            return adapter.dump_json(event)
        except Exception as error:
            raise self._explain(event, error) from error

    @staticmethod
    def _explain(event: AbstractIntegrationEvent, error: Exception) -> OutboxSerializationError:
        """Find the field that cannot be serialised, for an actionable message."""
        for field in dataclasses.fields(event):
            value = getattr(event, field.name)
            try:
                to_json(value)
            except PydanticSerializationError as field_error:
                return OutboxSerializationError(type(event), field.name, str(field_error))
        return OutboxSerializationError(type(event), "<event>", str(error).splitlines()[0])
