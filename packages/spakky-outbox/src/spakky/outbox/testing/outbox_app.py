"""An outbox test application: a use case storing an order with its ``OrderPlaced`` event, and the rules it keeps.

A storage's tests give the order write the use case's transaction holds (an
`IOrders` pod), build the application with `order_application`, and run the
rules by subclassing `OutboxApplicationRules` with an ``app`` fixture (the
application `running`) and an ``outbox_view``.
"""

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from contextlib import contextmanager

import pytest
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.core.stereotype.usecase import UseCase
from spakky.data.aspects.transactional import Transactional
from spakky.event.event_publisher import IAsyncEventPublisher
from spakky.outbox.ports.storage import IAsyncOutboxStorage, IOutboxStorage
from spakky.outbox.relay.relay import (
    AsyncOutboxRelayBackgroundService,
    OutboxRelayBackgroundService,
)
from spakky.outbox.testing.events import OrderPlaced, OrderRejectedError
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    RecordingEventTransport,
    run_in_application,
)
from spakky.outbox.testing.waiting import wait_for


class IOrders(ABC):
    """The business write of an order, in the use case's transaction on the storage under test."""

    @abstractmethod
    async def add(self, order: OrderPlaced) -> None:
        """Store the order the event announces: its customer by its id."""


@UseCase()
class PlaceOrderUseCase:
    """Stores an order and publishes `OrderPlaced` in one transaction."""

    def __init__(self, publisher: IAsyncEventPublisher, orders: IOrders) -> None:
        """Inject the event publisher and the storage's orders."""
        self._publisher = publisher
        self._orders = orders

    @Transactional()
    async def execute(self, order_id: str, customer_id: str, *, fail: bool = False) -> None:
        """Place an order; ``fail`` raises `OrderRejectedError` after publishing."""
        order = OrderPlaced(order_id=order_id, customer_id=customer_id)
        await self._orders.add(order)
        await self._publisher.publish(order)
        if fail:
            raise OrderRejectedError


def order_application(plugins: set[Plugin], orders: type[IOrders]) -> SpakkyApplication:
    """An application with ``plugins`` loaded, both recording transports, ``orders`` and the use case; not started."""
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=plugins)
    for pod in (RecordingEventTransport, AsyncRecordingEventTransport, orders, PlaceOrderUseCase):
        app.add(pod)
    return app


@contextmanager
def running(app: SpakkyApplication, stop: Callable[[SpakkyApplication], object] = SpakkyApplication.stop) -> Generator[SpakkyApplication]:
    """``app`` started for the ``with`` block, then stopped by ``stop`` (a storage may release more first)."""
    started = app.start()
    try:
        yield started
    finally:
        stop(started)


class OutboxView(ABC):
    """What a storage's test reads back, raw: the orders and the outbox messages."""

    @abstractmethod
    def orders(self) -> dict[str, str]:
        """Every stored order: its customer by order id."""

    @abstractmethod
    def messages(self) -> list[tuple[str, bool]]:
        """Every stored outbox message as (event name, published), sorted; none where nothing was saved yet."""

    def stored(self) -> list[str]:
        """Everything the store holds for the application, named; a store that can list all it holds says more."""
        return [f"order:{order}" for order in self.orders()] + [f"message:{name}" for name, _ in self.messages()]


class OutboxApplicationRules:
    """The rules an outbox keeps in a started application, under the async relay.

    A subclass names its storage's outbox storages in ``storage_types`` (async,
    sync) and provides an ``app`` fixture (`order_application`, started) and an
    ``outbox_view``.
    """

    storage_types: tuple[type[IAsyncOutboxStorage], type[IOutboxStorage]]
    relay_timeout_seconds = 20.0
    """How long the relay may take to send and mark a message on a loaded machine."""

    def test_application_storage_selected_expect_its_storages_bound_async_relay_only(
        self, app: SpakkyApplication
    ) -> None:
        """With the storage selected, load_plugins binds both storage ports to it and runs the async relay alone."""
        context = app.application_context
        assert isinstance(context.get(IAsyncOutboxStorage), self.storage_types[0])
        assert isinstance(context.get(IOutboxStorage), self.storage_types[1])
        assert context.contains(AsyncOutboxRelayBackgroundService)
        assert not context.contains(OutboxRelayBackgroundService)

    def test_application_use_case_expect_order_and_event_committed_then_relayed(
        self, app: SpakkyApplication, outbox_view: OutboxView
    ) -> None:
        """A committed use case stores the order and its event; the relay sends the event and marks it published."""
        transport = app.application_context.get(AsyncRecordingEventTransport)
        run_in_application(app, app.application_context.get(PlaceOrderUseCase).execute("o-1", "c-1"))
        assert outbox_view.orders() == {"o-1": "c-1"}
        sent = wait_for(lambda: list(transport.delivered), timeout=self.relay_timeout_seconds)
        assert [(d.event_name, d.partition_key) for d in sent] == [("OrderPlaced", "c-1")]
        assert json.loads(sent[0].payload)["order_id"] == "o-1"
        wait_for(lambda: outbox_view.messages() == [("OrderPlaced", True)], timeout=self.relay_timeout_seconds)

    def test_application_failed_use_case_expect_nothing_stored(
        self, app: SpakkyApplication, outbox_view: OutboxView
    ) -> None:
        """A use case failing after publishing leaves neither order nor message, and nothing is sent."""
        with pytest.raises(OrderRejectedError):
            place = app.application_context.get(PlaceOrderUseCase)
            run_in_application(app, place.execute("o-2", "c-2", fail=True))
        assert outbox_view.orders() == {}
        assert outbox_view.messages() == []
        assert outbox_view.stored() == []
        assert app.application_context.get(AsyncRecordingEventTransport).delivered == []
