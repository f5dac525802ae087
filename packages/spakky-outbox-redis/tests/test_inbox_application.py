"""The Redis inbox in a real Spakky application: load_plugins, ``@Idempotent`` handlers, raw keys."""

import os
from collections.abc import Iterator

import pytest
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.ports.inbox import IAsyncInboxStorage, IInboxStorage
from spakky.plugins.outbox_redis.codec import RedisKeys
from spakky.plugins.outbox_redis.inbox import (
    AsyncRedisInboxStorage,
    RedisInboxStorage,
)
from spakky.plugins.outbox_redis.inbox_base import InboxKeys

from . import inbox_app
from .inbox_app.handlers import (
    HandlerFailedError,
    PaymentReceived,
    Payments,
    Receipts,
    SyncPayments,
)
from .test_application import PLUGINS, _Target, redis_env  # noqa: F401 - the fixture

BOOK = f"{Payments.__module__}.Payments.book"
"""The default consumer name of `Payments.book`: module and qualified name."""


@pytest.fixture
def app(redis_env: _Target) -> Iterator[SpakkyApplication]:  # noqa: F811 - the fixture
    """The consumer service on Redis (one server or a cluster), started (no relay)."""
    os.environ["SPAKKY_OUTBOX__RELAY"] = "off"
    started = SpakkyApplication(ApplicationContext()).load_plugins(include=PLUGINS).scan(inbox_app).start()
    try:
        yield started
    finally:
        started.stop()


def _records(target: _Target) -> list[tuple[str, str, bool]]:
    start = InboxKeys(target.prefix).records
    client = target.client()
    try:
        found: list[tuple[str, str, bool]] = []
        for key in client.scan_iter(match=f"{start}*"):
            value = client.get(key)
            consumer, message_id = InboxKeys.split(key.decode()[len(start) :])
            found.append((consumer, message_id, value is not None and b" " in value))
        return sorted(found)
    finally:
        client.close()


def _bookings(target: _Target, name: str) -> list[bytes]:
    client = target.client()
    try:
        return client.lrange(RedisKeys(target.prefix).business(name), 0, -1)
    finally:
        client.close()


def test_application_inbox_expect_redis_inboxes_bound(app: SpakkyApplication) -> None:
    """With the Redis storage selected, load_plugins binds both inbox ports to the Redis inboxes."""
    context = app.application_context
    assert isinstance(context.get(IAsyncInboxStorage), AsyncRedisInboxStorage)
    assert isinstance(context.get(IInboxStorage), RedisInboxStorage)


def test_application_idempotent_handler_redelivered_expect_booking_once(
    app: SpakkyApplication, redis_env: _Target  # noqa: F811 - the fixture
) -> None:
    """The same event delivered three times books once; one record keyed by the handler and the event id."""
    context = app.application_context
    loop, payments = context.get(ApplicationEventLoop), context.get(Payments)
    event = PaymentReceived(order_id="o-1")
    for _ in range(3):
        loop.run(payments.book(event), timeout=30)
    assert _bookings(redis_env, "bookings:o-1") == [b"1"]
    assert _records(redis_env) == [(BOOK, str(event.event_id), False)]


def test_application_idempotent_handler_raises_expect_no_record_and_redelivery_runs(
    app: SpakkyApplication, redis_env: _Target  # noqa: F811 - the fixture
) -> None:
    """A handler that raises discards its record with its booking; the redelivery books."""
    context = app.application_context
    loop, payments = context.get(ApplicationEventLoop), context.get(Payments)
    failing = PaymentReceived(order_id="o-2", fail=True)
    with pytest.raises(HandlerFailedError):
        loop.run(payments.book(failing), timeout=30)
    assert _records(redis_env) == [] and _bookings(redis_env, "bookings:o-2") == []
    loop.run(payments.book(PaymentReceived(order_id="o-2", event_id=failing.event_id)), timeout=30)
    assert _bookings(redis_env, "bookings:o-2") == [b"2"]
    assert _records(redis_env) == [(BOOK, str(failing.event_id), False)]


def test_application_lease_handler_expect_released_on_failure_done_once(
    app: SpakkyApplication, redis_env: _Target  # noqa: F811 - the fixture
) -> None:
    """Lease mode: a failure drops the record, the redelivery sends, later ones never; the record holds no lease."""
    context = app.application_context
    loop, receipts = context.get(ApplicationEventLoop), context.get(Receipts)
    failing = PaymentReceived(order_id="o-3", fail=True)
    with pytest.raises(HandlerFailedError):
        loop.run(receipts.send(failing), timeout=30)
    assert _records(redis_env) == []
    for _ in range(3):
        loop.run(receipts.send(PaymentReceived(order_id="o-3", event_id=failing.event_id)), timeout=30)
    assert receipts.sent == ["o-3"]
    assert _records(redis_env) == [(f"{Receipts.__module__}.Receipts.send", str(failing.event_id), False)]


def test_application_sync_idempotent_handler_expect_booking_once(
    app: SpakkyApplication, redis_env: _Target  # noqa: F811 - the fixture
) -> None:
    """The sync aspect, transaction and inbox: a plain handler books once per message."""
    payments = app.application_context.get(SyncPayments)
    event = PaymentReceived(order_id="o-4")
    for _ in range(2):
        payments.book(event)
    assert _bookings(redis_env, "sync-bookings:o-4") == [b"0"]
    assert _records(redis_env) == [("sync-book", str(event.event_id), False)]
