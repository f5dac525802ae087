"""A real Spakky application using the MongoDB outbox through its entry points: the shared application rules."""

import os
import uuid
from collections.abc import Iterator
from typing import Any, override

import pytest
from pymongo import MongoClient
from spakky.core.application.application import SpakkyApplication
from spakky.data.persistency.transaction import AbstractAsyncTransaction
from spakky.outbox.testing.outbox_app import (
    OutboxApplicationRules,
    OutboxView,
    order_application,
    running,
)
from spakky.outbox.testing.transport import outbox_plugins
from spakky.plugins.outbox_mongodb.storage import (
    AsyncMongoOutboxStorage,
    MongoOutboxStorage,
)
from spakky.plugins.outbox_mongodb.transaction import AsyncMongoTransaction
from spakky_outbox_testservices.environ import scoped_environ

from .app.business import MongoBusiness

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


@pytest.fixture
def app(mongodb_env: MongoClient[dict[str, Any]]) -> Iterator[SpakkyApplication]:
    """The orders service on MongoDB, started with its relay."""
    with running(order_application(PLUGINS, MongoBusiness)) as started:
        yield started


class _MongoOutboxView(OutboxView):
    """Reads the orders and the outbox messages as raw documents."""

    def __init__(self, client: MongoClient[dict[str, Any]]) -> None:
        self._database = client[os.environ["SPAKKY_OUTBOX_MONGODB__DATABASE"]]

    @override
    def orders(self) -> dict[str, str]:
        return {d["_id"]: d["customer_id"] for d in self._database["orders"].find({})}

    @override
    def messages(self) -> list[tuple[str, bool]]:
        found = self._database["spakky_outbox"].find({})
        return sorted((d["event_name"], d["state"] == "published") for d in found)


@pytest.fixture
def outbox_view(mongodb_env: MongoClient[dict[str, Any]]) -> OutboxView:
    """The raw documents of the test's database."""
    return _MongoOutboxView(mongodb_env)


class TestMongoOutboxApplication(OutboxApplicationRules):
    """The outbox application rules on MongoDB."""

    storage_types = (AsyncMongoOutboxStorage, MongoOutboxStorage)

    def test_application_started_expect_mongo_transaction_and_keyed_pending_index(
        self, app: SpakkyApplication, mongodb_env: MongoClient[dict[str, Any]]
    ) -> None:
        """Beyond the rules: ``@Transactional`` opens a MongoDB transaction and the outbox has its keyed-pending index."""
        assert isinstance(app.application_context.get(AbstractAsyncTransaction), AsyncMongoTransaction)
        database = mongodb_env[os.environ["SPAKKY_OUTBOX_MONGODB__DATABASE"]]
        assert "spakky_outbox_keyed_pending" in database["spakky_outbox"].index_information()
