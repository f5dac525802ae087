"""MongoDB inboxes, sync and asyncio: idempotent consumers on the outbox's database.

The async inbox is written once (`spakky.plugins.outbox_mongodb.async_inbox`);
the sync one (`spakky.plugins.outbox_mongodb.sync_inbox`) is generated from it.
Documents and indexes: `spakky.plugins.outbox_mongodb.inbox_documents`.
"""

from spakky.plugins.outbox_mongodb.async_inbox import AsyncMongoInboxStorage
from spakky.plugins.outbox_mongodb.sync_inbox import MongoInboxStorage

__all__ = ["AsyncMongoInboxStorage", "MongoInboxStorage"]
