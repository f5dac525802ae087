"""The MongoDB inbox in a real Spakky application: load_plugins, ``@Idempotent`` handlers, raw documents."""

import os
from collections.abc import Iterator
from typing import Any, override

import pytest
from pymongo import MongoClient
from spakky.core.application.application import SpakkyApplication
from spakky.outbox.testing.inbox_app import (
    InboxApplicationRules,
    InboxView,
    started_inbox_app,
)
from spakky.plugins.outbox_mongodb.inbox import (
    AsyncMongoInboxStorage,
    MongoInboxStorage,
)

from .app.business import MongoBusiness
from .test_application import PLUGINS, mongodb_env  # noqa: F401 - the fixture


@pytest.fixture
def app(mongodb_env: MongoClient[dict[str, Any]]) -> Iterator[SpakkyApplication]:  # noqa: F811 - the fixture
    """The consumer service on MongoDB, started (no relay)."""
    with started_inbox_app(PLUGINS, MongoBusiness) as started:
        yield started


class _MongoInboxView(InboxView):
    """Reads the inbox records and bookings as raw documents."""

    def __init__(self, client: MongoClient[dict[str, Any]]) -> None:
        self._database = client[os.environ["SPAKKY_OUTBOX_MONGODB__DATABASE"]]

    @override
    def records(self) -> list[tuple[str, str, bool]]:
        found = self._database["spakky_outbox_inbox"].find({}, sort=[("consumer", 1), ("message_id", 1)])
        return [(d["consumer"], d["message_id"], isinstance(d.get("lease_owner"), str)) for d in found]

    @override
    def bookings(self, order_id: str, *, sync: bool = False) -> list[int]:
        found = self._database["sync_bookings" if sync else "bookings"].find({"order_id": order_id})
        return sorted(d["run"] for d in found)


@pytest.fixture
def inbox_view(mongodb_env: MongoClient[dict[str, Any]]) -> InboxView:  # noqa: F811 - the fixture
    """The raw documents of the test's database."""
    return _MongoInboxView(mongodb_env)


class TestMongoInboxApplication(InboxApplicationRules):
    """The inbox application rules on MongoDB."""

    inbox_types = (AsyncMongoInboxStorage, MongoInboxStorage)
