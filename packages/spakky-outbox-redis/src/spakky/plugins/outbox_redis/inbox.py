"""Redis inboxes: the records of idempotent handlers beside the outbox, in its slot.

``record`` WATCHes the record's key and reads it before the handler runs (a
duplicate is skipped there); a new record is queued in the MULTI of the
handler's `@Transactional()` with its business writes, and a racing
transaction that committed the same record first makes the EXEC fail
(`spakky.outbox.inbox.error.InboxConflictError`, nothing written). Lease mode
runs one script per step. Records expire after the dedup window on their own
(``PX``); see `spakky.plugins.outbox_redis.inbox_base` for the keys.

The async inbox is written once (`spakky.plugins.outbox_redis.async_inbox`);
the sync one (`spakky.plugins.outbox_redis.sync_inbox`) is generated from it.
"""

from spakky.plugins.outbox_redis.async_inbox import AsyncRedisInboxStorage
from spakky.plugins.outbox_redis.sync_inbox import RedisInboxStorage

__all__ = ["AsyncRedisInboxStorage", "RedisInboxStorage"]
