"""MongoDB outbox storages, sync and asyncio, with every optional capability.

``save`` inserts the message with the session of the ``@Transactional()`` use
case, so it commits or aborts with the business documents. The relay side
runs the plans of `spakky.plugins.outbox_mongodb.operations` outside any
transaction: claims are leases on the server clock, fenced by the storage
instance's owner token, and cost O(batch) whatever the backlog.

The async storage is written once (`spakky.plugins.outbox_mongodb.async_storage`);
the sync one (`spakky.plugins.outbox_mongodb.sync_storage`) is generated from it.
"""

from spakky.plugins.outbox_mongodb.async_storage import AsyncMongoOutboxStorage
from spakky.plugins.outbox_mongodb.sync_storage import MongoOutboxStorage

__all__ = ["AsyncMongoOutboxStorage", "MongoOutboxStorage"]
