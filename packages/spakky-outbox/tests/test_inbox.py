"""The inbox in a real Spakky application: ``@Idempotent`` handlers on the in-memory reference."""

from collections.abc import Coroutine, Iterator
from typing import Any
from uuid import uuid4

import pytest
from inbox_handlers import Audits, MemoryBookings
from memory_app import STORAGES, memory_app, running
from spakky.core.application.application import SpakkyApplication
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.common.message import MESSAGE_ID_HEADER
from spakky.outbox.error import OutboxTransactionRequiredError
from spakky.outbox.inbox.error import (
    InboxMessageBusyError,
    InboxStorageNotFoundError,
    InvalidInboxKeyError,
)
from spakky.outbox.inbox.identity import delivered_headers
from spakky.outbox.ports.inbox import IAsyncInboxStorage, IInboxStorage
from spakky.outbox.testing.async_memory_inbox import AsyncInMemoryInboxStorage
from spakky.outbox.testing.inbox_app import (
    BOOK,
    SEND,
    HandlerFailedError,
    PaymentReceived,
    Payments,
    Receipts,
    SyncPayments,
    add_inbox_handlers,
)
from spakky.outbox.testing.memory import (
    InMemoryOutboxState,
)
from spakky.outbox.testing.sync_memory_inbox import InMemoryInboxStorage
from spakky.plugins.rabbitmq.auth import (
    reset_current_rabbitmq_message_headers,
    set_current_rabbitmq_message_headers,
)


def _build(*, inbox: bool = True) -> SpakkyApplication:
    app = memory_app(*STORAGES, Audits)
    if inbox:
        app.add(InMemoryInboxStorage)
        app.add(AsyncInMemoryInboxStorage)
        app.container.bind_to_type(IInboxStorage, InMemoryInboxStorage)
        app.container.bind_to_type(IAsyncInboxStorage, AsyncInMemoryInboxStorage)
    return add_inbox_handlers(app, MemoryBookings)


@pytest.fixture
def app() -> Iterator[SpakkyApplication]:
    """The consumer service, started, with the in-memory inbox."""
    with running(_build()) as started:
        yield started


def _state(app: SpakkyApplication) -> InMemoryOutboxState:
    return app.application_context.get(InMemoryOutboxState)


def _bookings(app: SpakkyApplication, prefix: str = "booking:") -> list[str]:
    return sorted(k for k in _state(app).business if k.startswith(prefix))


def _deliver(app: SpakkyApplication, handling: Coroutine[Any, Any, None]) -> None:
    """Run one delivery's handler call on the application's loop, as the consumer's transport would."""
    app.application_context.get(ApplicationEventLoop).run(handling, timeout=10)


def test_idempotent_handler_redelivered_expect_effect_once(app: SpakkyApplication) -> None:
    """The same event delivered three times books once and leaves one record keyed by the handler and event id."""
    payments = app.application_context.get(Payments)
    event = PaymentReceived(order_id="o-1")
    for _ in range(3):
        _deliver(app, payments.book(event))
    assert _bookings(app) == ["booking:o-1:1"]
    assert (BOOK, str(event.event_id)) in _state(app).inbox
    assert [k for k in _state(app).inbox if k[0] == BOOK] == [(BOOK, str(event.event_id))]


def test_idempotent_handler_raises_expect_no_record_and_redelivery_runs(app: SpakkyApplication) -> None:
    """A handler that fails rolls its record back with its writes, so the redelivery runs it again."""
    payments = app.application_context.get(Payments)
    failing = PaymentReceived(order_id="o-2", fail=True)
    with pytest.raises(HandlerFailedError):
        _deliver(app, payments.book(failing))
    assert _state(app).inbox == {} and _bookings(app) == []
    fixed = PaymentReceived(order_id="o-2", event_id=failing.event_id)
    _deliver(app, payments.book(fixed))
    assert _bookings(app) == ["booking:o-2:2"]
    assert list(_state(app).inbox) == [(BOOK, str(failing.event_id))]


def test_idempotent_handler_message_id_header_expect_header_is_identity(app: SpakkyApplication) -> None:
    """With the relay's message id header (here through spakky-rabbitmq's header context) it is the identity."""
    payments = app.application_context.get(Payments)
    message_id = str(uuid4())

    async def delivered(event: PaymentReceived) -> None:
        token = set_current_rabbitmq_message_headers({MESSAGE_ID_HEADER: message_id})
        try:
            await payments.book(event)
        finally:
            reset_current_rabbitmq_message_headers(token)

    # Two event objects with different event ids but one outbox message id: one effect.
    _deliver(app, delivered(PaymentReceived(order_id="o-3")))
    _deliver(app, delivered(PaymentReceived(order_id="o-3")))
    assert _bookings(app) == ["booking:o-3:1"]
    assert list(_state(app).inbox) == [(BOOK, message_id)]


