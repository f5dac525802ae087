"""Spakky transactions over a Redis MULTI/EXEC pipeline bound to the current context.

A `@Transactional()` use case opens a pipeline; business code queues its
commands on it through `current_async_pipeline` / `current_pipeline`, the
outbox ``save`` queues its script on the same pipeline, and commit sends them
all in one MULTI/EXEC. Rollback discards the queue: nothing reaches Redis.

Commands queued on the pipeline return the pipeline, not a result: reads
inside the transaction see nothing queued yet (Redis semantics). On a Redis
Cluster every key the transaction writes must be in the outbox's slot (share
its hash tag); the cluster pipeline refuses any other key when it is queued,
with `CrossSlotWriteError`, so nothing is written. Keys are found from the
server's command table (loaded by the cluster client); the synchronous
pipeline asks the server for commands with movable keys, which the asyncio one
refuses (`UncheckedClusterCommandError`).

The async transaction is written once
(`spakky.plugins.outbox_redis.async_transaction`); the sync one is generated
from it. The pipelines both use live in `spakky.plugins.outbox_redis.pipelines`.
"""

from spakky.plugins.outbox_redis.async_transaction import AsyncRedisTransaction
from spakky.plugins.outbox_redis.pipelines import (
    AsyncPipeline,
    Pipeline,
    command_keys,
    current_async_pipeline,
    current_pipeline,
)
from spakky.plugins.outbox_redis.sync_transaction import RedisTransaction

__all__ = [
    "AsyncPipeline",
    "AsyncRedisTransaction",
    "Pipeline",
    "RedisTransaction",
    "command_keys",
    "current_async_pipeline",
    "current_pipeline",
]
