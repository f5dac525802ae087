"""An inbox test application: a ``PaymentReceived`` event, ``@Idempotent`` handlers and the rules they keep.

A storage's tests start an application with `started_inbox_app`, giving the
one business write the handlers' transaction holds (an `IBookings` pod), and
run the rules by subclassing `InboxApplicationRules` with an ``app`` and an
``inbox_view`` fixture.
"""

import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Generator
from contextlib import contextmanager

import pytest
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.core.common.mutability import immutable
from spakky.data.aspects.transactional import Transactional
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.event.stereotype.event_handler import EventHandler, on_event
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.inbox import Idempotent, InboxMode
from spakky.outbox.ports.inbox import IAsyncInboxStorage, IInboxStorage


@immutable
class PaymentReceived(AbstractIntegrationEvent):
    """A payment arrived for an order; ``fail`` makes every handler raise after its write."""

    order_id: str
    fail: bool = False


class HandlerFailedError(Exception):
    """Raised by a handler asked to fail."""


class IBookings(ABC):
    """The business write of a booking, in the handler's transaction of the storage under test."""

    @abstractmethod
    async def book(self, order_id: str, run: int) -> None:
        """Record run ``run`` of the async handler for ``order_id``."""

    @abstractmethod
    def book_sync(self, order_id: str, run: int) -> None:
        """Record run ``run`` of the sync handler for ``order_id``."""


class _Booker:
    """A handler writing through the storage's bookings, counting its runs."""

    def __init__(self, bookings: IBookings) -> None:
        """Write through the storage's bookings."""
        self._bookings = bookings
        self.runs = 0


@EventHandler()
class Payments(_Booker):
    """Books each payment once: the business write in the handler's transaction."""

    @Transactional()
    @Idempotent()
    @on_event(PaymentReceived)
    async def book(self, event: PaymentReceived) -> None:
        """Write a booking; raise after it when asked to fail."""
        self.runs += 1
        await self._bookings.book(event.order_id, self.runs)
        if event.fail:
            raise HandlerFailedError(event.order_id)


@EventHandler()
class Receipts:
    """Sends a receipt (an effect outside the database): lease mode."""

    def __init__(self) -> None:
        """Count the receipts sent and the runs."""
        self.sent: list[str] = []
        self.attempts = 0

    @Idempotent(mode=InboxMode.LEASE, lease_seconds=30)
    @on_event(PaymentReceived)
    async def send(self, event: PaymentReceived) -> None:
        """Send the receipt; raise before sending when asked to fail."""
        self.attempts += 1
        if event.fail:
            raise HandlerFailedError(event.order_id)
        self.sent.append(event.order_id)


@EventHandler()
class SyncPayments(_Booker):
    """The sync flavour: a plain method under the sync aspect, transaction and inbox."""

    @Transactional()
    @Idempotent(consumer="sync-book")
    @on_event(PaymentReceived)
    def book(self, event: PaymentReceived) -> None:
        """Write a sync booking."""
        self.runs += 1
        self._bookings.book_sync(event.order_id, self.runs)


BOOK = f"{Payments.__module__}.Payments.book"
"""The default consumer name of `Payments.book`: module and qualified name."""

SEND = f"{Receipts.__module__}.Receipts.send"
"""The default consumer name of `Receipts.send`."""


def add_inbox_handlers(app: SpakkyApplication, bookings: type[IBookings]) -> SpakkyApplication:
    """Add the three handlers and the storage's ``bookings`` pod to ``app``."""
    for pod in (bookings, Payments, Receipts, SyncPayments):
        app.add(pod)
    return app


@contextmanager
def started_inbox_app(plugins: set[Plugin], bookings: type[IBookings]) -> Generator[SpakkyApplication]:
    """An application with ``plugins`` loaded, the handlers and ``bookings`` added, started without a relay."""
    os.environ["SPAKKY_OUTBOX__RELAY"] = "off"
    loaded = SpakkyApplication(ApplicationContext()).load_plugins(include=plugins)
    started = add_inbox_handlers(loaded, bookings).start()
    try:
        yield started
    finally:
        started.stop()


