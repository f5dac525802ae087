"""Contribution to spakky-outbox: registers the MongoDB storages when selected."""

from spakky.core.application.application import SpakkyApplication
from spakky.outbox.registry import register_storage
from spakky.plugins.outbox_mongodb.config import STORAGE_NAME
from spakky.plugins.outbox_mongodb.inbox import (
    AsyncMongoInboxStorage,
    MongoInboxStorage,
)
from spakky.plugins.outbox_mongodb.storage import (
    AsyncMongoOutboxStorage,
    MongoOutboxStorage,
)
from spakky.plugins.outbox_mongodb.transaction import (
    AsyncMongoTransaction,
    MongoTransaction,
)


def initialize(app: SpakkyApplication) -> None:
    """Register the MongoDB storages, inboxes and transactions when ``mongodb`` is selected.

    The MongoDB transactions are bound as the application's transactions
    then, so ``@Transactional()`` opens the session that business writes and
    ``save`` share.

    Args:
        app: The Spakky application instance.
    """
    register_storage(
        app,
        STORAGE_NAME,
        MongoOutboxStorage,
        AsyncMongoOutboxStorage,
        transactions=(MongoTransaction, AsyncMongoTransaction),
        inboxes=(MongoInboxStorage, AsyncMongoInboxStorage),
    )
