"""The MongoDB inbox in a real Spakky application: load_plugins, ``@Idempotent`` handlers, raw documents."""

import os
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.ports.inbox import IAsyncInboxStorage, IInboxStorage
from spakky.plugins.outbox_mongodb.inbox import (
    AsyncMongoInboxStorage,
    MongoInboxStorage,
)

from . import inbox_app
from .inbox_app.handlers import (
    HandlerFailedError,
    PaymentReceived,
    Payments,
    Receipts,
    SyncPayments,
)
from .test_application import PLUGINS, mongodb_env  # noqa: F401 - the fixture

BOOK = f"{Payments.__module__}.Payments.book"
"""The default consumer name of `Payments.book`: module and qualified name."""


@pytest.fixture
def app(mongodb_env: MongoClient[dict[str, Any]]) -> Iterator[SpakkyApplication]:  # noqa: F811 - the fixture
    """The consumer service on MongoDB, started (no relay)."""
    os.environ["SPAKKY_OUTBOX__RELAY"] = "off"
    started = SpakkyApplication(ApplicationContext()).load_plugins(include=PLUGINS).scan(inbox_app).start()
    try:
        yield started
    finally:
        started.stop()


def _database(client: MongoClient[dict[str, Any]]) -> Any:
    return client[os.environ["SPAKKY_OUTBOX_MONGODB__DATABASE"]]


def _records(client: MongoClient[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    found = _database(client)["spakky_outbox_inbox"].find({}, sort=[("consumer", 1), ("message_id", 1)])
    return [(d["consumer"], d["message_id"], isinstance(d.get("lease_owner"), str)) for d in found]


def _bookings(client: MongoClient[dict[str, Any]], name: str = "bookings") -> list[tuple[str, int]]:
    return sorted((d["order_id"], d.get("run", 0)) for d in _database(client)[name].find({}))


def test_application_mongodb_selected_expect_mongodb_inboxes_bound(app: SpakkyApplication) -> None:
    """With the MongoDB storage selected, load_plugins binds both inbox ports to the MongoDB inboxes."""
    context = app.application_context
    assert isinstance(context.get(IAsyncInboxStorage), AsyncMongoInboxStorage)
    assert isinstance(context.get(IInboxStorage), MongoInboxStorage)


def test_application_idempotent_handler_redelivered_expect_booking_once(
    app: SpakkyApplication, mongodb_env: MongoClient[dict[str, Any]]  # noqa: F811 - the fixture
) -> None:
    """The same event delivered three times books once; one record keyed by the handler and the event id."""
    context = app.application_context
    loop, payments = context.get(ApplicationEventLoop), context.get(Payments)
    event = PaymentReceived(order_id="o-1")
    for _ in range(3):
        loop.run(payments.book(event), timeout=30)
    assert _bookings(mongodb_env) == [("o-1", 1)]
    assert _records(mongodb_env) == [(BOOK, str(event.event_id), False)]


def test_application_idempotent_handler_raises_expect_no_record_and_redelivery_runs(
    app: SpakkyApplication, mongodb_env: MongoClient[dict[str, Any]]  # noqa: F811 - the fixture
) -> None:
    """A handler that raises aborts its record with its booking; the redelivery books."""
    context = app.application_context
    loop, payments = context.get(ApplicationEventLoop), context.get(Payments)
    failing = PaymentReceived(order_id="o-2", fail=True)
    with pytest.raises(HandlerFailedError):
        loop.run(payments.book(failing), timeout=30)
    assert _records(mongodb_env) == [] and _bookings(mongodb_env) == []
    loop.run(payments.book(PaymentReceived(order_id="o-2", event_id=failing.event_id)), timeout=30)
    assert _bookings(mongodb_env) == [("o-2", 2)]
    assert _records(mongodb_env) == [(BOOK, str(failing.event_id), False)]


def test_application_lease_handler_expect_released_on_failure_done_once(
    app: SpakkyApplication, mongodb_env: MongoClient[dict[str, Any]]  # noqa: F811 - the fixture
) -> None:
    """Lease mode: a failure drops the record, the redelivery sends, later ones never; the record holds no lease."""
    context = app.application_context
    loop, receipts = context.get(ApplicationEventLoop), context.get(Receipts)
    failing = PaymentReceived(order_id="o-3", fail=True)
    with pytest.raises(HandlerFailedError):
        loop.run(receipts.send(failing), timeout=30)
    assert _records(mongodb_env) == []
    for _ in range(3):
        loop.run(receipts.send(PaymentReceived(order_id="o-3", event_id=failing.event_id)), timeout=30)
    assert receipts.sent == ["o-3"]
    assert _records(mongodb_env) == [(f"{Receipts.__module__}.Receipts.send", str(failing.event_id), False)]


def test_application_sync_idempotent_handler_expect_booking_once(
    app: SpakkyApplication, mongodb_env: MongoClient[dict[str, Any]]  # noqa: F811 - the fixture
) -> None:
    """The sync aspect, transaction and inbox: a plain handler books once per message."""
    payments = app.application_context.get(SyncPayments)
    event = PaymentReceived(order_id="o-4")
    for _ in range(2):
        payments.book(event)
    assert _bookings(mongodb_env, "sync_bookings") == [("o-4", 0)]
    assert _records(mongodb_env) == [("sync-book", str(event.event_id), False)]