def _run(app: SpakkyApplication, call: Awaitable[None] | None) -> None:
    async def awaited() -> None:
        if call is not None:
            await call

    app.application_context.get(ApplicationEventLoop).run(awaited(), timeout=30)


class InboxView(ABC):
    """What a storage's test reads back, raw: inbox records and bookings."""

    @abstractmethod
    def records(self) -> list[tuple[str, str, bool]]:
        """Every inbox record as (consumer, message id, holds a lease), sorted."""

    @abstractmethod
    def bookings(self, order_id: str, *, sync: bool = False) -> list[int]:
        """The runs the async (or ``sync``) handler booked for ``order_id``, in order."""


class InboxApplicationRules:
    """The rules an inbox keeps in a started application.

    A subclass names its storage's inboxes in ``inbox_types`` (async, sync) and
    provides an ``app`` fixture (`started_inbox_app`) and an ``inbox_view``.
    """

    inbox_types: tuple[type[IAsyncInboxStorage], type[IInboxStorage]]

    def test_application_storage_selected_expect_its_inboxes_bound(self, app: SpakkyApplication) -> None:
        """With the storage selected, load_plugins binds both inbox ports to its inboxes."""
        context = app.application_context
        assert isinstance(context.get(IAsyncInboxStorage), self.inbox_types[0])
        assert isinstance(context.get(IInboxStorage), self.inbox_types[1])

    def test_application_idempotent_handler_redelivered_expect_booking_once(
        self, app: SpakkyApplication, inbox_view: InboxView
    ) -> None:
        """The same event delivered three times books once; one record keyed by the handler and the event id."""
        payments, event = app.application_context.get(Payments), PaymentReceived(order_id="o-1")
        for _ in range(3):
            _run(app, payments.book(event))
        assert inbox_view.records() == [(BOOK, str(event.event_id), False)]
        assert inbox_view.bookings("o-1") == [1]

    def test_application_idempotent_handler_raises_expect_no_record_and_redelivery_runs(
        self, app: SpakkyApplication, inbox_view: InboxView
    ) -> None:
        """A handler that raises discards its record with its booking; the redelivery books."""
        payments = app.application_context.get(Payments)
        failing = PaymentReceived(order_id="o-2", fail=True)
        fixed = PaymentReceived(order_id="o-2", event_id=failing.event_id)
        with pytest.raises(HandlerFailedError):
            _run(app, payments.book(failing))
        assert inbox_view.records() == [] and inbox_view.bookings("o-2") == []
        _run(app, payments.book(fixed))
        assert inbox_view.bookings("o-2") == [2]
        assert inbox_view.records() == [(BOOK, str(failing.event_id), False)]

    def test_application_lease_handler_expect_released_on_failure_done_once(
        self, app: SpakkyApplication, inbox_view: InboxView
    ) -> None:
        """Lease mode: a failure drops the record, the redelivery sends, later ones never; the record holds no lease."""
        receipts, failing = app.application_context.get(Receipts), PaymentReceived(order_id="o-3", fail=True)
        with pytest.raises(HandlerFailedError):
            _run(app, receipts.send(failing))
        assert inbox_view.records() == []
        for event in [PaymentReceived(order_id="o-3", event_id=failing.event_id) for _ in range(3)]:
            _run(app, receipts.send(event))
        assert receipts.sent == ["o-3"]
        assert inbox_view.records() == [(SEND, str(failing.event_id), False)]

    def test_application_sync_idempotent_handler_expect_booking_once(
        self, app: SpakkyApplication, inbox_view: InboxView
    ) -> None:
        """The sync aspect, transaction and inbox: a plain handler books once per message."""
        payments = app.application_context.get(SyncPayments)
        event = PaymentReceived(order_id="o-4")
        for _ in range(2):
            payments.book(event)
        assert inbox_view.bookings("o-4", sync=True) == [1]
        assert inbox_view.records() == [("sync-book", str(event.event_id), False)]