def test_idempotent_handlers_two_consumer_names_expect_each_runs_once(app: SpakkyApplication) -> None:
    """The default-named consumer and the one named ``audit`` handle the same message independently."""
    payments, audits = app.application_context.get(Payments), app.application_context.get(Audits)
    event = PaymentReceived(order_id="o-4")
    for _ in range(2):
        _deliver(app, payments.book(event))
        _deliver(app, audits.audit(event))
    assert _bookings(app) == ["booking:o-4:1"] and _bookings(app, "audit:") == ["audit:o-4"]
    assert sorted(_state(app).inbox) == sorted([(BOOK, str(event.event_id)), ("audit", str(event.event_id))])


def test_idempotent_handler_without_transactional_expect_transaction_required(app: SpakkyApplication) -> None:
    """Transactional mode outside any transaction fails with our error instead of recording nothing."""
    with pytest.raises(OutboxTransactionRequiredError):
        _deliver(app, app.application_context.get(Audits).unguarded(PaymentReceived(order_id="o-5")))
    assert _state(app).inbox == {}


def test_lease_handler_redelivered_and_failed_expect_effect_once(app: SpakkyApplication) -> None:
    """Lease mode: a failure releases the record (the redelivery runs), a finished one is never run again."""
    receipts = app.application_context.get(Receipts)
    failing = PaymentReceived(order_id="o-6", fail=True)
    with pytest.raises(HandlerFailedError):
        _deliver(app, receipts.send(failing))
    assert _state(app).inbox == {}
    event = PaymentReceived(order_id="o-6", event_id=failing.event_id)
    for _ in range(3):
        _deliver(app, receipts.send(event))
    assert receipts.sent == ["o-6"] and receipts.attempts == 2
    entry = _state(app).inbox[(SEND, str(event.event_id))]
    assert entry.lease_until is None and entry.lease_owner is None


def test_lease_handler_live_lease_elsewhere_expect_busy_error(app: SpakkyApplication) -> None:
    """While another instance holds a live lease the handler does not run; our error asks for a redelivery."""
    receipts = app.application_context.get(Receipts)
    event = PaymentReceived(order_id="o-7")
    other = app.application_context.get(IInboxStorage).acquire_lease(SEND, str(event.event_id), 30)
    with pytest.raises(InboxMessageBusyError, match=r"Receipts\.send"):
        _deliver(app, receipts.send(event))
    assert receipts.attempts == 0 and other.token is not None


def test_sync_idempotent_handler_redelivered_expect_effect_once(app: SpakkyApplication) -> None:
    """The sync aspect: a plain handler method books once per message, with our own header context too."""
    payments = app.application_context.get(SyncPayments)
    event = PaymentReceived(order_id="o-8")
    with delivered_headers({MESSAGE_ID_HEADER: "m-8"}):
        payments.book(event)
        payments.book(PaymentReceived(order_id="o-8"))
    payments.book(event)
    assert _bookings(app, "sync-booking:") == ["sync-booking:o-8:1", "sync-booking:o-8:2"]
    assert sorted(k for k in _state(app).inbox if k[0] == "sync-book") == [
        ("sync-book", str(event.event_id)),
        ("sync-book", "m-8"),
    ]


def test_idempotent_handler_no_inbox_storage_expect_error_naming_packages() -> None:
    """Without an inbox storage the handler fails with our error naming what to install, and does not run."""
    with running(_build(inbox=False)) as app:
        payments = app.application_context.get(Payments)
        with pytest.raises(InboxStorageNotFoundError, match=r"spakky-outbox\[sqlalchemy\]"):
            _deliver(app, payments.book(PaymentReceived(order_id="o-9")))
        assert payments.runs == 0


def test_inbox_key_too_long_expect_invalid_key_error(app: SpakkyApplication) -> None:
    """A consumer name longer than a key column can hold is refused with our error."""
    with pytest.raises(InvalidInboxKeyError, match="at most 255"):
        app.application_context.get(IInboxStorage).acquire_lease("c" * 256, "m", 1)
