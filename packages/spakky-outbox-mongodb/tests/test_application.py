"""A real Spakky application using the MongoDB outbox through its entry points."""

import os
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from spakky.core.application.application import SpakkyApplication
from spakky.data.persistency.transaction import AbstractAsyncTransaction
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.ports.storage import IAsyncOutboxStorage
from spakky.outbox.testing.events import OrderRejectedError
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    outbox_plugins,
    recording_application,
    run_in_application,
)
from spakky.outbox.testing.waiting import wait_for
from spakky.plugins.outbox_mongodb.storage import AsyncMongoOutboxStorage
from spakky.plugins.outbox_mongodb.transaction import AsyncMongoTransaction
from spakky_outbox_testservices.environ import scoped_environ

from . import app as app_package
from .app.service import PlaceOrderUseCase

PLUGINS = outbox_plugins("spakky-outbox-mongodb")


@pytest.fixture
def mongodb_env(mongodb_url: str) -> Iterator[MongoClient[dict[str, Any]]]:
    """Point the app at a fresh database; drop it afterwards. Yields a raw client."""
    database = f"app_{uuid.uuid4().hex[:12]}"
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_url, uuidRepresentation="standard")
    settings = {
        "SPAKKY_OUTBOX_MONGODB__URL": mongodb_url,
        "SPAKKY_OUTBOX_MONGODB__DATABASE": database,
        "SPAKKY_OUTBOX__STORAGE": "mongodb",
        "SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS": "0.05",
    }
    try:
        with scoped_environ(settings):
            yield client
    finally:
        client.drop_database(database)
        client.close()


def _build() -> SpakkyApplication:
    return recording_application(app_package, PLUGINS)


def _run[T](app: SpakkyApplication, coroutine: Coroutine[Any, Any, T]) -> T:
    return app.application_context.get(ApplicationEventLoop).run(coroutine, timeout=30)


def test_application_use_case_expect_committed_order_relayed_and_rolled_back_never(
    mongodb_env: MongoClient[dict[str, Any]],
) -> None:
    """A committed use case stores the order and its event, which the relay sends; a failed one leaves nothing."""
    app = _build().start()
    try:
        context = app.application_context
        assert isinstance(context.get(IAsyncOutboxStorage), AsyncMongoOutboxStorage)
        assert isinstance(context.get(AbstractAsyncTransaction), AsyncMongoTransaction)
        database = mongodb_env[os.environ["SPAKKY_OUTBOX_MONGODB__DATABASE"]]
        assert "spakky_outbox_keyed_pending" in database["spakky_outbox"].index_information()
        transport = context.get(AsyncRecordingEventTransport)
        use_case = context.get(PlaceOrderUseCase)
        run_in_application(app, use_case.execute("o-1", "c-1"))
        assert database["orders"].find_one({"_id": "o-1"}) == {"_id": "o-1", "customer_id": "c-1"}
        delivered = wait_for(lambda: list(transport.delivered), timeout=20)
        assert [(d.event_name, d.partition_key) for d in delivered] == [("OrderPlaced", "c-1")]
        wait_for(lambda: database["spakky_outbox"].count_documents({"state": "published"}) == 1, timeout=20)
        with pytest.raises(OrderRejectedError):
            run_in_application(app, use_case.execute("o-2", "c-2", fail=True))
        assert database["orders"].find_one({"_id": "o-2"}) is None
        assert database["spakky_outbox"].count_documents({}) == 1
        assert [d.event_name for d in transport.delivered] == ["OrderPlaced"]
    finally:
        app.stop()
