"""Redis storage for spakky-outbox.

Messages are saved in the MULTI/EXEC of the business transaction
(`AsyncRedisTransaction` / `RedisTransaction`); business code queues its own
writes on `current_async_pipeline()` / `current_pipeline()`.
"""

from spakky.core.application.plugin import Plugin

PLUGIN_NAME = Plugin(name="spakky-outbox-redis")
"""Plugin identifier for the Redis outbox storage."""
