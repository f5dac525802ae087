"""Redis outbox storages: hashes, sorted sets and Lua scripts under one hash tag.

``save`` queues a script on the pipeline of the `@Transactional()` use case,
so the message and the business writes are executed by one MULTI/EXEC. The
relay side (claims, renewals, acknowledgements, retries, administration) runs
single scripts, each atomic on the server and costing O(batch · log n). A
claim is a lease timed by Redis ``TIME`` and fenced by the storage instance's
owner token: an instance whose claim lapsed and was swept or taken over can no
longer settle or renew it.

The async storage is written once (`spakky.plugins.outbox_redis.async_storage`);
the sync one (`spakky.plugins.outbox_redis.sync_storage`) is generated from it.
"""

from spakky.outbox.common.config import redact_url
from spakky.plugins.outbox_redis.async_storage import AsyncRedisOutboxStorage
from spakky.plugins.outbox_redis.storage_base import STORAGE_BACKEND
from spakky.plugins.outbox_redis.sync_storage import RedisOutboxStorage

__all__ = ["STORAGE_BACKEND", "AsyncRedisOutboxStorage", "RedisOutboxStorage", "redact_url"]
