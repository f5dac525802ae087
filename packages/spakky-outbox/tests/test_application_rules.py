"""The shared outbox application rules on the in-memory reference storage, as a backend runs them."""

from collections.abc import Iterator
from typing import override

import pytest
from inbox_handlers import MemoryBookings
from memory_app import STORAGES, memory_app
from spakky.core.application.application import SpakkyApplication
from spakky.outbox.testing.memory import (
    AsyncInMemoryOutboxStorage,
    InMemoryOutboxState,
    InMemoryOutboxStorage,
)
from spakky.outbox.testing.outbox_app import (
    OutboxApplicationRules,
    OutboxView,
    PlaceOrderUseCase,
    running,
)
from spakky_outbox_testservices.environ import scoped_environ


@pytest.fixture
def app() -> Iterator[SpakkyApplication]:
    """The orders service on the in-memory storage, started with its relay (polling quickly)."""
    app = memory_app(*STORAGES, MemoryBookings, PlaceOrderUseCase)
    with scoped_environ({"SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS": "0.05"}), running(app) as started:
        yield started


class _MemoryOutboxView(OutboxView):
    """Reads the in-memory store directly."""

    def __init__(self, state: InMemoryOutboxState) -> None:
        self._state = state

    @override
    def orders(self) -> dict[str, str]:
        orders = {k: v for k, v in self._state.business.items() if k.startswith("order:")}
        return {key.removeprefix("order:"): str(customer) for key, customer in orders.items()}

    @override
    def messages(self) -> list[tuple[str, bool]]:
        records = list(self._state.records.values())
        return sorted((r.message.event_name, r.published_at is not None) for r in records)

    @override
    def stored(self) -> list[str]:
        """Every business record and message the store holds."""
        return sorted([*self._state.business, *(str(i) for i in self._state.records)])


@pytest.fixture
def outbox_view(app: SpakkyApplication) -> OutboxView:
    """The application's in-memory store."""
    return _MemoryOutboxView(app.application_context.get(InMemoryOutboxState))


class TestMemoryOutboxApplication(OutboxApplicationRules):
    """The outbox application rules on the in-memory reference."""

    storage_types = (AsyncInMemoryOutboxStorage, InMemoryOutboxStorage)
